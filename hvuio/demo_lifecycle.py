"""`hvuio demo --lifecycle`: what a host does to a running NIC, played on the demo's stack, each
event followed by checks that the NIC came through it.

What lives here: `LongConnection`, a TCP connection from the guest namespace to an echo server in
the host's, opened before the first event and kept open through all of them (each check sends
seeded random bytes and expects them back exactly: the connection survived, nothing was lost or
corrupted); `EVENTS`, the events in the order they are played — the MTU changed from the tap, a
network change, a link flap, the VF removed and returned, a rescind and re-offer, a silently
stopped channel — each one what the emulated host (hvuio.sim.vsp.host.SimHost, the calls `hvuio sim`
offers) or a user does, and when the guest has taken it (`hvuio up`'s counters and status record);
`run_lifecycle()`, which plays them and after each checks that the tap has the same name and
addresses, that ping works (how long it took to work again is the step's recovery time) and that
the long connection echoes; one `Step` per event goes to `on_step` as it ends.

What must not live here: building the stack (hvuio/demo.py's DemoStack), printing (hvuio/cli/demo.py),
emulator internals, the guest's handling of the events (hvuio/engine.py and below).
"""

from __future__ import annotations

import json
import select
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from hvuio.demo import HOST_IP, PING_OVERHEAD, DemoStack, ping
from hvuio.errors import PlatformError
from hvuio.netdev import netns

#: the MTU the tap is changed to (the demo's host network carries it: DemoStack host_mtu)
LIFECYCLE_MTU = 4000
#: the host network's MTU while the lifecycle runs
LIFECYCLE_HOST_MTU = 9000
#: `hvuio up --watchdog` while the lifecycle runs: seconds of sends without a completion
LIFECYCLE_WATCHDOG = 5
ECHO_PORT = 5209
#: bytes each check of the long connection sends and expects back
CHECK_BYTES = 256 * 1024
#: how long the guest may take to take an event and to carry traffic again
TAKE_TIMEOUT = 60.0
RECOVERY_TIMEOUT = 60.0
#: how long the silent stop may go unnoticed: the watchdog's bound plus a re-initialisation
STALL_TIMEOUT = LIFECYCLE_WATCHDOG + TAKE_TIMEOUT

_ECHO_SERVER = r"""
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(1); print("listening", flush=True)
c, _ = s.accept(); buf = bytearray(1 << 16)
while True:
    k = c.recv_into(buf)
    if not k: break
    c.sendall(buf[:k])
"""

_ECHO_CLIENT = r"""
import json, random, socket, sys, time
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=30)
c.settimeout(float(sys.argv[3])); print("connected", flush=True)
for line in sys.stdin:
    n, seed = map(int, line.split()); data = random.Random(seed).randbytes(n); t0 = time.monotonic()
    try:
        c.sendall(data); got = bytearray()
        while len(got) < n:
            part = c.recv(n - len(got))
            if not part: break
            got += part
        print(json.dumps({"ok": bytes(got) == data, "bytes": len(got), "seconds": time.monotonic() - t0}), flush=True)
    except OSError as e:
        print(json.dumps({"ok": False, "error": str(e)}), flush=True)
"""


def _read_line(proc: subprocess.Popen[str], timeout: float, what: str) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline() if ready else ""
    if not line:
        raise PlatformError(f"the long TCP connection's {what} did not answer within {timeout:g} s")
    return line.strip()


