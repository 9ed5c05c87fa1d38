"""The NIC's link side: what the Nic does with the host's link events.

What lives here: `NicLink`, which a Nic (hvuio/nic.py) owns and feeds with the link events of its
protocol machines and with a tick:

  * the link status: the bring-up's media query (OID_GEN_MEDIA_CONNECT_STATUS), then media
    connect / disconnect indications; and network changes (RNDIS_STATUS_NETWORK_CHANGE). The link
    goes into the open NIC's NicInfo (`link_up`); hvuio/linkwatch.py's `LinkWatch`, started by the
    bring-up's query with the carrier as the link is, says what the carrier and the neighbours
    need, and NicLink does it through `on_link(up)` (the tap's carrier) and `on_notify_peers()`
    (announce the NIC's addresses), which the engine sets while its tap runs.
  * the bring-up's rule: a link indication before the bring-up is done is counted and left out
    (VMBUS.md §4.25); the bring-up's media query, answered after it, says what the link is.
  * the link speed: the host's RNDIS_STATUS_LINK_SPEED_CHANGE replaces the bring-up's
    OID_GEN_LINK_SPEED in NicInfo (`link_speed_bps`), as Linux netvsc_drv.c netvsc_link_change
    keeps the indicated speed.
  * host indications the machines dropped for values outside the protocol: counted and logged.

Its counters (`link_changes`, `network_changes`, `peer_notifications`, `link_speed_changes`,
`indications_dropped`, `link_indications_ignored`) last as long as the Nic, across opens; the Nic
puts them in its `counter_snapshot()`. NicLink holds nothing of the Nic: with each event the Nic
hands it the open NIC's NicInfo and whether the bring-up is done, so the Nic is in no reference
cycle (one in a cycle is freed by the garbage collector with its mapped buffers in an order that
crashes). Everything runs in the thread that owns the rings.

What must not live here: the rules of carrier and notification (linkwatch.py), the tap and the
frames that notify the peers (hvuio/netdev/), the protocol machines (proto/), rings.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from hvuio.linkwatch import Carrier, LinkAction, LinkWatch
from hvuio.proto import events as ev

if TYPE_CHECKING:
    from hvuio.nicinfo import NicInfo

log = logging.getLogger(__name__)

LinkEvent = ev.LinkStatus | ev.NetworkChange | ev.LinkSpeed | ev.IndicationDropped

#: The counters of the link side (names of the status record).
COUNTERS = ("link_changes", "network_changes", "peer_notifications", "link_speed_changes",
            "indications_dropped", "link_indications_ignored")


class NicLink:
    """One NIC's link side (see the module docstring)."""

    def __init__(self, *, clock: Callable[[], float]) -> None:
        #: the tap's carrier follows these calls (hvuio/linkwatch.py: link changes, network change)
        self.on_link: Callable[[bool], None] | None = None
        #: announce the NIC's addresses (a repeated media connect, hvuio/linkwatch.py)
        self.on_notify_peers: Callable[[], None] | None = None
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self._clock = clock
        self._watch: LinkWatch | None = None  # from the bring-up's link query on

    def reset(self) -> None:
        """A new open: the carrier waits for that bring-up's link query."""
        self._watch = None

    def event(self, e: LinkEvent, info: NicInfo, *, ready: bool) -> None:
        """One link event of the protocol machines; `info` is the open NIC's, `ready`: the
        bring-up is done."""
        if isinstance(e, ev.LinkStatus):
            self._status(e, info, ready)
        elif isinstance(e, ev.NetworkChange):
            self._network_change(ready)
        elif isinstance(e, ev.LinkSpeed):
            self._speed(e, info)
        else:
            self.counters["indications_dropped"] += 1
            log.warning("dropped a host indication (status %#x): %s", e.status, e.reason)

    def tick(self, now: float) -> None:
        """Time: the reconnect a network change left pending, once its moment has come."""
        if self._watch is not None:
            self._do(self._watch.tick(now))

    def _status(self, e: ev.LinkStatus, info: NicInfo, ready: bool) -> None:
        if e.indicated and self._early("media connect" if e.up else "media disconnect", ready):
            return
        changed = info.link_up is not None and info.link_up != e.up
        info.link_up = e.up
        if changed:
            self.counters["link_changes"] += 1
        if self._watch is None:  # the bring-up's query: the carrier starts as the link is
            self._watch = LinkWatch(e.up)
            self._do([Carrier(e.up)])
        else:
            self._do(self._watch.media(e.up))

    def _network_change(self, ready: bool) -> None:
        # VMBUS.md §4.25: carrier off, and on again LINKCHANGE_INT later (linkwatch.py)
        if self._early("network change", ready):
            return
        self.counters["network_changes"] += 1
        if self._watch is not None:
            self._do(self._watch.network_change(self._clock()))

    def _early(self, what: str, ready: bool) -> bool:
        """A link indication during bring-up is counted and left out (VMBUS.md §4.25): the
        bring-up's media query, answered after it, says what the link is."""
        if ready:
            return False
        self.counters["link_indications_ignored"] += 1
        log.info("ignored a %s indication from the host during bring-up; the link query says what the link is", what)
        return True

    def _speed(self, e: ev.LinkSpeed, info: NicInfo) -> None:
        # the host's RNDIS_STATUS_LINK_SPEED_CHANGE replaces the bring-up's OID_GEN_LINK_SPEED
        # (Linux netvsc_drv.c netvsc_link_change keeps the indicated speed)
        if e.indicated and info.link_speed_bps != e.bits_per_second:
            self.counters["link_speed_changes"] += 1
            log.info("the host indicated a link speed of %d bit/s (was %s)", e.bits_per_second,
                     "unknown" if info.link_speed_bps is None else f"{info.link_speed_bps} bit/s")
        info.link_speed_bps = e.bits_per_second

    def _do(self, actions: list[LinkAction]) -> None:
        """Perform what LinkWatch decided, in order."""
        for action in actions:
            if isinstance(action, Carrier):
                if self.on_link is not None:
                    self.on_link(action.up)
            else:
                self.counters["peer_notifications"] += 1
                if self.on_notify_peers is not None:
                    self.on_notify_peers()
