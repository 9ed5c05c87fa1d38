"""The end-to-end demo stack: emulator + host network + `hvuio up` + traffic, and its teardown.

What lives here:
  * `DemoStack` — builds, in order, a guest namespace ("hvu-guest-…") for the tap, the host
    network (`HostNetwork`: a tap with 198.18.0.1/24 in its own "hvu-net-…" namespace), the
    emulated kernel + host VSP in this process (`SimEnvironment` in a temporary sysroot), binds the
    simulated NIC to uio_hv_generic through `hvuio.device.bind` (the code `hvuio bind` runs), and
    starts `hvuio up DEVICE --json --netns GUEST` as a child process (the real CLI; its own process
    also keeps the guest's Python off the emulator's GIL). Every step registers its undo in a
    `hvuio.netdev.netns.Cleanup`, so `close()` removes processes, taps, namespaces and the sysroot even
    when a step failed half-way or the user pressed Ctrl-C.
  * Traffic between the two namespaces: `ping`, TCP bulk transfers with a sha256 check on the
    receiving side (one, or several in parallel with `steered_ports` choosing ports the host's RSS
    spreads over the queues), a UDP datagram check and a UDP small-packet blaster — small Python programs
    run with `ip netns exec` (so they measure what a user's program would see).
  * `run_demo()` — what `hvuio demo` does, returning one JSON-able result dict; its "stats" are
    the data path's final counters under the names `hvuio stats` gives them (hvuio/stats.py).

What must not live here: click and printing (hvuio/cli/demo.py), emulator internals (hvuio/sim/),
pyroute2 (hvuio/netdev/tap.py). Traffic only ever goes between the namespaces made here.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from hvuio.netdev import netns
from hvuio.errors import NotRootError, PlatformError
from hvuio.stats import ethtool_stats, split_queues

HOST_ADDRESS = "198.18.0.1/24"  # RFC 2544 benchmarking range, configured only in our namespaces
GUEST_ADDRESS = "198.18.0.2/24"
HOST_IP = HOST_ADDRESS.split("/")[0]
#: IPv4 + ICMP echo headers: a ping payload of MTU - 28 bytes fills the MTU.
PING_OVERHEAD = 28
GUEST_IP = GUEST_ADDRESS.split("/")[0]
TCP_PORT = 5201
UDP_PORT = 5202
#: bounded waits: the child's bring-up (BRINGUP_TIMEOUT is 30 s) and its clean stop
UP_START_TIMEOUT = 60.0
UP_STOP_TIMEOUT = 30.0
TRAFFIC_TIMEOUT = 300.0
DEFAULT_TCP_BYTES = 32 * 1024 * 1024
#: source ports the demo picks for steered streams: above Linux's default ephemeral range
#: (ip_local_port_range 32768-60999), so no connection the kernel opens takes one
EPHEMERAL_FIRST = 61000


def max_guest_mtu(send_section_size: int) -> int:
    """The largest MTU whose frames fit one send section after the RNDIS header (without
    GPA-direct; hvuio.nicinfo.section_mtu is the rule the NIC applies)."""
    from hvuio.nicinfo import section_mtu

    return section_mtu(send_section_size)


def require_root() -> None:
    """NotRootError / PlatformError when this process cannot build namespaces and taps."""
    if os.geteuid() != 0:
        raise NotRootError("hvuio demo needs root: it creates network namespaces and tap devices",
                           "Run it with sudo (sudo hvuio demo), or use scripts/demo.sh as root.")
    if not os.path.exists("/dev/net/tun"):
        raise PlatformError("/dev/net/tun is missing, so no tap device can be created",
                            "Load the tun module (modprobe tun) or run in a VM/container that has it.")
    for tool, package in (("ip", "iproute2"), ("ping", "iputils-ping")):
        if shutil.which(tool) is None:
            raise PlatformError(f"the '{tool}' command is not installed", f"Install {package} (apt-get install {package}).")


def _child_env() -> dict[str, str]:
    root = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


@dataclass
class DemoStack:
    """The whole path; see the module docstring. Use `with DemoStack(...) as stack:`."""

    kernel: str = "6.17"
    mtu: int = 1500
    host_mtu: int | None = None  # the host network tap's MTU (default: `mtu`)
    monitored: bool = True  # False: the NIC's channel is signalled by write(1), not the monitor page
    up_args: tuple[str, ...] = ()  # extra `hvuio up` options (benchmarks: --busy-poll 0, ...)
    #: queues `hvuio up` asks for (`hvuio demo --queues`; the emulator's C fast path serves every channel)
    queues: int = 1
    vlan_oob: bool = False  # the host delivers 802.1Q tags out of band (HostProfile.vlan_oob)
    host_profile: Any = None  # the emulated host's HostProfile (default: link changes indicated at once)
    #: accelerated networking: the NIC gets a VF (a veth in this namespace, random name, with the
    #: NIC's MAC; hvuio.sim.net.VethVf), as `sim start --wire --vf` gives it
    vf: bool = False
    sysroot: Path | None = None
    cleanup: netns.Cleanup = field(default_factory=netns.Cleanup)
    guest_ns: str = ""
    host_ns: str = ""
    guid: str = ""
    tap: str = ""
    host_ifname: str = ""
    nic: dict[str, Any] = field(default_factory=dict)
    up_proc: subprocess.Popen[str] | None = None
    up_down: dict[str, Any] | None = None
    up_stderr: str = ""
    env: Any = None
    net: Any = None

    def __enter__(self) -> DemoStack:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        require_root()
        from hvuio.device.bind import bind_device
        from hvuio.sim.host.profile import HostProfile
        from hvuio.sim.net import HostNetwork
        from hvuio.sim.vsp.host import SimEnvironment

        c = self.cleanup
        if self.sysroot is None:
            self.sysroot = Path(tempfile.mkdtemp(prefix="hvuio-demo-"))
            root = self.sysroot
            c.push(f"remove {root}", lambda: shutil.rmtree(root, ignore_errors=True))
        self.guest_ns = c.namespace("guest", ipv6=False)
        self.host_ifname = netns.random_ifname("hn")
        self.net = HostNetwork.create(address=HOST_ADDRESS, mtu=self.host_mtu or self.mtu, ifname=self.host_ifname)
        c.push(f"close host network {self.net.netns}", self.net.close)
        self.host_ns = self.net.netns
        # link_flap_delay 0: link changes are indicated at once (the 5 s Hyper-V delay is a host
        # courtesy to Linux guests; the demo and tests want to see them now).
        profile = self.host_profile if self.host_profile is not None else HostProfile(link_flap_delay=0.0)
        if self.vlan_oob:
            profile = replace(profile, vlan_oob=True)
        vf = None
        if self.vf:
            from hvuio.sim.net import VethVf

            host_ns = self.host_ns
            vf = lambda dev, serial: VethVf.create(  # noqa: E731
                guest_ifname=netns.random_ifname("vf"), mac=bytes.fromhex((dev.mac or "").replace(":", "")),
                host_netns=host_ns)
        self.env = SimEnvironment(self.sysroot, profile=self.kernel, nics=1, network=self.net,
                                  host_profile=profile, vf=vf,
                                  nic_monitored=self.monitored)
        self.env.__enter__()
        c.push("stop the emulator", lambda: self.env.__exit__(None, None, None))
        self.guid = self.env.nics[0].guid
        bind_device(self.sysroot, self.guid, force=True)  # force: the simulated NIC is never the SSH NIC
        self._start_up()
        netns.add_address(self.guest_ns, self.tap, GUEST_ADDRESS)

    def _start_up(self) -> None:
        assert self.sysroot is not None
        self.tap = netns.random_ifname("g")
        argv = netns.python_argv("-m", "hvuio", "--sysroot", str(self.sysroot), "up", self.guid, "--json",
                                 "--netns", self.guest_ns, "--ifname", self.tap, "--mtu", str(self.mtu),
                                 "--queues", str(self.queues), *self.up_args)
        # its own process group: a Ctrl-C at the terminal reaches us, and we stop it in order
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=_child_env(), start_new_session=True, cwd=netns.CHILD_CWD)
        self.up_proc = proc
        self.cleanup.push("stop hvuio up", self.stop_up)
        deadline = time.monotonic() + UP_START_TIMEOUT
        while True:
            event = self._read_event(deadline)
            if event.get("event") == "ready":
                self.nic = event["nic"]
            elif event.get("event") == "datapath":
                if event.get("tap") != self.tap:
                    raise PlatformError(f"hvuio up reported tap {event.get('tap')!r}, expected {self.tap!r}")
                return

    def _read_event(self, deadline: float) -> dict[str, Any]:
        proc = self.up_proc
        assert proc is not None and proc.stdout is not None
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise PlatformError(f"hvuio up did not start its data path within {UP_START_TIMEOUT:g} s")
            ready, _, _ = select.select([proc.stdout], [], [], min(left, 1.0))
            if not ready:
                continue
            line = proc.stdout.readline()
            if not line:
                err = proc.stderr.read() if proc.stderr is not None else ""
                proc.wait()
                raise PlatformError(f"hvuio up exited with code {proc.returncode} before its data path ran: "
                                    f"{err.strip() or 'no message'}")
            if line.startswith("{"):
                return dict(json.loads(line))

    def stop_up(self) -> dict[str, Any] | None:
        """SIGTERM the `hvuio up` child, wait, and keep its final counters (idempotent)."""
        proc = self.up_proc
        if proc is None:
            return self.up_down
        self.up_proc = None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=UP_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        self.up_stderr = err
        for line in out.splitlines():
            if line.startswith("{"):
                event = json.loads(line)
                if event.get("event") == "down":
                    self.up_down = event
        if proc.returncode != 0:
            raise PlatformError(f"hvuio up exited with code {proc.returncode}: {err.strip() or 'no message'}")
        return self.up_down

    @property
    def up_pid(self) -> int | None:
        return None if self.up_proc is None else self.up_proc.pid

    def host_status(self) -> dict[str, Any]:
        """The emulated host's view of the NIC (counters, NVSP counters, fault)."""
        return dict(self.env.host.status()[self.guid])

    def status_record(self) -> dict[str, Any]:
        """The running `hvuio up`'s status record (hvuio/status.py; about 0.5 s old), {} without one."""
        assert self.sysroot is not None
        path = self.sysroot / "run/hvuio/up" / f"{self.guid}.json"
        try:
            return dict(json.loads(path.read_text()))
        except (OSError, ValueError):
            return {}

    def live_counters(self) -> dict[str, int]:
        """The running `hvuio up`'s data-path counters from its status record."""
        return dict(self.status_record().get("counters", {}))

    def close(self) -> None:
        self.cleanup.close()


