"""The plumbing NvspGuest and RndisGuest share, sans-IO.

What lives here: `Machine`, the base of both guest machines — the event queue behind
`next_event()`, the requests awaiting a VMBus completion (`Pending`, keyed by trans_id, each with
its deadline), `expects()` for routing completions, `tick()` for late replies, transaction-id
allocation within the machine's id range (proto/limits.py), and the ERROR rule: any error puts
the machine in ERROR for good, and the one internal error, `Reject` (the host broke a rule or
refused), becomes HostProtocolError / HostRefusedError at the single entry point `_run`.

What must not live here: anything of NVSP or RNDIS themselves (proto/nvsp.py, proto/rndis.py),
how the two are composed (proto/netvsc.py), rings, fds, clocks.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from hvuio.errors import (
    HostProtocolError, HostRefusedError, HostTimeoutError, HvuioError, LocalProtocolError,
)
from hvuio.proto import limits
from hvuio.proto.events import NEED_DATA, Event, NeedData, Outbound

__all__ = ["Machine", "Pending", "Reject"]


class Reject(Exception):
    """The one internal error: the host broke a rule (or refused, when `refused`)."""

    def __init__(self, message: str, *, refused: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.refused = refused


@dataclass(slots=True)
class Pending:
    what: str  # for messages: "NVSP INIT (version 0x60001)"
    tag: int  # machine-specific: the request type or the RNDIS message kind
    deadline: float | None = None  # set by the first tick() after sending


class Machine:
    """Shared plumbing of NvspGuest and RndisGuest (see the module docstring)."""

    _name = "machine"

    def __init__(self, *, timeout: float, xid_base: int, first_xid: int | None = None) -> None:
        if not (1 <= xid_base and xid_base + limits.XID_SPAN <= 1 << 64):
            raise LocalProtocolError(f"{self._name}: xid_base {xid_base:#x} out of range")
        if first_xid is not None and not xid_base <= first_xid < xid_base + limits.XID_SPAN:
            raise LocalProtocolError(f"{self._name}: first_xid {first_xid:#x} outside its id range")
        self._events: deque[Event] = deque()
        self._error: HvuioError | None = None
        self._timeout = timeout
        self._xid_base = xid_base
        self._next_xid = xid_base if first_xid is None else first_xid
        self._awaiting: dict[int, Pending] = {}  # VMBus trans_id -> request awaiting completion

    # -- public, shared ------------------------------------------------------------------------

    def next_event(self) -> Event | NeedData:
        """The oldest queued event, or NEED_DATA."""
        self._check_alive()
        return self._events.popleft() if self._events else NEED_DATA

    def expects(self, trans_id: int) -> bool:
        """Whether a completion with `trans_id` belongs to this machine (NetvscGuest routing)."""
        return trans_id in self._awaiting

    def tick(self, now: float) -> list[Outbound]:
        """Advance time to `now` (seconds, monotonic); raise HostTimeoutError for a late reply.

        A request's clock starts at the first tick() after it was sent, so a reply is never
        declared late before `timeout` seconds of caller time have passed. Returns the messages
        time makes due (none today: neither machine sends anything on a timer).
        """
        self._check_alive()
        for pending in self._all_pending():
            if pending.deadline is None:
                pending.deadline = now + self._timeout
            elif now >= pending.deadline:
                err = HostTimeoutError(
                    f"{self._name}: no reply to {pending.what} within {self._timeout:g} s")
                self._enter_error(err)
                raise err
        return []

    @property
    def next_xid(self) -> int:
        """The transaction id the next message will carry (a successor machine starts there, so
        a late completion for this one's sends is never mistaken for its own)."""
        return self._next_xid

    @property
    def error(self) -> HvuioError | None:
        """The error that put the machine in ERROR, if any."""
        return self._error

    # -- for subclasses --------------------------------------------------------------------------

    def _all_pending(self) -> list[Pending]:
        return list(self._awaiting.values())

    def _check_alive(self) -> None:
        if self._error is not None:
            raise LocalProtocolError(
                f"{self._name} is in ERROR (after: {self._error.message}); it accepts no more calls")

    def _enter_error(self, err: HvuioError) -> None:
        if self._error is None:
            self._error = err
        self._set_error_state()

    def _set_error_state(self) -> None:
        raise NotImplementedError

    def _xid(self) -> int:
        xid = self._next_xid
        self._next_xid += 1
        if self._next_xid >= self._xid_base + limits.XID_SPAN:
            self._next_xid = self._xid_base
        return xid

    def _run(self, fn: Callable[[], list[Outbound]]) -> list[Outbound]:
        """Call `fn`; convert the internal error; any error puts the machine in ERROR."""
        self._check_alive()
        try:
            return fn()
        except Reject as r:
            err: HvuioError = (HostRefusedError(r.message) if r.refused
                               else HostProtocolError(r.message))
            self._enter_error(err)
            raise err from None
        except HvuioError as e:
            self._enter_error(e)
            raise
