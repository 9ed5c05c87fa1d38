"""States and transition tables of the NVSP and RNDIS guest machines (the single source).

What lives here: the state enums, the input enums that move them, one dict per machine mapping
(state, input) -> next state, and `advance()`, which looks a move up and raises
LocalProtocolError when it is not in the table. Special rules, in code here and nowhere else:

* every state except the final ones may go to ERROR (any error, host's or ours); ERROR and the
  final states (REVOKED, HALTED) accept nothing further;
* messages the host may send at any time after start (NVSP VF association and indirection
  table, RNDIS indications and keepalives) do not change state and are not in the tables.

scripts/state_diagram.py renders these tables. What must not live here: parsing, I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import TypeVar

from hvuio.errors import LocalProtocolError

__all__ = [
    "NvspState", "NvspInput", "NVSP_TRANSITIONS", "RndisState", "RndisInput",
    "RNDIS_TRANSITIONS", "advance", "FINAL_STATES",
]


class NvspState(Enum):
    IDLE = "idle"
    INIT_WAIT = "init_wait"  # INIT sent, waiting for INIT_COMPLETE
    RECV_BUF_WAIT = "recv_buf_wait"
    SEND_BUF_WAIT = "send_buf_wait"
    READY = "ready"
    SUBCHANNEL_WAIT = "subchannel_wait"
    DATAPATH_WAIT = "datapath_wait"
    REVOKED = "revoked"  # buffers revoked; the caller closes the channel
    ERROR = "error"


class NvspInput(Enum):
    START = "start"
    VERSION_REFUSED = "version_refused"  # another version to try
    VERSION_ACCEPTED = "version_accepted"
    RECV_BUF_CONNECTED = "recv_buf_connected"
    SEND_BUF_CONNECTED = "send_buf_connected"
    REQUEST_SUBCHANNELS = "request_subchannels"
    SUBCHANNELS_GRANTED = "subchannels_granted"
    SWITCH_DATAPATH = "switch_datapath"
    DATAPATH_SWITCHED = "datapath_switched"
    STOP = "stop"


_NS, _NI = NvspState, NvspInput

NVSP_TRANSITIONS: Mapping[tuple[NvspState, NvspInput], NvspState] = {
    (_NS.IDLE, _NI.START): _NS.INIT_WAIT,
    (_NS.INIT_WAIT, _NI.VERSION_REFUSED): _NS.INIT_WAIT,
    (_NS.INIT_WAIT, _NI.VERSION_ACCEPTED): _NS.RECV_BUF_WAIT,
    (_NS.RECV_BUF_WAIT, _NI.RECV_BUF_CONNECTED): _NS.SEND_BUF_WAIT,
    (_NS.SEND_BUF_WAIT, _NI.SEND_BUF_CONNECTED): _NS.READY,
    (_NS.READY, _NI.REQUEST_SUBCHANNELS): _NS.SUBCHANNEL_WAIT,
    (_NS.SUBCHANNEL_WAIT, _NI.SUBCHANNELS_GRANTED): _NS.READY,
    (_NS.READY, _NI.SWITCH_DATAPATH): _NS.DATAPATH_WAIT,
    (_NS.DATAPATH_WAIT, _NI.DATAPATH_SWITCHED): _NS.READY,
    # Teardown is allowed from every live state: revoke what was connected, then close.
    (_NS.INIT_WAIT, _NI.STOP): _NS.REVOKED,
    (_NS.RECV_BUF_WAIT, _NI.STOP): _NS.REVOKED,
    (_NS.SEND_BUF_WAIT, _NI.STOP): _NS.REVOKED,
    (_NS.READY, _NI.STOP): _NS.REVOKED,
    (_NS.SUBCHANNEL_WAIT, _NI.STOP): _NS.REVOKED,
    (_NS.DATAPATH_WAIT, _NI.STOP): _NS.REVOKED,
}


class RndisState(Enum):
    IDLE = "idle"
    INIT_WAIT = "init_wait"
    CONFIGURING = "configuring"  # running the bring-up queries and sets, one at a time
    READY = "ready"
    HALTED = "halted"
    ERROR = "error"


class RndisInput(Enum):
    START = "start"
    INIT_COMPLETED = "init_completed"
    STEP_COMPLETED = "step_completed"  # one bring-up query/set answered, more to do
    CONFIGURED = "configured"  # last bring-up step answered
    REQUEST = "request"  # caller's query/set while READY
    REPLY = "reply"  # reply to a caller's query/set
    HALT = "halt"


_RS, _RI = RndisState, RndisInput

RNDIS_TRANSITIONS: Mapping[tuple[RndisState, RndisInput], RndisState] = {
    (_RS.IDLE, _RI.START): _RS.INIT_WAIT,
    (_RS.INIT_WAIT, _RI.INIT_COMPLETED): _RS.CONFIGURING,
    (_RS.CONFIGURING, _RI.STEP_COMPLETED): _RS.CONFIGURING,
    (_RS.CONFIGURING, _RI.CONFIGURED): _RS.READY,
    (_RS.READY, _RI.REQUEST): _RS.READY,
    (_RS.READY, _RI.REPLY): _RS.READY,
    (_RS.INIT_WAIT, _RI.HALT): _RS.HALTED,
    (_RS.CONFIGURING, _RI.HALT): _RS.HALTED,
    (_RS.READY, _RI.HALT): _RS.HALTED,
}

FINAL_STATES = frozenset({NvspState.REVOKED, NvspState.ERROR, RndisState.HALTED, RndisState.ERROR})

_St = TypeVar("_St", bound=Enum)
_In = TypeVar("_In", bound=Enum)


def advance(table: Mapping[tuple[_St, _In], _St], state: _St, event: _In) -> _St:
    """The state after `event` in `state`; LocalProtocolError if the table has no such move."""
    try:
        return table[(state, event)]
    except KeyError:
        raise LocalProtocolError(
            f"{event.value!r} is not allowed in state {state.value!r}") from None
