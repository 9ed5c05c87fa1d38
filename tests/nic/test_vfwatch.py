"""hvuio.vfwatch: when a NIC's traffic moves to its accelerated-networking VF and back, and in which
order (netvsc spec B: Linux netvsc_vf_changed / netvsc_switch_datapath, OpenVMM's removal order).
Time is passed in; nothing sleeps, nothing touches a netdev."""

from __future__ import annotations

from hvuio.vfwatch import VF_WAIT, JoinVf, LeaveVf, LookForVf, SwitchDatapath, TxOnVf, VfWatch


def on_vf(w: VfWatch | None = None, serial: int = 1, name: str = "vf0") -> VfWatch:
    """A watch whose data path is the VF `name` (association, found, switch completed)."""
    w = w or VfWatch()
    assert w.association(True, serial, 0.0) == []
    assert w.tick(0.5) == [LookForVf(serial)]
    assert w.found(name) == [JoinVf(name), SwitchDatapath(True)]
    assert w.switched(True) == [TxOnVf(True)]
    assert w.path_vf and w.tx_vf and w.counters["vf_switches"] >= 1
    return w


def test_association_then_netdev_then_switch_then_tx_in_that_order() -> None:
    w = on_vf()
    assert w.status() == {"serial": 1, "netdev": "vf0", "data_path": "vf", "tx_on_vf": True}
    assert any("VF slot 1 added" in n for n in w.take_notes())


def test_no_switch_before_the_association_or_before_the_netdev() -> None:
    w = VfWatch()
    assert w.found("vf0") == [] and w.tick(1.0) == []                   # no association: nothing to look for
    assert w.association(True, 7, 2.0) == []                            # association: look, do not switch yet
    assert w.tick(2.1) == [LookForVf(7)] and w.switching is None and not w.path_vf


def test_association_zero_stops_tx_first_then_switches_back_then_leaves() -> None:
    w = on_vf()
    assert w.association(False, 0, 5.0) == [TxOnVf(False), SwitchDatapath(False)]
    assert w.vf == "vf0"                                                # left once the host completed the switch
    assert w.switched(False) == [LeaveVf("vf0")]
    assert w.idle and w.counters["vf_removals"] == 1 and w.status()["data_path"] == "synthetic"


def test_openvmm_removal_order_needs_no_switch_of_the_guest() -> None:
    # OpenVMM: type 129 {synthetic} first, then the association with allocated 0
    w = on_vf()
    assert w.host_switched(False) == [TxOnVf(False), LeaveVf("vf0")]
    assert w.association(False, 0, 5.0) == []
    assert w.idle and w.counters["vf_host_switches"] == 1 and w.counters["vf_removals"] == 1


def test_no_switch_back_to_the_vf_between_the_hosts_switch_and_a_new_association() -> None:
    w = on_vf()
    w.host_switched(False)
    assert w.tick(6.0) == [] and w.found("vf0") == []
    assert w.association(True, 1, 7.0) == []                            # the VF returns: look again
    assert w.tick(7.5) == [LookForVf(1)]
    assert w.found("vf0") == [JoinVf("vf0"), SwitchDatapath(True)]


def test_vf_removed_and_returned_twice() -> None:
    w = VfWatch()
    for k in (1, 2):
        on_vf(w)
        w.host_switched(False)
        w.association(False, 0, 10.0 * k)
        assert w.idle and w.counters["vf_removals"] == k
    assert w.counters["vf_switches"] == 2 and w.counters["vf_associations"] == 4


def test_netdev_gone_before_the_host_said_so() -> None:
    w = on_vf()
    assert w.gone(3.0) == [TxOnVf(False), LeaveVf("vf0", gone=True), SwitchDatapath(False)]
    assert w.counters["vf_netdev_lost"] == 1
    assert w.switched(False) == [] and not w.path_vf
    assert w.tick(3.5) == [LookForVf(1)]                                # still associated: it may come back
    assert w.found("vf1") == [JoinVf("vf1"), SwitchDatapath(True)]


