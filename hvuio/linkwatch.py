"""What the NIC does with the host's link indications, as Linux's netvsc does: a pure policy.

What lives here: `LinkWatch`, which takes the RNDIS link events of a NIC that is up (media
connect / disconnect, network change) and the time, and returns what to do: `Carrier(up)` for
the tap's carrier, `NotifyPeers()` to announce the NIC's addresses (a gratuitous ARP per IPv4
address, an unsolicited neighbour advertisement per IPv6 address). The rules are those of
torvalds/linux drivers/net/hyperv/netvsc_drv.c `netvsc_link_change` (VMBUS.md §4.25):

* media disconnect while the carrier is on: carrier off; media connect while it is off: carrier
  on. A media connect while the carrier is already on: notify the peers
  (`netdev_notify_peers`) — the host says the NIC may now be reached another way (a live
  migration, a switch change).
* network change while the carrier is on: carrier off now, and a media connect `LINKCHANGE_INT`
  (2 s, Linux's delay before it handles the next link event) later: carrier on, so DHCP clients
  renew. While the carrier is off it is ignored ("only makes sense if carrier is present").
* A media indication from the host while that reconnect is pending is taken at once and cancels
  it. Linux also spaces every link event 2 s apart (its reconfig work); hvuio applies connects and
  disconnects at once and delays only the reconnect after a network change.

What must not live here: I/O, clocks (callers pass `now`), the tap (hvuio/netdev/), the frames
that notify the peers (hvuio/netdev/peers.py), the protocol (proto/).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = ["Carrier", "LINKCHANGE_INT", "LinkAction", "LinkWatch", "NotifyPeers"]

#: Seconds between a network change's carrier off and its carrier on (Linux LINKCHANGE_INT, 2 * HZ).
LINKCHANGE_INT: Final = 2.0


@dataclass(frozen=True, slots=True)
class Carrier:
    """Set the tap's carrier."""

    up: bool


@dataclass(frozen=True, slots=True)
class NotifyPeers:
    """Announce the NIC's addresses to its neighbours."""


LinkAction = Carrier | NotifyPeers


class LinkWatch:
    """The carrier of one NIC and its pending reconnect (see module docstring)."""

    def __init__(self, up: bool) -> None:
        #: the carrier as this policy last set it (the link the bring-up query reported at first)
        self.carrier = up
        self._reconnect_at: float | None = None

    @property
    def reconnect_pending(self) -> bool:
        """A network change turned the carrier off and its reconnect has not happened yet."""
        return self._reconnect_at is not None

    def media(self, up: bool) -> list[LinkAction]:
        """A media connect (`up`) or disconnect indication from the host."""
        self._reconnect_at = None
        if up and self.carrier:
            return [NotifyPeers()]
        if up == self.carrier:
            return []
        self.carrier = up
        return [Carrier(up)]

    def network_change(self, now: float) -> list[LinkAction]:
        """RNDIS_STATUS_NETWORK_CHANGE: carrier off now, back on LINKCHANGE_INT later (see tick)."""
        if not self.carrier:
            return []
        self.carrier = False
        self._reconnect_at = now + LINKCHANGE_INT
        return [Carrier(False)]

    def tick(self, now: float) -> list[LinkAction]:
        """Time: the pending reconnect, once its moment has come."""
        if self._reconnect_at is None or now < self._reconnect_at:
            return []
        self._reconnect_at = None
        self.carrier = True
        return [Carrier(True)]
