"""Multi-queue end to end: the guest engine with one pump per channel against the emulator.

The emulated host steers every frame from the network by the Toeplitz hash over the key and table
the guest set (OID_GEN_RECEIVE_SCALE_PARAMETERS); the queue each flow must land on is predicted
here from the guest's own RSS settings with the independent Toeplitz of support.toeplitz, and
checked against the guest's per-queue counters (rx_queue_<k>_packets). Traffic stays inside two
network namespaces; waits are bounded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from hvuio.demo import DemoStack, ping, tcp_transfer
from hvuio.netdev import netns
from hvuio.sim.host import profile as hp
from hvuio.sim.net import DEFAULT_GUEST_ADDRESS
from hvuio.sim.vsp import fastpath
from hvuio.sim.vsp.fastsession import FastSession
from support import toeplitz
from support.daemon_stack import daemon_stack
from support.engine_stack import HOST_IP, Running, engine_on, running_engine, sim_network
from support.namespaces import NetnsFactory, netns_skip_reason

GUEST_IP = DEFAULT_GUEST_ADDRESS.split("/")[0]
# The receiver in the guest namespace: accepts `flows` TCP connections one after the other and
# prints, per peer port, the bytes and sha256 of what arrived.
_TCP_COUNTER = r"""
import socket, sys, json, hashlib
ip, port, flows = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((ip, port)); s.listen(16); s.settimeout(30)
print("listening", flush=True)
got = {}
for _ in range(flows):
    c, (src, sport) = s.accept()
    h, n = hashlib.sha256(), 0
    while True:
        data = c.recv(65536)
        if not data:
            break
        h.update(data); n += len(data)
    got[sport] = [n, h.hexdigest()]
    c.close()
print(json.dumps(got), flush=True)
"""

_TCP_SENDER = r"""
import socket, sys, random
ip, port, nbytes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for sport in map(int, sys.argv[4:]):
    data = random.Random(sport).randbytes(nbytes)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("", sport)); s.settimeout(30)
    s.connect((ip, port)); s.sendall(data); s.close()
"""
TCP = 6


def _rss(r: Running) -> tuple[bytes, tuple[int, ...], int, int]:
    guest = r.nic.guest
    assert guest is not None and guest.rss is not None
    return guest.rss.key, guest.rss.table, guest.rss.hash_info, guest.channels


def _ports_per_queue(r: Running, dport: int, per_queue: int) -> dict[int, list[int]]:
    """Host source ports whose TCP flow to the guest must land on each queue (the guest's own key
    and table, the independent Toeplitz)."""
    key, table, hash_info, queues = _rss(r)
    found: dict[int, list[int]] = {q: [] for q in range(queues)}
    for sport in range(20000, 21000):
        frame = toeplitz.flow_frame(HOST_IP, GUEST_IP, proto=TCP, sport=sport, dport=dport)
        q = toeplitz.expected_queue(frame, key, table, hash_info, queues)
        if len(found[q]) < per_queue:
            found[q].append(sport)
        if all(len(v) == per_queue for v in found.values()):
            return found
    raise AssertionError(f"no {per_queue} source ports for every queue")


def _send_tcp(r: Running, flows: list[int], dport: int, nbytes: int) -> dict[int, Any]:
    """Each flow's bytes from the host namespace to the guest: {sport: [bytes, sha256]}."""
    receiver = netns.popen(r.guest_ns, netns.python_argv("-c", _TCP_COUNTER, GUEST_IP, str(dport), str(len(flows))))
    try:
        assert receiver.stdout is not None
        assert receiver.stdout.readline().strip() == "listening"
        netns.run(r.host_ns, netns.python_argv("-c", _TCP_SENDER, GUEST_IP, str(dport), str(nbytes),
                                               *map(str, flows)), timeout=60)
        out, _ = receiver.communicate(timeout=60)
    finally:
        if receiver.poll() is None:
            receiver.kill()
            receiver.communicate()
    return {int(k): v for k, v in json.loads(out.strip().splitlines()[-1]).items()}


