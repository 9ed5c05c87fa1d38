"""End to end: accelerated networking with the emulator's VF (`sim start --wire --vf`'s model: a veth
with the NIC's MAC beside the PCI pass-through device in the tree). `hvuio up` (--vf auto) pairs
the VF, switches the data path to it and sends the tap's traffic through it: ping and byte-exact
TCP ride the VF (the host's synthetic-path counters stay flat while the VF's veth counters move);
the VF taken away mid-transfer and returned, twice, under one TCP connection that survives, the
traffic on the synthetic path in between; the host's address resolved over the VF is the host
network's MAC (the VF's host end answers no ARP), so a full-size ping crosses a VF removed and
returned at once; `--vf off` never offers SR-IOV. `hvuio status`,
`stats --json` and `list --json` show the pairing. Needs root, /dev/net/tun and iproute2; waits
are bounded."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.cli import child_env, hvuio_main
from support.demo_stack import running_stack
from support.lifecycle import record
from support.namespaces import NetnsFactory
from support.stepped_tcp import SteppedStream
from support.waiting import wait_until

from hvuio.demo import GUEST_ADDRESS, GUEST_IP, HOST_IP, PING_OVERHEAD, DemoStack, _child_env, ping, tcp_transfer
from hvuio.netdev import netns
from hvuio.netdev.netlink import format_mac
from hvuio.sim.net import VethVf

MIB = 1 << 20


@pytest.fixture
def stack() -> Iterator[DemoStack]:
    with running_stack(vf=True) as s:
        yield s


def vf_state(stack: DemoStack) -> dict[str, Any]:
    return dict((record(stack).get("nic") or {}).get("vf") or {})


def synthetic(stack: DemoStack) -> tuple[int, int]:
    """The host's frames on the synthetic path: (to the guest's rings, from the guest's rings)."""
    c = stack.host_status()["counters"]
    return int(c["frames_to_guest"]), int(c["frames_from_guest"])


def wait(stack: DemoStack, what: str, check: Any, timeout: float = 15) -> None:
    assert stack.env.host.wait_for(check, timeout=timeout), f"{what}: vf {vf_state(stack)}, " \
        f"host {stack.host_status().get('vf')}, counters {stack.live_counters()}"


def wait_on_vf(stack: DemoStack, switches: int = 1) -> None:
    def on() -> bool:
        vf = vf_state(stack)
        return (vf.get("data_path") == "vf" and vf.get("tx_on_vf") is True
                and stack.host_status()["vf"]["data_path"] == "vf"
                and stack.live_counters().get("vf_switches", 0) >= switches)
    wait(stack, "data path on the VF", on)


def wait_synthetic(stack: DemoStack, removals: int) -> None:
    def off() -> bool:
        vf = vf_state(stack)
        return (vf.get("data_path") == "synthetic" and vf.get("netdev") is None
                and stack.live_counters().get("vf_removals", 0) >= removals)
    wait(stack, "data path back on synthetic", off)


def cli(stack: DemoStack, *args: str) -> Any:
    argv = netns.python_argv("-m", "hvuio", "--sysroot", str(stack.sysroot), *args, "--json")
    out = subprocess.run(argv, capture_output=True, text=True, env=_child_env(), cwd=netns.CHILD_CWD, timeout=60,
                         check=True).stdout
    return json.loads(out)


def test_ping_and_tcp_ride_the_vf(stack: DemoStack) -> None:
    wait_on_vf(stack)
    port = stack.env.host.vf_port(stack.guid)
    assert port is not None
    vf = vf_state(stack)
    assert vf == {"serial": 1, "netdev": port.guest_ifname, "data_path": "vf", "tx_on_vf": True}
    assert port.guest_ifname in netns.list_links(prefix=port.guest_ifname, netns=stack.guest_ns)  # moved beside the tap
    syn, sent0, got0 = synthetic(stack), port.counters.to_net_bytes, port.counters.from_net_bytes
    ok = ping(stack.guest_ns, HOST_IP, count=5)
    assert ok["received"] == 5, ok["output"]
    out = tcp_transfer(stack.guest_ns, stack.host_ns, HOST_IP, nbytes=8 * MIB, timeout=60)
    back = tcp_transfer(stack.host_ns, stack.guest_ns, GUEST_IP, nbytes=8 * MIB, timeout=60, port=5202)
    assert out["exact"] and back["exact"]
    assert synthetic(stack) == syn                                       # nothing on the synthetic path
    assert port.counters.to_net_bytes - sent0 >= 8 * MIB and port.counters.from_net_bytes - got0 >= 8 * MIB
    wait(stack, "VF traffic counted", lambda: stack.live_counters().get("vf_tx_bytes", 0) >= 8 * MIB
         and stack.live_counters().get("vf_rx_bytes", 0) >= 8 * MIB)
    # the pairing as the commands show it
    [status] = cli(stack, "status")
    assert status["nic"]["vf"]["netdev"] == port.guest_ifname and status["counters"]["vf_switches"] == 1
    [stats] = cli(stack, "stats")["devices"]
    assert stats["vf"]["data_path"] == "vf" and stats["stats"]["vf_tx_bytes"] >= 8 * MIB
    listed = {d["device_id"]: d for d in cli(stack, "list")["devices"]}
    assert listed[stack.guid]["vf"]["name"] == port.guest_ifname
    assert listed[stack.guid]["vf_use"] == vf


