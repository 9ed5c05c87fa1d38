"""The whole stack with the data path on (root, namespaces, /dev/net/tun; skipped otherwise).

Guest tap (hvuio.engine.Engine) in one namespace, the emulator's HostNetwork tap in another; the
emulated host moves frames between them (the `running` fixture: tests/conftest.py, built by
tests/support/engine_stack.py). Traffic stays inside the namespaces these tests make.
Waits are bounded (ping -W, subprocess timeouts); nothing asserts on elapsed time.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

from support.engine_stack import HOST_IP, Running
from support.namespaces import NetnsFactory

from hvuio.device.bind import bind_device
from hvuio.netdev import netns
from hvuio.nic import Nic
from hvuio.sim.vsp.host import SimEnvironment


def test_ping_across(running: Running) -> None:
    proc = netns.run(running.guest_ns, ["ping", "-c", "5", "-i", "0.2", "-W", "5", HOST_IP], check=False, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert " 0% packet loss" in proc.stdout


_SERVER = """
import hashlib, socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 5001)); s.listen(1); print("listening", flush=True)
c, _ = s.accept(); h = hashlib.sha256(); n = 0
while True:
    d = c.recv(65536)
    if not d:
        break
    h.update(d); n += len(d)
print(n, h.hexdigest(), flush=True)
"""

_CLIENT = """
import socket, sys
data = open(sys.argv[2], "rb").read()
c = socket.create_connection((sys.argv[1], 5001), timeout=30); c.sendall(data); c.close()
"""


def test_tcp_transfer_is_byte_exact(running: Running, tmp_path: Path) -> None:
    data = random.Random(1234).randbytes(4 * 1024 * 1024)
    blob = tmp_path / "blob"
    blob.write_bytes(data)
    host_ns = running.host_ns
    server = netns.popen(host_ns, [sys.executable, "-c", _SERVER, HOST_IP])
    try:
        assert server.stdout is not None
        assert server.stdout.readline().strip() == "listening"
        netns.run(running.guest_ns, [sys.executable, "-c", _CLIENT, HOST_IP, str(blob)], timeout=120)
        out, err = server.communicate(timeout=120)
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()
    count, digest = out.split()
    assert int(count) == len(data)
    assert digest == hashlib.sha256(data).hexdigest()


def _carrier(ns: str, ifname: str) -> bool:
    proc = netns.run(ns, ["cat", f"/sys/class/net/{ifname}/carrier"], check=False)
    return proc.stdout.strip() == "1"


def test_tap_carrier_follows_link_indications(running: Running) -> None:
    dev, tap = running.env.nics[0], running.engine.tap_name
    assert tap is not None and _carrier(running.guest_ns, tap)
    running.env.host.set_link(dev, up=False)
    assert running.env.host.wait_for(lambda: not _carrier(running.guest_ns, tap), timeout=10)
    running.env.host.set_link(dev, up=True)
    assert running.env.host.wait_for(lambda: _carrier(running.guest_ns, tap), timeout=10)
    assert running.nic.counters["link_changes"] == 2


def test_up_with_datapath_stops_on_sigterm(netns_factory: NetnsFactory, tmp_path: Path) -> None:
    guest_ns = netns_factory.namespace("g")
    with SimEnvironment(tmp_path, profile="6.17", nics=1) as env:
        dev = env.nics[0]
        bind_device(env.sysroot, dev.guid, force=True)
        envvars = dict(os.environ)
        code = "from hvuio.cli import main; main()"
        proc = subprocess.Popen([sys.executable, "-c", code, "--sysroot", str(env.sysroot), "up", dev.guid,
                                 "--json", "--netns", guest_ns, "--ifname", netns_factory.ifname("g")],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=envvars)
        try:
            assert proc.stdout is not None
            assert json.loads(proc.stdout.readline())["event"] == "ready"
            started = json.loads(proc.stdout.readline())
            assert started["event"] == "datapath" and started["netns"] == guest_ns
            assert started["tap"] in netns.list_links(prefix="", netns=guest_ns)
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        assert proc.returncode == 0, err
        last = json.loads(out.splitlines()[-1])
        assert last["event"] == "down" and last["signal"] == signal.SIGTERM
        assert "tx_packets" in last["counters"]
        assert started["tap"] not in netns.list_links(prefix="", netns=guest_ns)  # tap removed
        assert env.host.wait_for(lambda: not env.host.status()[dev.guid]["open"])
        with Nic(env.sysroot, dev.guid) as nic:  # re-openable after the data path ran
            assert nic.open().link_up is True