def _fast(r: Running) -> FastSession | None:
    """The emulator's C pump for the NIC: running whenever the fast path is on (the default)."""
    fast: FastSession | None = r.env.host._sessions[r.env.nics[0].guid].fast
    assert (fast is not None) == fastpath.enabled()
    return fast


@pytest.fixture
def two_queues(netns_factory: NetnsFactory, tmp_path: Path) -> Any:
    with running_engine(netns_factory, tmp_path, queues=2) as r:
        yield r


def test_two_queues_are_granted_opened_and_pumped(two_queues: Running) -> None:
    r = two_queues
    assert r.nic.guest is not None and r.nic.guest.channels == 2
    assert len(r.nic.subchannels) == 1 and r.nic.negotiated.queues == 2
    state = r.env.host.status()[r.env.nics[0].guid]
    assert state["rss"]["enabled"] and state["rss"]["queues"] == 2
    assert len(state["subchannels"]) == 1
    fast = _fast(r)
    assert state["counters"]["fastpath"] == int(fast is not None)
    assert fast is None or fast.pump.channels == [0, 1]  # the C pump serves the subchannel too
    live = r.engine.live_counters()
    assert live["queues"] == 2 and {"rx_queue_1_packets", "tx_queue_1_bytes"} <= live.keys()
    # one pump thread per queue, named for it where the kernel shows threads (top -H, /proc)
    comms = {(t / "comm").read_text().strip() for t in Path("/proc/self/task").iterdir()}
    assert {"hvuio-queue-0", "hvuio-queue-1"} <= comms, comms
    # each pump batches its tap I/O through an io_uring unless told not to or the kernel refuses
    if os.environ.get("HVUIO_TAP_IO") == "readv":
        assert live["tap_uring"] == 0 and live["uring_enters"] == 0
    elif Path("/proc/sys/kernel/io_uring_disabled").read_text().strip() == "0":
        assert live["tap_uring"] == 2


def test_flows_land_on_the_queue_the_guests_table_predicts_and_go_back_on_it(two_queues: Running) -> None:
    """Per flow: the host's RSS puts it on the queue the guest's key and table predict, and the
    guest sends its side of the flow (ACKs, FIN) on that same channel: the tap queue the kernel
    chose is the one the flow's last frame was written on (engine.py). The one exception is the
    SYN-ACK, sent while tun still takes in the SYN, before it learns the flow: it may leave on
    another queue, at most one frame per flow."""
    r = two_queues
    dport, nbytes = 5555, 256 * 1024
    ports = _ports_per_queue(r, dport, 4)
    fast = _fast(r)
    for queue, flows in ports.items():
        before = r.engine.live_counters()
        in_c = fast.pump.channel_counters(queue)["rx_frames"] if fast is not None else 0
        host_tx = [fast.pump.channel_counters(q)["tx_frames"] for q in range(2)] if fast is not None else []
        steered = fast.counters()["rx_steered"] if fast is not None else 0
        got = _send_tcp(r, flows, dport, nbytes)
        after = r.engine.live_counters()
        if fast is not None:  # delivered by the C pump on their channel, none handed to Python
            assert fast.pump.channel_counters(queue)["rx_frames"] > in_c
            assert fast.counters()["rx_steered"] == steered
            # the host took the guest's side of these flows from that channel too
            took = [fast.pump.channel_counters(q)["tx_frames"] - host_tx[q] for q in range(2)]
            assert took[queue] >= 2 * len(flows) and took[1 - queue] <= len(flows) + 2, (queue, took)
        for sport in flows:  # byte-exact, in order (TCP would not reassemble a reordered stream silently)
            assert got[sport] == [nbytes, hashlib.sha256(random.Random(sport).randbytes(nbytes)).hexdigest()]
        landed = {q: after[f"rx_queue_{q}_packets"] - before[f"rx_queue_{q}_packets"] for q in range(2)}
        # every segment of these flows on the predicted queue: at least one per MSS of data; the
        # other queue sees none of them (queue 0 may get an ARP request, which is not hashed)
        assert landed[queue] >= len(flows) * nbytes // 65536, (queue, landed)
        assert landed[1 - queue] <= (2 if queue == 1 else 0), (queue, landed)
        # and the guest's frames of these flows left on that queue: at least an ACK and the FIN
        # per flow; the other queue sent at most each flow's SYN-ACK and ARP (no flow of these)
        sent = {q: after[f"tx_queue_{q}_packets"] - before[f"tx_queue_{q}_packets"] for q in range(2)}
        assert sent[queue] >= 2 * len(flows) and sent[1 - queue] <= len(flows) + 2, (queue, sent)