def test_vf_removed_mid_transfer_and_returned_twice(stack: DemoStack) -> None:
    wait_on_vf(stack)
    stream = SteppedStream(stack.guest_ns, stack.host_ns, HOST_IP)
    try:
        stream.send(MIB)
        stream.wait_sent()
        for k in (1, 2):
            stream.send(16 * MIB)                                        # in flight while the VF goes
            stack.env.host.vf_remove(stack.guid)
            wait_synthetic(stack, removals=k)
            stream.wait_sent()
            syn = synthetic(stack)
            stream.send(2 * MIB)                                         # on the synthetic path
            stream.wait_sent()
            wait(stack, "traffic on the synthetic path", lambda: synthetic(stack)[1] > syn[1])
            stack.env.host.vf_add(stack.guid)
            wait_on_vf(stack, switches=1 + k)
            port = stack.env.host.vf_port(stack.guid)
            assert port is not None and vf_state(stack)["netdev"] == port.guest_ifname
            syn, sent0 = synthetic(stack), port.counters.to_net_bytes
            stream.send(2 * MIB)                                         # on the VF again
            stream.wait_sent()
            wait(stack, "traffic on the VF again", lambda: port.counters.to_net_bytes - sent0 >= 2 * MIB)
            assert synthetic(stack)[1] == syn[1]
        result = stream.finish()
    finally:
        stream.close()
    assert result["exact"] and result["received"]["bytes"] == stream.total, result
    c = stack.live_counters()
    assert c["vf_switches"] == 3 and c["vf_removals"] == 2 and c["vf_errors"] == 0
    ok = ping(stack.guest_ns, HOST_IP, count=3)
    assert ok["received"] == 3, ok["output"]


def neighbour_mac(ns: str, address: str, dev: str) -> str | None:
    """The link-layer address `ns` has for `address` on `dev` (None: no entry, or one without it)."""
    entries = json.loads(netns.ip("-n", ns, "-j", "neigh", "show", address, "dev", dev).stdout or "[]")
    return str(entries[0]["lladdr"]) if entries and "lladdr" in entries[0] else None


def test_host_address_resolved_over_the_vf_is_the_networks_and_survives_a_new_vf(stack: DemoStack) -> None:
    wait_on_vf(stack)
    port = stack.env.host.vf_port(stack.guid)
    assert isinstance(port, VethVf)
    netns.ip("-n", stack.guest_ns, "neigh", "flush", "dev", stack.tap)
    ok = ping(stack.guest_ns, HOST_IP, count=1)                          # ARP over the VF
    assert ok["received"] == 1, ok["output"]
    assert neighbour_mac(stack.guest_ns, HOST_IP, stack.tap) == format_mac(stack.net.mac)
    assert neighbour_mac(stack.host_ns, GUEST_IP, port.host_ifname) is None  # the VF's host end took no ARP
    stack.env.host.vf_remove(stack.guid)
    wait_synthetic(stack, removals=1)
    stack.env.host.vf_add(stack.guid)                                    # a new VF path, with a MAC of its own
    wait_on_vf(stack, switches=2)
    full = ping(stack.guest_ns, HOST_IP, count=3, size=int(stack.nic.get("mtu") or 1500) - PING_OVERHEAD,
                dont_fragment=True)
    assert full["received"] == 3, full["output"]