class LongConnection:
    """An echo server in `server_ns`, a client in `client_ns` connected to it, kept open; `check()`
    sends seeded bytes through it and says whether they came back exactly."""

    def __init__(self, client_ns: str, server_ns: str, server_ip: str, port: int = ECHO_PORT,
                 timeout: float = RECOVERY_TIMEOUT) -> None:
        self.checks = 0
        self._server = netns.popen(server_ns, netns.python_argv("-c", _ECHO_SERVER, server_ip, str(port)))
        self._client: subprocess.Popen[str] | None = None
        try:
            if _read_line(self._server, 30, "server") != "listening":
                raise PlatformError("the long TCP connection's echo server did not start")
            self._client = subprocess.Popen(
                netns.exec_argv(client_ns, netns.python_argv("-c", _ECHO_CLIENT, server_ip, str(port), str(timeout))),
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                cwd=netns.CHILD_CWD)
            if _read_line(self._client, 30, "client") != "connected":
                raise PlatformError("the long TCP connection did not connect")
        except BaseException:
            self.close()
            raise
        self.timeout = timeout

    def check(self, nbytes: int = CHECK_BYTES) -> dict[str, Any]:
        """Send `nbytes` and read them back: {"ok", "bytes", "seconds"} or {"ok": False, "error"}."""
        assert self._client is not None and self._client.stdin is not None
        self.checks += 1
        try:
            self._client.stdin.write(f"{nbytes} {self.checks}\n")
            self._client.stdin.flush()
            return dict(json.loads(_read_line(self._client, self.timeout + 5, "client")))
        except (OSError, ValueError, PlatformError) as err:
            return {"ok": False, "error": str(err)}

    def close(self) -> None:
        for proc in (self._client, self._server):
            if proc is not None and proc.poll() is None:
                proc.kill()
            if proc is not None:
                proc.communicate()


@dataclass
class Step:
    """One event and what the checks after it found."""

    event: str
    what: str
    ok: bool = False
    #: seconds from the event to the guest having taken it (counters/status say so)
    taken_s: float | None = None
    #: seconds from the event to the first ping that got through again
    recovery_s: float | None = None
    ping: bool = False
    tcp: dict[str, Any] = field(default_factory=dict)
    same_tap: bool = False
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---- reading the guest ----------------------------------------------------------------------------

def _counter(stack: DemoStack, name: str) -> int:
    return int(stack.live_counters().get(name, 0))


def _tap_view(stack: DemoStack) -> tuple[str, list[str]]:
    """The tap's name and its addresses, from the guest namespace."""
    out = netns.ip("-n", stack.guest_ns, "-j", "addr", "show", "dev", stack.tap, check=False)
    try:
        (link,) = json.loads(out.stdout or "[]")
    except ValueError:
        return "", []
    return link.get("ifname", ""), sorted(f"{a['local']}/{a['prefixlen']}" for a in link.get("addr_info", []))


def _poke(stack: DemoStack) -> bool:
    """One ping from the guest (waits at most a second), so that there is traffic while an event is
    taken: a channel that stopped silently is noticed by a send left without its completion.
    Always False: it is not a sign that the event was taken."""
    netns.run(stack.guest_ns, ["ping", "-n", "-q", "-c", "1", "-W", "1", HOST_IP], check=False, timeout=10)
    return False


