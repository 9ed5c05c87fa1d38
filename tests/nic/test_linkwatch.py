"""hvuio.linkwatch: the carrier and peer notifications Linux's netvsc_link_change derives from the
host's link indications (VMBUS.md §4.25). Time is passed in; nothing sleeps."""

from __future__ import annotations

from hvuio.linkwatch import LINKCHANGE_INT, Carrier, LinkWatch, NotifyPeers


def test_linux_link_change_interval_is_two_seconds() -> None:
    assert LINKCHANGE_INT == 2.0   # netvsc_drv.c LINKCHANGE_INT (2 * HZ)


def test_media_changes_set_the_carrier_once() -> None:
    w = LinkWatch(True)
    assert w.media(False) == [Carrier(False)]
    assert w.media(False) == []
    assert w.media(True) == [Carrier(True)]


def test_repeated_media_connect_notifies_the_peers() -> None:
    w = LinkWatch(True)
    assert w.media(True) == [NotifyPeers()]
    assert w.media(True) == [NotifyPeers()] and w.carrier


def test_network_change_is_carrier_off_then_on_after_the_interval() -> None:
    w = LinkWatch(True)
    assert w.network_change(100.0) == [Carrier(False)] and w.reconnect_pending
    assert w.tick(100.0 + LINKCHANGE_INT - 0.001) == []
    assert w.tick(100.0 + LINKCHANGE_INT) == [Carrier(True)]
    assert not w.reconnect_pending and w.tick(200.0) == []


def test_network_change_without_carrier_is_ignored() -> None:
    w = LinkWatch(False)
    assert w.network_change(1.0) == [] and w.tick(10.0) == []


def test_media_indication_cancels_the_pending_reconnect() -> None:
    w = LinkWatch(True)
    w.network_change(0.0)
    assert w.media(False) == [] and not w.reconnect_pending   # already off: stays off
    assert w.tick(5.0) == [] and not w.carrier
    w = LinkWatch(True)
    w.network_change(0.0)
    assert w.media(True) == [Carrier(True)] and w.tick(5.0) == []