# ------------------------------------------------------------------------------------------ traffic

def ping(ns: str, address: str, count: int = 5, interval: float = 0.2, size: int | None = None,
         dont_fragment: bool = False, timeout: float = TRAFFIC_TIMEOUT) -> dict[str, Any]:
    """Run ping in `ns`; returns sent/received/loss and the rtt min/avg/max/mdev (ms) plus raw output."""
    argv = ["ping", "-n", "-q", "-c", str(count), "-i", str(interval), "-W", "5"]
    if size is not None:
        argv += ["-s", str(size)]
    if dont_fragment:
        argv += ["-M", "do"]
    proc = netns.run(ns, [*argv, address], check=False, timeout=timeout)
    return parse_ping(proc.stdout + proc.stderr, proc.returncode)


def parse_ping(text: str, returncode: int = 0) -> dict[str, Any]:
    out: dict[str, Any] = {"ok": returncode == 0, "output": text.strip()}
    m = re.search(r"(\d+) packets transmitted, (\d+) received", text)
    if m:
        out["sent"], out["received"] = int(m.group(1)), int(m.group(2))
    m = re.search(r"rtt min/avg/max/mdev = ([\d.]+)/([\d.]+)/([\d.]+)/([\d.]+) ms", text)
    if m:
        out.update(zip(("min_ms", "avg_ms", "max_ms", "mdev_ms"), map(float, m.groups())))
        out["summary"] = m.group(0)
    return out


