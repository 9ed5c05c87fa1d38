"""The NIC's life cycle as the emulated host drives it: rescind and re-offer, a silently stopped
channel, accelerated networking (VF association, data-path switch, VF removal).

Guest side: RingGuest (tests/support/ring_guest.py) over the emulator's real shared memory; the
network is FakeNetwork (tests/support/fakenet.py). Waits are bounded polls that fail with a
message; nothing is timed.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from hvuio.errors import RescindedError, UsageError
from hvuio.netdev import netns
from hvuio.sim.kernel.profiles import VPCI_CLASS
from hvuio.sim.net import HostNetwork, VethVf, packet_socket_in
from hvuio.sim.vsp import fastpath
from hvuio.sim.vsp.control import ControlServer, request
from hvuio.sim.vsp.host import SimEnvironment
from hvuio.wire import nvsp as wn
from hvuio.wire import rndis as wr

from support.cli import run_main
from support.fakenet import FakeNetwork
from support.namespaces import NetnsFactory
from support.ring_guest import RingGuest, eth_frame
from support.waiting import WAIT, wait_until

OID_GEN_CURRENT_PACKET_FILTER = wr.Oid.GEN_CURRENT_PACKET_FILTER


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


def test_a_control_stall_leaves_control_requests_unanswered_and_serves_data(tmp_path: Path,
                                                                           net: FakeNetwork) -> None:
    with SimEnvironment(tmp_path, "6.17", nics=1, network=net) as env:
        nic = env.nics[0]
        g = RingGuest(tmp_path)
        server = ControlServer(env.host, tmp_path)
        try:
            g.bring_up()
            assert g.rndis_set(OID_GEN_CURRENT_PACKET_FILTER, struct.pack("<I", 0x9)) == 0  # answered before
            assert request(tmp_path, {"cmd": "stall", "device": "hveth0", "control": True}) == {"ok": True}
            with pytest.raises(UsageError, match="'control' as true or false"):
                request(tmp_path, {"cmd": "stall", "device": "hveth0", "control": 1})
            nvsp = env.host.nvsp(nic)
            assert nvsp is not None
            wait_until(lambda: nvsp.control_stalled, "the control stall to take effect")
            rid = 0x5E7FFFF
            g.raw_sets[rid] = None
            msg = struct.pack("<7I", 5, 32, rid, OID_GEN_CURRENT_PACKET_FILTER, 4, 20, 0) + struct.pack("<I", 0x9)
            tid = g.send_in_sections(msg, wn.RndisChannelType.CONTROL)
            g.pump(lambda: tid in g.tx_done, "the control message's send completion")
            assert g.tx_done[tid] == wn.NvspStatus.SUCCESS            # taken as a send ...
            wait_until(lambda: nvsp.counters["control_unanswered"] == 1, "the control message to be counted")
            _traffic(g, net, b"still served")                         # ... data flows both ways
            assert g.raw_sets[rid] is None                            # ... and no answer came
            status = env.host.status()[nic.guid]
            assert status["fault"] is None and status["control_stalled"] is True
            assert status["nvsp_counters"]["control_unanswered"] == 1
        finally:
            server.close()
            g.close()
        g = RingGuest(tmp_path)  # a re-open is a fresh host side: answered again
        try:
            g.bring_up()
            assert g.rndis_set(OID_GEN_CURRENT_PACKET_FILTER, struct.pack("<I", 0x9)) == 0
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


# -- accelerated networking: VF association, data-path switch, VF removal -------------------------

VFASSOC, SET_DATAPATH = 128, 129
VF_TID, SWITCH_TID = 0x8000000000000000, 0x8000000000000001


class VfPaths:
    """A VF factory for SimHost: each NIC's VF path is a FakeNetwork (`inject` = frames the guest
    sends on its VF, `sent` = frames the host put on the VF for the guest); the host closes them."""

    def __init__(self) -> None:
        self.made: dict[str, list[tuple[int, FakeNetwork]]] = {}

    def __call__(self, dev: object, serial: int) -> FakeNetwork:
        port = FakeNetwork()
        port.guest_ifname = f"hvvf{serial}"  # type: ignore[attr-defined]  # the VF netdev's name (VfPath)
        self.made.setdefault(getattr(dev, "guid"), []).append((serial, port))
        return port


def _vf_messages(g: RingGuest) -> list[tuple[int, int, tuple[int, ...]]]:
    """The host's in-band VF messages so far: (trans_id, flags, its u32 fields: 3 of an
    association, 2 of a switch)."""
    out: list[tuple[int, int, tuple[int, ...]]] = []
    for tid, flags, payload in g.inband:
        mtype = int.from_bytes(payload[:4], "little")
        if mtype in (VFASSOC, SET_DATAPATH):
            n = 3 if mtype == VFASSOC else 2
            out.append((tid, flags, struct.unpack_from(f"<{n}I", payload)))
    return out


def test_vf_association_switch_and_removal_over_the_rings(tmp_path: Path, net: FakeNetwork) -> None:
    vfs = VfPaths()
    with SimEnvironment(tmp_path, "6.17", nics=1, network=net, vf=vfs) as env:
        nic = env.nics[0]
        counters = env.host.counters(nic)
        [(serial, port)] = vfs.made[nic.guid]
        g = RingGuest(tmp_path, sriov=True)
        try:
            g.bring_up()
            g.pump(lambda: bool(_vf_messages(g)), "the VF association")
            assert _vf_messages(g) == [(VF_TID, 1, (VFASSOC, 1, serial))]
            _traffic(g, net, b"synthetic")  # not switched yet: the rings carry the host's frames
            assert port.sent == []

            assert g.switch_datapath(True) == b""  # an empty completion
            assert env.host.status()[nic.guid]["vf"]["data_path"] == "vf"
            to_vf = eth_frame(b"for-the-vf")
            net.inject(to_vf)
            wait_until(lambda: to_vf in port.sent, "the host's frame on the VF path")
            wait_until(lambda: counters.frames_to_vf >= 1, "the host to count it")  # counted after the write
            assert to_vf not in g.frames
            from_vf = eth_frame(b"sent-on-the-vf")
            port.inject(from_vf)  # the guest transmits on its VF netdev
            wait_until(lambda: from_vf in net.sent, "the VF's frame on the network")
            _sent_synthetic = eth_frame(b"still-synthetic-tx")
            tid = g.send_frame(_sent_synthetic)  # the synthetic TX keeps working on the VF path
            g.pump(lambda: tid in g.tx_done, "the synthetic send's completion")
            wait_until(lambda: _sent_synthetic in net.sent, "the synthetic frame on the network")

            assert g.switch_datapath(False) == b""
            _traffic(g, net, b"back")  # the rings again
            assert g.switch_datapath(True) == b""

            env.host.vf_remove("hveth0")
            g.pump(lambda: len(_vf_messages(g)) == 3, "switch-to-synthetic and disassociation")
            assert _vf_messages(g)[1:] == [(SWITCH_TID, 1, (SET_DATAPATH, 0)), (VF_TID, 1, (VFASSOC, 0, 0))]
            assert env.host.vf_port(nic) is None and env.host.status()[nic.guid]["vf"]["data_path"] == "synthetic"
            _traffic(g, net, b"after-removal")  # the host's frames are back on the rings
            with pytest.raises(UsageError, match="has no VF"):
                env.host.vf_remove("hveth0")

            env.host.vf_add("hveth0")
            g.pump(lambda: len(_vf_messages(g)) == 4, "the association of the VF that came back")
            assert _vf_messages(g)[3] == (VF_TID, 1, (VFASSOC, 1, serial))  # same NIC, same serial
            assert len(vfs.made[nic.guid]) == 2 and env.host.vf_port(nic) is vfs.made[nic.guid][1][1]
            with pytest.raises(UsageError, match="has its VF already"):
                env.host.vf_add("hveth0")
            assert env.host.fault(nic) is None
        finally:
            g.close()


def test_no_vf_messages_for_a_guest_without_sriov(tmp_path: Path, net: FakeNetwork) -> None:
    vfs = VfPaths()
    with SimEnvironment(tmp_path, "6.17", nics=1, network=net, vf=vfs) as env:
        nic = env.nics[0]
        g = RingGuest(tmp_path)  # the engine's own NDIS config: no SR-IOV
        try:
            g.bring_up()
            assert g.switch_datapath(True) == b""  # completed, nothing switched
            _traffic(g, net, b"synthetic-only")
            env.host.vf_remove(nic)
            _traffic(g, net, b"still")
            assert _vf_messages(g) == [] and env.host.status()[nic.guid]["vf"]["data_path"] == "synthetic"
        finally:
            g.close()


def test_vf_needs_a_network_and_a_vf_start(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="needs a network"):
        SimEnvironment(tmp_path, "6.17", nics=1, vf=VfPaths()).__enter__()
    with SimEnvironment(tmp_path / "b", "6.17", nics=1) as env:
        with pytest.raises(UsageError, match="without VFs"):
            env.host.vf_add("hveth0")


def _recv_matching(sock: socket.socket, want: bytes) -> bool:
    """Read `sock` until a frame starting with `want` (other traffic is skipped); False after WAIT."""
    sock.settimeout(WAIT)
    try:
        while True:
            if sock.recv(65536).startswith(want):
                return True
    except TimeoutError:
        return False


def test_veth_vf_is_a_netdev_with_the_nics_mac_and_carries_frames_both_ways(
        tmp_path: Path, netns_factory: NetnsFactory) -> None:
    """`sim start --wire --vf` as the daemon builds it: the VF is a veth whose guest end (in the
    guest's namespace, here a test namespace) has the NIC's MAC; after the guest's switch the host
    network's frames reach that netdev, and what the guest sends on it reaches the host network."""
    net = HostNetwork.create(ifname=netns_factory.ifname("hn"))
    netns_factory.namespaces.append(net.netns)
    netns_factory.defer("close host network", net.close)
    guest_ns = netns_factory.namespace("g")
    vf_name = netns_factory.ifname("vf")

    def make_vf(dev: object, serial: int) -> VethVf:
        mac = bytes.fromhex(str(getattr(dev, "mac")).replace(":", ""))
        return VethVf.create(guest_ifname=vf_name, mac=mac, host_netns=net.netns, guest_netns=guest_ns)

    with SimEnvironment(tmp_path, "6.17", nics=1, network=net, vf=make_vf) as env:
        nic = env.nics[0]
        shown = netns.ip("-n", guest_ns, "-br", "link", "show", vf_name).stdout.split()
        assert shown[0].split("@")[0] == vf_name and shown[2] == nic.mac  # found by MAC, as Linux/DPDK do
        netns.set_up(guest_ns, vf_name)  # the guest brings its VF up
        vf_sock = packet_socket_in(guest_ns, vf_name)
        netns_factory.defer("close VF socket", vf_sock.close)
        wire_sock = packet_socket_in(net.netns, net.ifname)  # the host network's side of the tap
        netns_factory.defer("close tap socket", wire_sock.close)
        vf_sock.setblocking(True)
        wire_sock.setblocking(True)
        g = RingGuest(tmp_path, sriov=True)
        try:
            g.bring_up()
            g.pump(lambda: bool(_vf_messages(g)), "the VF association")
            if fastpath.available():  # the C pump serves the synthetic path; on the VF path it leaves the tap
                wait_until(lambda: env.host.counters(nic).fastpath == 1, "the C pump to take the data path")
            assert g.switch_datapath(True) == b""
            down = b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x09\x88\xb5" + b"host-to-vf".ljust(46, b"\0")
            wire_sock.send(down)  # out of the tap: the emulator reads it
            assert _recv_matching(vf_sock, down), "the host network's frame never reached the VF netdev"
            wait_until(lambda: env.host.counters(nic).frames_to_vf >= 1, "the host to count it")  # after its write
            assert down not in g.frames
            up = b"\xff" * 6 + bytes.fromhex(nic.mac.replace(":", "")) + b"\x88\xb5" + b"vf-to-host".ljust(46, b"\0")
            vf_sock.send(up)
            assert _recv_matching(wire_sock, up), "the guest's VF frame never reached the host network"
            assert g.switch_datapath(False) == b""  # back to the rings (the pump's, when it serves)
            again = down.replace(b"host-to-vf", b"host-to-rx")
            wire_sock.send(again)
            g.pump(lambda: again in g.frames, "the host network's frame on the rings again")
            env.host.vf_remove(nic)
            wait_until(lambda: netns.ip("-n", guest_ns, "link", "show", vf_name, check=False).returncode != 0,
                       "the VF netdev to go")
        finally:
            g.close()


def test_cli_refuses_a_vf_without_the_wire(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _out, err = run_main(capsys, "--sysroot", str(tmp_path / "root"), "sim", "start", "--vf")
    assert code != 0 and "--vf needs the host's network namespace" in err and "--wire" in err


def _vf_netdevs(env: SimEnvironment) -> list[str]:
    """The VF netdev names of the PCI pass-through devices in the emulated kernel's tree."""
    return sorted(str(d.ifname) for d in env.kernel.devices.values() if d.class_id == VPCI_CLASS)


def test_vf_control_requests(tmp_path: Path, net: FakeNetwork) -> None:
    with SimEnvironment(tmp_path, "6.17", nics=1, network=net, vf=VfPaths()) as env:
        server = ControlServer(env.host, tmp_path)
        try:
            assert _vf_netdevs(env) == ["hvvf1"]  # the tree's pass-through device names the VF path's netdev
            assert request(tmp_path, {"cmd": "vf", "device": "hveth0", "op": "remove"}) == {"ok": True}
            assert env.host.vf_port("hveth0") is None and _vf_netdevs(env) == []
            assert env.host.status()[env.nics[0].guid]["vf"] == {"present": False, "serial": 1}
            assert request(tmp_path, {"cmd": "vf", "device": "hveth0", "op": "add"}) == {"ok": True}
            assert env.host.vf_port("hveth0") is not None and _vf_netdevs(env) == ["hvvf1"]
            with pytest.raises(UsageError, match="'op'"):
                request(tmp_path, {"cmd": "vf", "device": "hveth0", "op": "flap"})
            first = env.host.vf_port("hveth0")
            assert isinstance(first, FakeNetwork)
            env.host.rescind("hveth0")  # the NIC's VF goes with it ...
            assert first.closed and _vf_netdevs(env) == []
            env.host.reoffer("hveth0")  # ... and comes back with the re-offer
            assert env.host.vf_port("hveth0") not in (None, first) and _vf_netdevs(env) == ["hvvf1"]
            assert env.host.status()[env.nics[0].guid]["vf"] == {"present": True, "serial": 1}
        finally:
            server.close()