def test_one_switch_at_a_time_and_what_is_wanted_meanwhile_follows() -> None:
    w = VfWatch()
    w.association(True, 1, 0.0)
    assert w.found("vf0") == [JoinVf("vf0"), SwitchDatapath(True)]
    assert w.association(False, 0, 1.0) == []                           # switch to VF still in flight
    assert w.switched(True) == [SwitchDatapath(False)]                  # then straight back
    assert w.switched(False) == [LeaveVf("vf0")] and w.idle


def test_host_switch_while_ours_to_the_vf_is_in_flight_wins() -> None:
    w = VfWatch()
    w.association(True, 1, 0.0)
    w.found("vf0")
    assert w.host_switched(False) == []
    assert w.switched(True) == [LeaveVf("vf0")] and not w.path_vf and not w.tx_vf


def test_hostile_host_switches_change_nothing() -> None:
    w = VfWatch()
    assert w.host_switched(False) == []                                 # no VF at all
    assert w.host_switched(True) == []                                  # the host cannot move the guest to a VF
    on_vf(w)
    assert w.host_switched(True) == [] and w.path_vf and w.tx_vf
    assert w.counters["vf_host_switches_ignored"] == 3 and w.counters["vf_host_switches"] == 0


def test_serial_matching_no_device_gives_up_after_the_bounded_wait() -> None:
    w = VfWatch()
    w.association(True, 0xDEADBEEF, 100.0)
    assert w.tick(100.0 + VF_WAIT - 0.1) == [LookForVf(0xDEADBEEF)]
    assert w.tick(100.0 + VF_WAIT) == [] and w.counters["vf_not_found"] == 1
    assert w.tick(1000.0) == [] and not w.path_vf and w.switching is None
    assert any("after 60 s" in n for n in w.take_notes())
    assert w.association(True, 0xDEADBEEF, 2000.0) == [] and w.tick(2000.0) == [LookForVf(0xDEADBEEF)]


def test_another_serial_replaces_the_joined_vf() -> None:
    w = on_vf(serial=1, name="vf0")
    assert w.association(True, 2, 9.0) == [TxOnVf(False), SwitchDatapath(False)]
    assert w.switched(False) == [LeaveVf("vf0")]
    assert w.tick(9.5) == [LookForVf(2)]
    assert w.found("vf1") == [JoinVf("vf1"), SwitchDatapath(True)]


def test_repeated_association_is_idempotent() -> None:
    w = on_vf()
    assert w.association(True, 1, 4.0) == [] and w.path_vf and w.tx_vf and w.tick(4.5) == []


def test_stop_goes_back_to_synthetic_in_order() -> None:
    w = on_vf()
    assert w.stop() == [TxOnVf(False), SwitchDatapath(False)]
    assert w.switched(False) == [LeaveVf("vf0")] and w.idle
    assert w.association(True, 1, 9.0) == [] and w.tick(9.5) == []      # nothing moves while stopping


def test_disabled_watch_only_counts() -> None:
    w = VfWatch(enabled=False)
    assert w.association(True, 1, 0.0) == [] and w.tick(1.0) == [] and w.host_switched(False) == []
    assert w.counters["vf_messages_ignored"] == 1 and w.counters["vf_associations"] == 0 and w.idle


def test_a_switch_that_cannot_be_sent_leaves_the_vf_until_a_new_association() -> None:
    w = VfWatch()
    w.association(True, 1, 0.0)
    assert w.found("vf0") == [JoinVf("vf0"), SwitchDatapath(True)]
    assert w.refused() == [LeaveVf("vf0")] and w.idle and w.tick(1.0) == []
    assert w.counters["vf_messages_ignored"] == 1
    assert w.association(True, 1, 2.0) == [] and w.tick(2.5) == [LookForVf(1)]
