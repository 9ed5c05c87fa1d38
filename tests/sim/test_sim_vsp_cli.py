"""`hvuio sim start|status|link|indicate|stall|rescind|stop` with the emulated host in a separate daemon process.

The guest (RingGuest of tests/support/ring_guest.py) runs in this process and the kernel + host
in the daemon, so everything crosses process boundaries as with a real guest: mmap'ed backing
files, the monitor page and the /dev/uioN sockets. The control socket is exercised in-process too
(ControlServer.handle) for its error replies.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from hvuio.errors import UsageError
from hvuio.proto.events import LinkSpeed, LinkStatus, NetworkChange
from hvuio.sim.pcap import PcapSource
from hvuio.sim.vsp.control import ControlServer, request
from hvuio.sim.vsp.host import SimEnvironment

from support.cli import hvuio_main as hvuio
from support.ring_guest import RingGuest, eth_frame
from support.waiting import wait_until

PID_FILE = "run/hvuio-sim/kernel.pid"


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "sim"
    started = hvuio("--sysroot", str(root), "sim", "start", "--pcap-out", str(tmp_path / "out.pcap"))
    assert started.returncode == 0, started.stderr
    try:
        yield root
    finally:
        stopped = hvuio("--sysroot", str(root), "sim", "stop")
        if stopped.returncode != 0 and (root / PID_FILE).exists():  # never leave our daemon behind
            os.kill(int((root / PID_FILE).read_text()), signal.SIGKILL)


def test_cli_daemon_serves_a_guest_in_another_process(daemon: Path, tmp_path: Path) -> None:
    g = RingGuest(daemon)
    try:
        g.bring_up()
        frame = eth_frame(b"to the pcap")
        tid = g.send_frame(frame)
        g.pump(lambda: tid in g.tx_done, "the send completion")

        changed = hvuio("--sysroot", str(daemon), "sim", "indicate", "hveth0", "network-change")
        assert changed.returncode == 0 and "indicated network-change" in changed.stdout, changed.stderr
        g.pump(lambda: g.events[-1] == NetworkChange(), "the network-change indication")

        sped = hvuio("--sysroot", str(daemon), "sim", "indicate", "hveth0", "link-speed", "--mbps", "2500")
        assert sped.returncode == 0 and "indicated link-speed 2500 Mbit/s" in sped.stdout, sped.stderr
        g.pump(lambda: g.events[-1] == LinkSpeed(2_500_000_000, indicated=True), "the link-speed indication")

        linked = hvuio("--sysroot", str(daemon), "sim", "link", "hveth0", "down")
        assert linked.returncode == 0, linked.stderr
        g.pump(lambda: g.events[-1] == LinkStatus(False), "the link-down indication")

        status = hvuio("--sysroot", str(daemon), "sim", "status", "--json")
        assert status.returncode == 0, status.stderr
        [dev] = json.loads(status.stdout).values()
        assert dev["open"] and dev["nvsp_state"] == "ready" and dev["link_up"] is False
        assert dev["rx_layout"] == "openvmm"  # the default: OpenVMM's receive layout
        assert dev["rss"] == {"enabled": False, "hash_types": [], "table_size": 0, "queues": 1,  # until the guest sets it
                              "hash_info": 0, "key": "", "table": []}
        assert dev["counters"]["frames_from_guest"] == 1 and dev["counters"]["link_indications"] == 1  # the change only: none at initialize
        human = hvuio("--sysroot", str(daemon), "sim", "status")
        assert "hveth0" in human.stdout and "ready" in human.stdout and "link down" in human.stdout
        assert "rss off queues 1" in human.stdout

        stalled = hvuio("--sysroot", str(daemon), "sim", "stall", "--control", "hveth0")
        assert stalled.returncode == 0 and "stopped answering control requests" in stalled.stdout, stalled.stderr
        status = hvuio("--sysroot", str(daemon), "sim", "status", "--json")
        [dev] = json.loads(status.stdout).values()
        assert dev["control_stalled"] is True and dev["fault"] is None
        second = eth_frame(b"sent after the control stall")
        tid = g.send_frame(second)
        g.pump(lambda: tid in g.tx_done, "the send completion after the control stall")
    finally:
        g.close()
    stopped = hvuio("--sysroot", str(daemon), "sim", "stop")
    assert stopped.returncode == 0, stopped.stderr
    assert [r.data for r in PcapSource(tmp_path / "out.pcap")] == [frame, second]


def test_cli_errors_name_the_problem(daemon: Path, tmp_path: Path) -> None:
    bad = hvuio("--sysroot", str(daemon), "sim", "link", "nosuchnic", "up")
    assert bad.returncode == 2 and "no simulated device 'nosuchnic'" in bad.stderr
    none = hvuio("--sysroot", str(tmp_path / "elsewhere"), "sim", "status")
    assert none.returncode == 2 and "no emulated host answers" in none.stderr
    for args in (["link-speed"], ["network-change", "--mbps", "10"]):
        speed = hvuio("--sysroot", str(daemon), "sim", "indicate", "hveth0", *args)
        assert speed.returncode == 2 and "--mbps goes with link-speed" in speed.stderr and "Hint:" in speed.stderr
    huge = hvuio("--sysroot", str(daemon), "sim", "indicate", "hveth0", "link-speed", "--mbps", "500000")
    assert huge.returncode == 2 and "500000" in huge.stderr
    both = hvuio("--sysroot", str(tmp_path / "other"), "sim", "start", "--no-host", "--vlan-oob")
    assert both.returncode == 2 and "--vlan-oob is a host option" in both.stderr


def test_cli_rx_layout_reaches_the_host(tmp_path: Path) -> None:
    root = tmp_path / "sim"
    bad = hvuio("--sysroot", str(root), "sim", "start", "--rx-layout", "dense")
    assert bad.returncode == 2 and "dense" in bad.stderr
    started = hvuio("--sysroot", str(root), "sim", "start", "--rx-layout", "compact")
    assert started.returncode == 0, started.stderr
    try:
        g = RingGuest(root)
        try:
            g.bring_up()
            [dev] = json.loads(hvuio("--sysroot", str(root), "sim", "status", "--json").stdout).values()
            assert dev["rx_layout"] == "compact" and dev["nvsp_state"] == "ready"
        finally:
            g.close()
    finally:
        stopped = hvuio("--sysroot", str(root), "sim", "stop")
        assert stopped.returncode == 0, stopped.stderr


def test_a_host_that_does_not_answer_or_answers_garbage_is_one_sentence_and_a_hint(tmp_path: Path) -> None:
    """A control socket whose owner accepts but never replies (a stopped emulator), then one that
    replies with bytes that are not JSON: each request ends in a UsageError with a hint."""
    from hvuio.sim.kernel.shm import seqpacket_listen
    from hvuio.sim.vsp.control import socket_path

    socket_path(tmp_path).parent.mkdir(parents=True)
    with seqpacket_listen(socket_path(tmp_path)) as listener:
        with pytest.raises(UsageError) as silent:
            request(tmp_path, {"cmd": "status"}, timeout=0.2)
        assert "failed" in silent.value.message and "kill -CONT" in silent.value.hint
        listener.accept()[0].close()

        def garbage() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.recv(4096)
                conn.send(b"not json")

        server = threading.Thread(target=garbage)
        server.start()
        with pytest.raises(UsageError) as bad:
            request(tmp_path, {"cmd": "status"})
        server.join()
        assert "malformed reply" in bad.value.message and bad.value.hint


def test_control_requests_in_process(tmp_path: Path) -> None:
    with SimEnvironment(tmp_path, "6.17", nics=1) as env:
        server = ControlServer(env.host, tmp_path)
        try:
            assert server.handle("status") == {"ok": False, "hint": "",
                                               "error": "a control request is a JSON object with a string 'cmd'"}
            assert server.handle({"cmd": "link", "device": "hveth0"})["error"] == \
                "control command 'link' needs 'up': true or false"
            assert "unknown control command 'reboot'" in server.handle({"cmd": "reboot", "device": "hveth0"})["error"]
            assert server.handle({"cmd": "indicate", "device": "hveth0"})["error"] == \
                "control command 'indicate' needs a 'status' string"
            closed = server.handle({"cmd": "indicate", "device": "hveth0", "status": "network_change"})
            assert "is not open" in closed["error"]
            unknown = server.handle({"cmd": "indicate", "device": "hveth0", "status": "reset"})
            assert "'reset' is not one the host sends" in unknown["error"] and "network_change" in unknown["hint"]
            speedless = server.handle({"cmd": "indicate", "device": "hveth0", "status": "link_speed"})
            assert "'link_speed' needs a link speed" in speedless["error"] and "--mbps" in speedless["hint"]
            assert "'network_change' takes no link speed" in server.handle(
                {"cmd": "indicate", "device": "hveth0", "status": "network_change", "mbps": 5})["error"]
            assert server.handle({"cmd": "indicate", "device": "hveth0", "status": "link_speed",
                                  "mbps": "fast"})["error"] == "control command 'indicate' needs 'mbps' as a whole number"
            assert request(tmp_path, {"cmd": "link", "device": "hveth0", "up": False}) == {"ok": True}
            assert env.host.status()[env.nics[0].guid]["link_up"] is False
            with pytest.raises(UsageError, match="no simulated device"):
                request(tmp_path, {"cmd": "rescind", "device": "eth9"})
            nic = env.nics[0]
            assert request(tmp_path, {"cmd": "rescind", "device": "hveth0"}) == {"ok": True}
            wait_until(lambda: nic.guid not in env.kernel.devices, "the rescinded device to go")
        finally:
            server.close()