_TCP_RECEIVER = r"""
import hashlib, json, socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(1); print("listening", flush=True)
s.settimeout(float(sys.argv[3])); c, _ = s.accept(); c.settimeout(float(sys.argv[3]))
h = hashlib.sha256(); n = 0; buf = bytearray(1 << 20); view = memoryview(buf); t0 = None
while True:
    k = c.recv_into(buf)
    if t0 is None: t0 = time.monotonic()
    if not k: break
    h.update(view[:k]); n += k
print(json.dumps({"bytes": n, "sha256": h.hexdigest(), "seconds": time.monotonic() - (t0 or time.monotonic())}), flush=True)
"""

_TCP_SENDER = r"""
import hashlib, json, random, socket, sys, time
n = int(sys.argv[3]); data = random.Random(int(sys.argv[4])).randbytes(n)
digest = hashlib.sha256(data).hexdigest()
src = int(sys.argv[6]) if len(sys.argv) > 6 else 0  # 0: the kernel picks the source port
c = socket.socket(); c.settimeout(float(sys.argv[5]))
if src:  # SO_REUSEADDR: a port an earlier run left in TIME_WAIT is taken again
    c.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); c.bind(("", src))
c.connect((sys.argv[1], int(sys.argv[2])))
t0 = time.monotonic(); c.sendall(data); c.shutdown(socket.SHUT_WR); c.recv(1); c.close()
print(json.dumps({"bytes": n, "sha256": digest, "seconds": time.monotonic() - t0}), flush=True)
"""