def test_tcp_streams_are_byte_exact_and_both_queues_carry_both_ways(two_queues: Running) -> None:
    r = two_queues
    before = r.engine.live_counters()
    for port, seed in ((7001, 1), (7002, 2), (7003, 3), (7004, 4), (7005, 5), (7006, 6)):
        there = tcp_transfer(r.guest_ns, r.host_ns, HOST_IP, 1 << 20, seed=seed, port=port)
        assert there["exact"], there
        back = tcp_transfer(r.host_ns, r.guest_ns, GUEST_IP, 1 << 20, seed=seed + 10, port=port)
        assert back["exact"], back
    after = r.engine.live_counters()
    for q in range(2):
        for d in ("rx", "tx"):
            assert after[f"{d}_queue_{q}_packets"] > before[f"{d}_queue_{q}_packets"], (q, d, after)
    drops = {k: v for k, v in after.items() if k.startswith("drop_")}
    assert not drops, drops


def test_a_host_that_refuses_subchannels_runs_on_one_queue(netns_factory: NetnsFactory, tmp_path: Path,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    # 64 queues asked, a receive buffer too small to give each a section: OpenVMM answers FAILURE
    profile = hp.HostProfile(link_flap_delay=0.0, max_subchannels=63, recv_section_size=1 << 20)
    with caplog.at_level(logging.WARNING, logger="hvuio.nic"), \
            running_engine(netns_factory, tmp_path, queues=64, host_profile=profile) as r:
        assert r.nic.guest is not None and r.nic.guest.channels == 1 and r.nic.subchannels == []
        assert r.engine.live_counters()["queues"] == 1
        there = tcp_transfer(r.guest_ns, r.host_ns, HOST_IP, 1 << 20, seed=3)
        assert there["exact"], there
    assert any("refused" in rec.getMessage() and "primary channel only" in rec.getMessage()
               for rec in caplog.records), caplog.text


def test_hvuio_up_queues_2_carries_tcp_on_both_queues() -> None:
    """`hvuio up --queues 2` (the CLI, as a user runs it): two queues negotiated, TCP byte-exact
    both ways with several streams, and the final counters name each queue's traffic."""
    reason = netns_skip_reason()
    if reason is not None:
        pytest.skip(reason)
    with DemoStack(queues=2) as s:
        assert s.nic["queues"] == 2
        for port, seed in ((7101, 1), (7102, 2), (7103, 3), (7104, 4)):
            there = tcp_transfer(s.guest_ns, s.host_ns, HOST_IP, 1 << 20, seed=seed, port=port)
            back = tcp_transfer(s.host_ns, s.guest_ns, GUEST_IP, 1 << 20, seed=seed + 10, port=port)
            assert there["exact"] and back["exact"], (there, back)
        # `hvuio stats`: the status record's per-queue counters under the kernel's names
        proc = subprocess.run([sys.executable, "-m", "hvuio", "--sysroot", str(s.sysroot), "stats", "--json"],
                              capture_output=True, text=True, timeout=60, check=False)
        assert proc.returncode == 0, proc.stderr
        [dev] = json.loads(proc.stdout)["devices"]
        assert dev["queues"] == 2 and dev["stats"]["rx_queue_1_packets"] > 0, dev
        down = s.stop_up()
    assert down is not None
    counters = down["counters"]
    assert counters["queues"] == 2
    for q in range(2):
        assert counters[f"rx_queue_{q}_packets"] > 0 and counters[f"tx_queue_{q}_packets"] > 0, counters
    assert sum(counters[f"rx_queue_{q}_bytes"] for q in range(2)) == counters["rx_bytes"]
    assert sum(counters[f"tx_queue_{q}_bytes"] for q in range(2)) == counters["tx_bytes"]


def _carries_tcp_on_every_queue(r: Running, queues: int, port: int) -> None:
    """TCP byte-exact both ways over several streams, every one of `queues` queues carrying
    frames both ways, nothing dropped."""
    before = r.engine.live_counters()
    for k in range(4 * queues):
        there = tcp_transfer(r.guest_ns, r.host_ns, HOST_IP, 1 << 19, seed=k, port=port + k)
        back = tcp_transfer(r.host_ns, r.guest_ns, GUEST_IP, 1 << 19, seed=k + 100, port=port + k)
        assert there["exact"] and back["exact"], (there, back)
    after = r.engine.live_counters()
    assert after["queues"] == queues
    for q in range(queues):
        for d in ("rx", "tx"):
            assert after[f"{d}_queue_{q}_packets"] > before[f"{d}_queue_{q}_packets"], (q, d, after)
    assert not {k: v for k, v in after.items() if k.startswith("drop_")}, after


@pytest.mark.parametrize("rescind", [True, False], ids=["subchannels-rescinded", "subchannel-dirs-kept"])
def test_queue_count_changes_are_a_full_reinitialisation(netns_factory: NetnsFactory, tmp_path: Path,
                                                         rescind: bool) -> None:
    """One emulator, the NIC brought up again and again with another queue count (2, 1, 2, then
    more than the host has): each run starts from nothing (new subchannels, the host's RSS state
    set afresh) and carries traffic on every queue it got; the host's view agrees. Whether the
    kernel removes a closed subchannel's directory or keeps it without its ring (VMBUS.md §6.1),
    the next run maps only the new ones."""
    profile = hp.HostProfile(link_flap_delay=0.0, max_subchannels=1)  # the host has 2 queues
    with sim_network(netns_factory, tmp_path, host_profile=profile, rescind_subchannels_on_close=rescind) as sim:
        for run, (asked, granted) in enumerate(((2, 2), (1, 1), (2, 2), (8, 2))):
            with engine_on(sim, queues=asked) as r:
                assert r.nic.negotiated.queues == granted and len(r.nic.subchannels) == granted - 1
                state = sim.env.host.status()[sim.guid]
                assert len(state["subchannels"]) == granted - 1, state
                assert state["rss"]["enabled"] == (granted > 1) and state["rss"]["queues"] == granted, state
                fast = _fast(r)
                assert fast is None or fast.pump.channels == list(range(granted))
                assert state["subchannels"] == [c.relid for c in r.nic.subchannels]  # this run's, none older
                _carries_tcp_on_every_queue(r, granted, 7200 + 20 * run)
            assert "error" not in r.result and r.result["counters"]["queues"] == granted
            # the close ends the host's session and the kernel's subchannels (VMBUS.md §6.1)
            assert sim.env.host.wait_for(lambda: not sim.env.host.status()[sim.guid]["open"], timeout=10)
            dev = sim.env.kernel.device(sim.guid)
            assert sim.env.host.wait_for(lambda: all(c.ring_backing is None for c in dev.channels.values()
                                                     if c.relid != dev.relid), timeout=10)
            if rescind:
                assert [c.relid for c in dev.channels.values()] == [dev.relid]


def test_hvuio_up_again_with_another_queue_count_shows_what_it_got(tmp_path: Path) -> None:
    """`hvuio up` run again and again on one emulator daemon (its host has 8 queues): --queues 1,
    then more than the host has (it gets the host's 8), then 2; each run's status record names
    the queue count it got and carries traffic."""
    with daemon_stack(tmp_path) as s:
        host_queues = hp.HostProfile().max_subchannels + 1
        for asked, got in ((1, 1), (64, host_queues), (2, 2)):
            s.stop_up()
            s.start_up("--queues", str(asked))
            [record] = [json.loads(p.read_text()) for p in s.status_files()]
            assert record["nic"]["queues"] == got and len(record["queues"]) == got, record
            assert ping(s.guest_ns, HOST_IP, count=3)["received"] == 3
            dev = s.host_status()
            assert dev["rss"]["queues"] == got and len(dev["subchannels"]) == got - 1, dev