def _wait(done: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if done():
            return True
        time.sleep(interval)
    return done()


# ---- the events -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Event:
    """One thing done to the running NIC: `act(stack)` does it and returns a predicate that is
    true once the guest has taken it."""

    name: str
    what: str
    act: Callable[[DemoStack], Callable[[], bool]]
    timeout: float = TAKE_TIMEOUT


def _mtu_change(stack: DemoStack) -> Callable[[], bool]:
    netns.ip("-n", stack.guest_ns, "link", "set", "dev", stack.tap, "mtu", str(LIFECYCLE_MTU))
    return lambda: int(stack.status_record().get("nic", {}).get("mtu") or 0) == LIFECYCLE_MTU


def _network_change(stack: DemoStack) -> Callable[[], bool]:
    before = _counter(stack, "network_changes")
    stack.env.host.indicate(stack.guid, "network_change")
    return lambda: _counter(stack, "network_changes") > before


def _link_flap(stack: DemoStack) -> Callable[[], bool]:
    before = _counter(stack, "link_changes")
    stack.env.host.set_link(stack.guid, False)
    if not _wait(lambda: _counter(stack, "link_changes") > before, TAKE_TIMEOUT):
        return lambda: False
    stack.env.host.set_link(stack.guid, True)
    return lambda: _counter(stack, "link_changes") >= before + 2


def _vf_remove_return(stack: DemoStack) -> Callable[[], bool]:
    def on_vf() -> bool:
        return bool(stack.host_status().get("vf", {}).get("data_path") == "vf")

    if not _wait(on_vf, TAKE_TIMEOUT):
        raise PlatformError("the data path never moved to the VF before its removal")
    stack.env.host.vf_remove(stack.guid)
    if not _wait(lambda: not on_vf(), TAKE_TIMEOUT):
        return lambda: False
    stack.env.host.vf_add(stack.guid)
    return on_vf


def _rescind_reoffer(stack: DemoStack) -> Callable[[], bool]:
    before = _counter(stack, "reinits_rescind")
    stack.env.host.rescind(stack.guid)
    time.sleep(1.0)  # a short outage: the device is gone for a second
    stack.env.host.reoffer(stack.guid)
    return lambda: _counter(stack, "reinits_rescind") > before


def _silent_stop(stack: DemoStack) -> Callable[[], bool]:
    before = _counter(stack, "reinits_stall")
    stack.env.host.stall(stack.guid)
    return lambda: _counter(stack, "reinits_stall") > before


EVENTS: tuple[Event, ...] = (
    Event("mtu", f"ip link set <tap> mtu {LIFECYCLE_MTU}", _mtu_change),
    Event("network_change", "the host indicates a network change", _network_change),
    Event("link_flap", "the host's link goes down and up", _link_flap),
    Event("vf", "the host removes the VF and gives it back", _vf_remove_return),
    Event("rescind", "the host rescinds the NIC and offers it again", _rescind_reoffer),
    Event("silent_stop", "the host's channel stops without a word", _silent_stop, STALL_TIMEOUT),
)


# ---- the run --------------------------------------------------------------------------------------

def _play(stack: DemoStack, event: Event, conn: LongConnection, tap: tuple[str, list[str]]) -> Step:
    step = Step(event.name, event.what)
    t0 = time.monotonic()
    try:
        taken = event.act(stack)
        if not _wait(lambda: taken() or _poke(stack), event.timeout, interval=0.5):
            step.error = f"hvuio up did not take the event within {event.timeout:g} s"
            return step
        step.taken_s = round(time.monotonic() - t0, 3)
        size = int(stack.status_record().get("nic", {}).get("mtu") or 1500) - PING_OVERHEAD
        step.ping = _wait(lambda: ping(stack.guest_ns, HOST_IP, count=1, size=size, dont_fragment=True,
                                       timeout=10)["ok"], RECOVERY_TIMEOUT, interval=0.2)
        step.recovery_s = round(time.monotonic() - t0, 3) if step.ping else None
        step.tcp = conn.check()
        step.same_tap = _tap_view(stack) == tap
        step.ok = step.ping and bool(step.tcp.get("ok")) and step.same_tap
        if not step.ok:
            step.error = "; ".join(why for bad, why in (
                (not step.ping, "ping did not get through again"),
                (not step.tcp.get("ok"), f"the long TCP connection failed: {step.tcp.get('error', 'bytes differ')}"),
                (not step.same_tap, f"the tap changed: {_tap_view(stack)} (was {tap})")) if bad)
    except PlatformError as err:
        step.error = err.message
    return step


def run_lifecycle(stack: DemoStack, on_step: Callable[[Step], None] | None = None) -> list[Step]:
    """Play EVENTS on the running stack (DemoStack with a VF, `hvuio up --persist`), in order, each
    checked; stops at the first step that fails (the ones after it would only say the same)."""
    tap = _tap_view(stack)
    if not tap[0]:
        raise PlatformError(f"the tap {stack.tap} is not in namespace {stack.guest_ns}")
    conn = LongConnection(stack.guest_ns, stack.host_ns, HOST_IP)
    steps: list[Step] = []
    try:
        first = conn.check()
        if not first.get("ok"):
            raise PlatformError(f"the long TCP connection failed before any event: {first}")
        for event in EVENTS:
            step = _play(stack, event, conn, tap)
            steps.append(step)
            if on_step is not None:
                on_step(step)
            if not step.ok:
                break
    finally:
        conn.close()
    return steps


__all__ = ["EVENTS", "Event", "LongConnection", "Step", "run_lifecycle"]
