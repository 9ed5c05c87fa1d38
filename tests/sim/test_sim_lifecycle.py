"""The NIC's life cycle as the emulated host drives it: rescind and re-offer, a silently stopped
channel, accelerated networking (VF association, data-path switch, VF removal).

Guest side: RingGuest (tests/support/ring_guest.py) over the emulator's real shared memory; the
network is FakeNetwork (tests/support/fakenet.py). Waits are bounded polls that fail with a
message; nothing is timed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from hvuio.errors import RescindedError, UsageError
from hvuio.sim.net import HostNetwork
from hvuio.sim.vsp import fastpath
from hvuio.sim.vsp.control import ControlServer, request
from hvuio.sim.vsp.host import SimEnvironment

from support.fakenet import FakeNetwork
from support.namespaces import NetnsFactory
from support.ring_guest import RingGuest, eth_frame
from support.waiting import wait_until


@pytest.fixture
def net() -> Iterator[FakeNetwork]:
    n = FakeNetwork()
    yield n
    n.close()


def _traffic(g: RingGuest, net: FakeNetwork, tag: bytes) -> None:
    """One frame each way through the synthetic path."""
    frame = eth_frame(tag)
    net.inject(frame)
    g.pump(lambda: frame in g.frames, f"the frame {tag!r} from the network")
    out = eth_frame(tag + b"-out")
    tid = g.send_frame(out)
    g.pump(lambda: tid in g.tx_done, "the send completion")
    wait_until(lambda: out in net.sent, "the guest's frame on the network")


# -- rescind and re-offer ------------------------------------------------------------------------


def test_reoffer_after_rescind_is_a_new_device_with_the_same_identity(tmp_path: Path, net: FakeNetwork) -> None:
    with SimEnvironment(tmp_path, "6.17", nics=1, network=net) as env:
        nic = env.nics[0]
        old_relid, mac = nic.relid, nic.mac
        with pytest.raises(UsageError, match="only a rescinded NIC can be re-offered"):
            env.host.reoffer("hveth0")
        g = RingGuest(tmp_path)
        try:
            g.bring_up()
            _traffic(g, net, b"before")
            env.host.rescind("hveth0")
            with pytest.raises(RescindedError):
                for _ in range(200):
                    g.h.interrupt.wait(0.05)
        finally:
            g.close()
        devdir = tmp_path / "sys/bus/vmbus/devices" / nic.guid
        assert not devdir.exists()
        with pytest.raises(UsageError, match="no rescinded simulated NIC"):
            env.host.reoffer("hveth7")

        new = env.host.reoffer(nic.guid)
        assert new is not nic and new.guid == nic.guid and new.mac == mac
        assert new.relid != old_relid
        assert devdir.is_dir() and (devdir / "channels" / str(new.relid)).is_dir()
        assert not (devdir / "channels" / str(old_relid)).exists()
        assert os.path.basename(os.readlink(devdir / "driver")) == "hv_netvsc"  # as any fresh offer
        assert (tmp_path / "sys/class/net/hveth0/address").read_text().strip() == mac
        assert (devdir / "driver_override").read_text().strip() in ("", "(null)")  # the old override is gone

        g = RingGuest(tmp_path)  # the guest binds the new device again
        try:
            assert g.device.relid == new.relid
            g.bring_up()
            _traffic(g, net, b"after")
            assert env.host.fault(new) is None
        finally:
            g.close()


def test_reoffer_through_the_control_socket(tmp_path: Path) -> None:
    with SimEnvironment(tmp_path, "6.17", nics=1) as env:
        nic = env.nics[0]
        server = ControlServer(env.host, tmp_path)
        try:
            assert request(tmp_path, {"cmd": "rescind", "device": "hveth0"}) == {"ok": True}
            reply = request(tmp_path, {"cmd": "reoffer", "device": "hveth0"})
            assert reply["guid"] == nic.guid and reply["mac"] == nic.mac and reply["relid"] != nic.relid
            assert env.kernel.device("hveth0").relid == reply["relid"]
            with pytest.raises(UsageError, match="only a rescinded NIC"):
                request(tmp_path, {"cmd": "reoffer", "device": nic.guid})
        finally:
            server.close()


def test_no_reoffer_reaches_a_kernel_that_oopsed_on_the_rescind(tmp_path: Path) -> None:
    """Before the 2024 rescind fixes the opened device is never unregistered (VMBUS.md §1.11)."""
    with SimEnvironment(tmp_path, "4.19", nics=1) as env:
        g = RingGuest(tmp_path)
        try:
            env.host.rescind("hveth0")
            with pytest.raises(UsageError, match="never removed"):
                env.host.reoffer("hveth0")
        finally:
            g.close()


# -- a channel the host stops serving, silently ----------------------------------------------------


def test_stall_stops_the_host_silently_and_a_reopen_starts_afresh(tmp_path: Path, net: FakeNetwork) -> None:
    with SimEnvironment(tmp_path, "6.17", nics=1, network=net) as env:
        nic = env.nics[0]
        counters = env.host.counters(nic)
        g = RingGuest(tmp_path)
        try:
            g.bring_up()
            _traffic(g, net, b"served")
            env.host.stall("hveth0")
            wait_until(lambda: env.host.fault(nic) is not None, "the stall to take effect")
            assert "stalled on demand" in str(env.host.fault(nic))
            seen, from_guest, to_guest = counters.guest_signals, counters.packets_from_guest, counters.packets_to_guest
            read_index = bytes(g.h.rings[4:8])
            tid = g.send_frame(eth_frame(b"unserved"))
            g.signal()  # whatever the outbound mask says: the host must see a wake-up
            wait_until(lambda: counters.guest_signals > seen, "the host to take the guest's signal")
            # the host woke up and did nothing: the packet is still unread, nothing came back
            assert bytes(g.h.rings[4:8]) == read_index
            assert counters.packets_from_guest == from_guest and counters.packets_to_guest == to_guest
            assert not g.rx.read_batch(64).packets and tid not in g.tx_done
            assert env.host.status()[nic.guid]["open"] is True  # the guest sees no close, no rescind
            assert nic.guid in env.kernel.devices and (tmp_path / "sys/bus/vmbus/devices" / nic.guid).is_dir()
        finally:
            g.close()
        g = RingGuest(tmp_path)  # re-init: close and re-open the device
        try:
            g.bring_up()
            _traffic(g, net, b"fresh")
            assert env.host.fault(nic) is None and counters.opens == 2
        finally:
            g.close()


def test_stall_needs_an_open_device(tmp_path: Path) -> None:
    with SimEnvironment(tmp_path, "6.17", nics=1) as env:
        server = ControlServer(env.host, tmp_path)
        try:
            with pytest.raises(UsageError, match="is not open"):
                request(tmp_path, {"cmd": "stall", "device": "hveth0"})
            with pytest.raises(UsageError, match="no simulated device"):
                env.host.stall("hveth9")
        finally:
            server.close()


def test_stall_ends_the_c_pump_too(tmp_path: Path, netns_factory: NetnsFactory) -> None:
    """Behind a tap the primary's data path is the C pump's: a stall ends it (the posted fault
    reaches it like any command) and the re-opened device gets a fresh host side, pump included."""
    if not fastpath.available():
        pytest.skip("hvuio.sim._simhost not built")
    net = HostNetwork.create(ifname=netns_factory.ifname("hn"))
    netns_factory.namespaces.append(net.netns)
    netns_factory.defer("close host network", net.close)
    with SimEnvironment(tmp_path, "6.17", nics=1, network=net) as env:
        nic = env.nics[0]
        counters = env.host.counters(nic)
        g = RingGuest(tmp_path)
        try:
            g.bring_up()
            wait_until(lambda: counters.fastpath == 1, "the C pump to take the data path")
            env.host.stall(nic)
            wait_until(lambda: env.host.fault(nic) is not None and counters.fastpath == 0, "the pump to end")
            assert env.host.status()[nic.guid]["open"] is True
        finally:
            g.close()
        g = RingGuest(tmp_path)
        try:
            g.bring_up()
            wait_until(lambda: counters.fastpath == 1, "a fresh pump after the re-open")
            assert env.host.fault(nic) is None
        finally:
            g.close()
