"""The host's control messages that ask nothing of the NIC: counted and logged, never answered.

What lives here: `NicNotices`, which a Nic (hvuio/nic.py) owns and feeds with the events of its
protocol machines that need no action beyond a counter and a log line:

  * a KEEPALIVE request from the host: dropped unanswered and counted (`keepalives_dropped`), one
    warning (VMBUS.md §4 item 21: no real host sends one, and answering would be fatal to
    OpenVMM);
  * a completion that matches no request of ours: dropped and counted (`unknown_completions`,
    VMBUS.md §4.15);
  * a status indication or indirection table the NIC does not act on: counted (`indications`);
  * an RNDIS request the host failed: counted (`requests_failed`), with a warning saying what the
    NIC runs without when it was the offloads or the RSS parameters;
  * send indirection table entries naming channels the NIC does not use: the machines reduce
    them modulo the queues in use, as Linux takes any entry and reduces it at queue choice
    (netvsc_select_queue); counted (`send_table_fixed`);
  * the host failing GPA-direct control messages: the control path goes back to send sections
    (the machines do that), NicInfo's `tx_path` says so and it is counted (`control_fallbacks`).

Its counters last as long as the Nic, across opens; the Nic puts them in its `counters`. It
holds nothing of the Nic (the open NIC's NicInfo comes with the event that needs it).

What must not live here: events that ask for an action (the Nic, its link and VF sides:
hvuio/niclink.py, hvuio/nicvf.py), what the bring-up negotiated (hvuio/nicinfo.py), the
protocol machines (proto/).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from hvuio.proto import events as ev
from hvuio.wire import rndis as wr

if TYPE_CHECKING:
    from hvuio.nicinfo import NicInfo

log = logging.getLogger(__name__)

Notice = (ev.KeepaliveDropped | ev.CompletionDropped | ev.StatusIndication | ev.IndirectionTable
          | ev.RequestFailed | ev.SendTableFixed | ev.ControlFallback)

#: The counters of the notices (names of the status record).
COUNTERS = ("keepalives_dropped", "indications", "requests_failed", "unknown_completions", "control_fallbacks",
            "send_table_fixed")


class NicNotices:
    """One NIC's count of the host's notices (see the module docstring)."""

    def __init__(self) -> None:
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)

    def event(self, e: Notice, info: NicInfo) -> None:
        """One notice of the protocol machines; `info` is the open NIC's."""
        counters = self.counters
        if isinstance(e, ev.KeepaliveDropped):
            counters["keepalives_dropped"] += 1
            if counters["keepalives_dropped"] == 1:
                log.warning("dropped a KEEPALIVE request from the host (request id %#x) unanswered, as Linux "
                            "does; further ones are only counted (keepalives_dropped)", e.request_id)
        elif isinstance(e, ev.CompletionDropped):
            counters["unknown_completions"] += 1
            log.warning("dropped a completion with trans_id %#x: no request of ours is waiting for it",
                        e.trans_id)
        elif isinstance(e, (ev.StatusIndication, ev.IndirectionTable)):
            counters["indications"] += 1
            log.debug("host indication: %r", e)
        elif isinstance(e, ev.RequestFailed):
            counters["requests_failed"] += 1
            self._request_failed(e)
        elif isinstance(e, ev.SendTableFixed):
            counters["send_table_fixed"] += 1
            log.warning("the host's send indirection table names channel(s) %s, but %d are in use; "
                        "those entries were reduced modulo %d", sorted(set(e.bad)), e.queues, e.queues)
        else:
            info.tx_path = f"send buffer ({e.reason})"
            counters["control_fallbacks"] += 1
            log.warning("GPA-direct control messages: %s; sending the RNDIS initialize again in a send section, "
                        "and using the send buffer only", e.reason)

    @staticmethod
    def _request_failed(e: ev.RequestFailed) -> None:
        if e.oid in (wr.Oid.TCP_OFFLOAD_PARAMETERS, wr.Oid.TCP_OFFLOAD_HARDWARE_CAPABILITIES):
            log.warning("host refused %s (status %#x): running without offloads",
                        wr.Oid(e.oid).name, e.status)
        elif e.oid == wr.Oid.GEN_RECEIVE_SCALE_PARAMETERS:
            log.warning("host refused the RSS parameters (status %#x): every received frame arrives on the "
                        "primary channel", e.status)
        else:
            log.info("RNDIS request for OID %#x failed with status %#x", e.oid, e.status)