def test_vf_off_never_advertises() -> None:
    with running_stack(vf=True, up_args=("--vf", "off")) as stack:
        host = stack.host_status()["vf"]
        assert host["present"] and not host["guest_allowed"] and not host["advertised"]
        assert stack.nic["vf"] is None
        ok = ping(stack.guest_ns, HOST_IP, count=3)
        assert ok["received"] == 3, ok["output"]
        c = stack.live_counters()
        assert c.get("vf_associations", 0) == 0 and c.get("vf_switches", 0) == 0
        assert synthetic(stack)[1] > 0 and stack.host_status()["vf"]["data_path"] == "synthetic"
        port = stack.env.host.vf_port(stack.guid)
        assert port is not None and port.guest_ifname not in netns.list_links(prefix=port.guest_ifname,
                                                                              netns=stack.guest_ns)


def test_sim_start_wire_vf_and_up_over_the_command_line(tmp_path: Path, netns_factory: NetnsFactory) -> None:
    """The same through the commands a user runs: `sim start --wire --vf`, `bind`, `up --netns`
    (which moves the VF hvvf1 beside its tap), ping across the VF, `sim vf remove` (ping on the
    synthetic path), `sim vf add` (the VF again), `hvuio status` naming the VF."""
    root = tmp_path / "root"
    guest = netns_factory.namespace("g")
    tap = netns_factory.ifname("g")
    start = hvuio_main("--sysroot", str(root), "sim", "start", "--wire", "--vf")
    up: subprocess.Popen[str] | None = None
    try:
        assert start.returncode == 0, start.stderr
        bound = hvuio_main("--sysroot", str(root), "bind", "hveth0", "--force")
        assert bound.returncode == 0, bound.stderr
        argv = netns.python_argv("-m", "hvuio", "--sysroot", str(root), "up", "hveth0", "--json",
                                 "--netns", guest, "--ifname", tap)
        up = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(),
                              cwd=netns.CHILD_CWD, start_new_session=True)
        assert up.stdout is not None
        for line in up.stdout:
            if '"event": "datapath"' in line:
                break
        else:
            raise AssertionError(f"hvuio up ended: {up.stderr.read() if up.stderr else ''}")
        netns.add_address(guest, tap, GUEST_ADDRESS)

        def vf() -> dict[str, Any]:
            records = list((root / "run/hvuio/up").glob("*.json"))
            nic = json.loads(records[0].read_text()).get("nic") or {} if records else {}
            return dict(nic.get("vf") or {})

        def path_is(want: str) -> None:
            wait_until(lambda: vf().get("data_path") == want and (want == "synthetic") == (vf().get("netdev") is None),
                       f"data path {want}", timeout=15)
            ok = ping(guest, HOST_IP, count=3)
            assert ok["received"] == 3, ok["output"]

        path_is("vf")
        assert vf()["netdev"] == "hvvf1" and "hvvf1" in netns.list_links(prefix="hvvf1", netns=guest)
        removed = hvuio_main("--sysroot", str(root), "sim", "vf", "remove", "hveth0")
        assert removed.returncode == 0, removed.stderr
        path_is("synthetic")
        added = hvuio_main("--sysroot", str(root), "sim", "vf", "add", "hveth0")
        assert added.returncode == 0, added.stderr
        path_is("vf")
        status = hvuio_main("--sysroot", str(root), "status")
        assert "VF       hvvf1 (serial 1), data path vf" in status.stdout, status.stdout
    finally:
        if up is not None:
            up.send_signal(signal.SIGTERM)
            out, err = up.communicate(timeout=60)
            assert up.returncode == 0, err
        stop = hvuio_main("--sysroot", str(root), "sim", "stop")
        assert stop.returncode == 0, stop.stderr


def test_a_channel_stopped_while_the_traffic_rides_the_vf_is_found_and_recovered() -> None:
    """With the data path on the VF the synthetic channel carries no data, so no send waits for a
    completion there; the guest's periodic link query (LIVENESS_PERIOD) must still notice a host
    that stopped the channel without a word, and `up --persist` re-initialises the NIC, which
    returns to the VF; the traffic kept riding the VF meanwhile."""
    with running_stack(vf=True, up_args=("--persist",)) as stack:
        wait_on_vf(stack)
        wait(stack, "a liveness query answered", lambda: stack.live_counters().get("liveness_answers", 0) >= 1)
        stack.env.host.stall(stack.guid)
        wait(stack, "the stopped channel noticed and the NIC brought up again",
             lambda: stack.live_counters().get("reinits_stall", 0) == 1, timeout=30)
        counters = stack.live_counters()
        assert counters["watchdog_control"] == 1 and counters["watchdog_stalls"] == 0, counters
        wait_on_vf(stack)                                                # the new NIC's switch
        ok = ping(stack.guest_ns, HOST_IP, count=3)
        assert ok["received"] == 3, ok["output"]
        assert stack.host_status()["fault"] is None