def _expect_line(proc: subprocess.Popen[str], want: str, timeout: float) -> None:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline() if ready else ""
    if line.strip() != want:
        proc.kill()
        _, err = proc.communicate()
        raise PlatformError(f"traffic receiver did not start (got {line.strip()!r}): {err.strip()}")


def _finish(proc: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise PlatformError(f"traffic program did not finish within {timeout:g} s") from None
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise PlatformError(f"traffic program failed with code {proc.returncode}: {err.strip()[-400:]}")
    return dict(json.loads(lines[-1]))


def tcp_transfer(src_ns: str, dst_ns: str, dst_ip: str, nbytes: int = DEFAULT_TCP_BYTES, seed: int = 5,
                 port: int = TCP_PORT, timeout: float = TRAFFIC_TIMEOUT) -> dict[str, Any]:
    """Send `nbytes` of seeded random data from `src_ns` to a receiver in `dst_ns`.

    Returns {"sent": {...}, "received": {...}, "exact": bool, "mbit_s": float}: both sides'
    byte counts and sha256, the receiver's first-byte-to-EOF time and its throughput.
    """
    return tcp_streams(src_ns, dst_ns, dst_ip, [(port, 0)], nbytes, seed, timeout)[0]


def tcp_streams(src_ns: str, dst_ns: str, dst_ip: str, ports: list[tuple[int, int]],
                nbytes: int = DEFAULT_TCP_BYTES, seed: int = 5,
                timeout: float = TRAFFIC_TIMEOUT) -> list[dict[str, Any]]:
    """Parallel TCP transfers, one per (destination port, source port) of `ports` (source 0: the
    kernel's choice), each of `nbytes` seeded random bytes (stream i: seed + i) and checked as
    `tcp_transfer` checks one; returns `tcp_transfer`'s result per stream, plus its ports."""
    receivers: list[subprocess.Popen[str]] = []
    senders: list[subprocess.Popen[str]] = []
    try:
        for port, _ in ports:
            receivers.append(netns.popen(dst_ns, netns.python_argv("-c", _TCP_RECEIVER, dst_ip, str(port),
                                                                   str(timeout))))
            _expect_line(receivers[-1], "listening", 30)
        for i, (port, src_port) in enumerate(ports):
            senders.append(netns.popen(src_ns, netns.python_argv("-c", _TCP_SENDER, dst_ip, str(port), str(nbytes),
                                                                 str(seed + i), str(timeout), str(src_port))))
        got = [_finish(r, timeout) for r in receivers]
        sent = [_finish(s, timeout) for s in senders]
    finally:
        for p in senders + receivers:
            if p.poll() is None:
                p.kill()
                p.communicate()
    out = []
    for (port, src_port), g, t in zip(ports, got, sent):
        exact = g["bytes"] == t["bytes"] == nbytes and g["sha256"] == t["sha256"]
        mbit = g["bytes"] * 8 / g["seconds"] / 1e6 if g["seconds"] > 0 else 0.0
        out.append({"sent": t, "received": g, "exact": exact, "mbit_s": mbit, "port": port,
                    "source_port": src_port})
    return out


def steered_ports(rss: dict[str, Any], queues: int, src_ip: str, dst_ip: str,
                  first_port: int = TCP_PORT) -> list[tuple[int, int]]:
    """One (destination port, source port) per queue such that the host's RSS (`rss`: the
    emulated host's view, `hvuio sim status --json`) steers stream k's frames to the guest, whose
    source and destination ports are swapped, to queue k. The guest's tap queue for a flow
    follows the queue its frames arrived on (Linux drivers/net/tun.c `tun_flow_update`,
    `tun_automq_select_queue`), so each queue then carries its stream both ways. Without RSS (or
    one queue) the source ports are the kernel's choice."""
    ports = [(first_port + k, 0) for k in range(queues)]
    if queues < 2 or not rss.get("enabled"):
        return ports
    from hvuio.sim.host.rss import RssState

    state = RssState(bytes.fromhex(rss["key"]), tuple(rss["table"]), int(rss["hash_info"]))
    out = []
    src_port = EPHEMERAL_FIRST  # every stream its own source port
    for k, (port, _) in enumerate(ports):
        while src_port < 65536 and state.queue(_tcp_frame(dst_ip, src_ip, port, src_port), queues) != k:
            src_port += 1
        out.append((port, src_port if src_port < 65536 else 0))
        src_port += 1
    return out


def _tcp_frame(src_ip: str, dst_ip: str, sport: int, dport: int) -> bytes:
    """An Ethernet + IPv4 + TCP header (what RSS hashes of a frame), no payload."""
    ip = bytes([0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0]) + socket.inet_aton(src_ip) + socket.inet_aton(dst_ip)
    tcp = sport.to_bytes(2, "big") + dport.to_bytes(2, "big") + bytes(8) + bytes([0x50, 0x10]) + bytes(6)
    return bytes(12) + b"\x08\x00" + ip + tcp


_UDP_RECEIVER = r"""
import hashlib, json, socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
try:  # past net.core.rmem_max (root): a stalled receiver must not drop in its own socket
    s.setsockopt(socket.SOL_SOCKET, 33, 1 << 24)  # SO_RCVBUFFORCE
except OSError:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 24)
s.bind((sys.argv[1], int(sys.argv[2]))); s.settimeout(float(sys.argv[3])); print("listening", flush=True)
seen = set(); bad = 0; n = 0; nbytes = 0; t0 = t1 = None
while True:
    try:
        d = s.recv(65536)
    except socket.timeout:
        break
    if d == b"END":
        s.settimeout(float(sys.argv[4]))  # stragglers still in flight after the marker
        continue
    t1 = time.monotonic(); t0 = t0 or t1; n += 1; nbytes += len(d)
    if len(d) >= 40 and hashlib.sha256(d[40:] + d[:8]).digest()[:32] == d[8:40]:
        seen.add(int.from_bytes(d[:8], "little"))
    else:
        bad += 1
print(json.dumps({"datagrams": n, "unique": len(seen), "corrupt": bad, "bytes": nbytes,
                  "seconds": (t1 - t0) if t0 else 0.0}), flush=True)
"""

_UDP_SENDER = r"""
import hashlib, json, random, socket, sys, time
count, sizes, pace = int(sys.argv[3]), [int(x) for x in sys.argv[4].split(",")], float(sys.argv[5])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); rnd = random.Random(7); t0 = time.monotonic(); sent = 0
for i in range(count):
    size = sizes[i % len(sizes)]; body = rnd.randbytes(max(0, size - 40)); seq = i.to_bytes(8, "little")
    d = seq + hashlib.sha256(body + seq).digest() + body
    s.sendto(d[:max(size, 40)], (sys.argv[1], int(sys.argv[2]))); sent += 1
    if pace and i % 16 == 15: time.sleep(pace)
for _ in range(3): s.sendto(b"END", (sys.argv[1], int(sys.argv[2])))
print(json.dumps({"sent": sent, "seconds": time.monotonic() - t0}), flush=True)
"""


def udp_check(src_ns: str, dst_ns: str, dst_ip: str, count: int, sizes: list[int], pace: float = 0.002,
              port: int = UDP_PORT, idle: float = 3.0) -> dict[str, Any]:
    """Send `count` checksummed datagrams (sizes cycled, each >= 40 bytes) and report what arrived.

    The receiver verifies every datagram's sha256 and sequence number; it stops `idle` seconds
    after the last one. `pace`: sleep after every 16 datagrams (0 = as fast as possible).
    """
    if min(sizes) < 40:
        raise PlatformError("udp_check needs datagrams of at least 40 bytes (sequence number + sha256)")
    receiver = netns.popen(dst_ns, netns.python_argv("-c", _UDP_RECEIVER, dst_ip, str(port), "30", str(idle)))
    try:
        _expect_line(receiver, "listening", 30)
        sender = netns.popen(src_ns, netns.python_argv("-c", _UDP_SENDER, dst_ip, str(port), str(count),
                                      ",".join(map(str, sizes)), str(pace)))
        sent = _finish(sender, TRAFFIC_TIMEOUT)
        got = _finish(receiver, TRAFFIC_TIMEOUT)
    finally:
        for p in (receiver,):
            if p.poll() is None:
                p.kill()
                p.communicate()
    return {"sent": sent, "received": got}


# ------------------------------------------------------------------------------------------ demo

def run_demo(kernel: str = "6.17", mtu: int = 1500, tcp_bytes: int = DEFAULT_TCP_BYTES,
             on_ready: Any = None, gpa: bool = True, trace: Path | None = None,
             trace_max_mb: int = 64, queues: int = 2, lifecycle: bool = False,
             on_step: Any = None) -> dict[str, Any]:
    """Build the stack, ping, TCP transfer, stop `hvuio up`, collect counters, tear down.

    `on_ready(stack)` runs once traffic is done and before `hvuio up` is stopped (for --keep).
    `gpa` False runs `hvuio up --no-gpa` (the send buffer only). `trace`: `hvuio up` writes its
    pcapng trace there (`--trace`, capped at `trace_max_mb`); result["trace"] names the file and
    its counters. `queues`: `hvuio up --queues`, and as many parallel TCP streams of `tcp_bytes`
    each, stream k steered to queue k (`steered_ports`); result["tcp"] is stream 0,
    result["tcp_streams"] every stream, result["tcp_mbit_s"] their sum.
    Raises HvuioError subclasses for failures a user can meet; cleanup always runs.
    """
    result: dict[str, Any] = {"kernel": kernel, "mtu": mtu}
    up_args: tuple[str, ...] = () if gpa else ("--no-gpa",)
    if trace is not None:  # absolute: `hvuio up` runs in another directory
        up_args += ("--trace", str(Path(trace).absolute()), "--trace-max-mb", str(trace_max_mb))
    if lifecycle:
        from hvuio.demo_lifecycle import LIFECYCLE_HOST_MTU, LIFECYCLE_WATCHDOG, run_lifecycle

        # a silently stopped channel is noticed after 5 s of sends without completions (default 15)
        up_args += ("--persist", "--watchdog", str(LIFECYCLE_WATCHDOG))
    stack_options: dict[str, Any] = {"vf": True, "host_mtu": LIFECYCLE_HOST_MTU} if lifecycle else {}
    with DemoStack(kernel=kernel, mtu=mtu, up_args=up_args, queues=queues, **stack_options) as stack:
        result.update(guest_netns=stack.guest_ns, host_netns=stack.host_ns, tap=stack.tap,
                      host_ifname=stack.host_ifname, nic=stack.nic, sysroot=str(stack.sysroot))
        try:
            result["ping"] = ping(stack.guest_ns, HOST_IP, count=5)
            if not result["ping"]["ok"]:
                raise PlatformError(f"ping from the guest namespace to {HOST_IP} failed: {result['ping']['output']}")
            # frames that fill the tap's MTU, never fragmented: jumbo frames cross whole or not at all
            payload = int(stack.nic.get("mtu") or mtu) - PING_OVERHEAD
            result["ping_full"] = ping(stack.guest_ns, HOST_IP, count=3, size=payload, dont_fragment=True)
            result["ping_full"]["payload"] = payload
            if not result["ping_full"]["ok"]:
                raise PlatformError(f"ping with {payload}-byte payloads (the full MTU, not fragmented) to {HOST_IP} "
                                    f"failed: {result['ping_full']['output']}")
            # at least 1 MiB/s: far below any working path, so only a dead one times out
            granted = int(stack.nic.get("queues") or queues)
            ports = steered_ports(stack.host_status().get("rss", {}), granted, GUEST_IP, HOST_IP)
            streams = tcp_streams(stack.guest_ns, stack.host_ns, HOST_IP, ports, tcp_bytes,
                                  timeout=max(60.0, len(ports) * tcp_bytes / 2**20))
        except PlatformError:
            if stack.up_proc is not None and stack.up_proc.poll() is not None:
                stack.stop_up()  # `hvuio up` died: raise its error (exit code and message) instead
            raise
        result["tcp"], result["tcp_streams"] = streams[0], streams
        result["tcp_mbit_s"] = sum(t["mbit_s"] for t in streams)
        for k, tcp in enumerate(streams):
            if not tcp["exact"]:
                raise PlatformError(f"TCP stream {k} (port {tcp['port']}) corrupted: sent {tcp['sent']}, "
                                    f"received {tcp['received']}")
        if lifecycle:
            steps = run_lifecycle(stack, on_step)
            result["lifecycle"] = [step.to_dict() for step in steps]
            failed = next((step for step in steps if not step.ok), None)
            if failed is not None:
                raise PlatformError(f"the NIC did not come through the {failed.event.replace('_', ' ')} event: "
                                    f"{failed.error}", "Run with -vv and look at 'hvuio up''s log lines above.")
        if on_ready is not None:
            on_ready(stack)
        live = stack.host_status()  # NVSP counters exist only while the NIC is open
        result["host_nvsp_counters"] = live.get("nvsp_counters", {})
        down = stack.stop_up() or {}
        result["datapath_counters"] = down.get("counters", {})
        counters = result["datapath_counters"]  # the names `hvuio stats` shows, per queue too
        result["stats"] = ethtool_stats(counters, split_queues(counters))
        if trace is not None:
            result["trace"] = {"file": str(Path(trace).absolute()),
                               **{k: v for k, v in result["datapath_counters"].items() if k.startswith("trace_")}}
        host = stack.host_status()
        result["host_counters"] = host["counters"]
        result["host_network_counters"] = _net_counters(stack)
        if host.get("fault"):
            raise PlatformError(f"the emulated host stopped serving the NIC: {host['fault']}")
    return result


def _net_counters(stack: DemoStack) -> dict[str, int]:
    c = stack.net.counters
    return {k: int(getattr(c, k)) for k in ("to_net_frames", "to_net_bytes", "to_net_drops",
                                           "from_net_frames", "from_net_bytes", "from_net_drops")}


__all__ = ["DemoStack", "max_guest_mtu", "ping", "require_root", "run_demo", "steered_ports", "tcp_streams",
           "tcp_transfer", "udp_check"]
