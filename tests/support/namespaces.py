"""Test helpers for network namespaces and taps.

What lives here:
  * `have_netns()` / `netns_skip_reason()` — why this process cannot run namespace tests (None
    if it can); `require_netns()` skips the calling test with that reason.
  * `NetnsFactory` — per-test namespaces ("hvu-t-<random>") plus a cleanup registry that undoes
    everything even when the test fails, then asserts that nothing the test made (namespaces,
    root-namespace links with hvu- names) was left behind. The `netns_factory` fixture that hands
    one to a test is in tests/conftest.py.
  * `FrameBridge` — a tiny thread that copies frames between two fds, standing in for the
    emulator's data path (the same calls the sim host makes).
  * `ping()`, `names_in()` — a bounded ping inside a namespace; the links a namespace holds.

Use in a test module:   from support.namespaces import NetnsFactory, ping
"""

from __future__ import annotations

import os
import select
import shutil
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pytest

from hvuio.netdev import netns

ReadFn = Callable[[], "list[bytes]"]
WriteFn = Callable[[bytes], object]


def have_netns() -> str | None:
    """None when this process can make network namespaces and taps, else the reason it cannot."""
    if os.geteuid() != 0:
        return "needs root"
    if not os.path.exists("/dev/net/tun"):
        return "needs /dev/net/tun"
    if shutil.which("ip") is None:
        return "needs iproute2 ('ip')"
    return None


def netns_skip_reason() -> str | None:
    """None when namespaces and taps can be made here, else why not."""
    return have_netns()


def require_netns() -> None:
    reason = netns_skip_reason()
    if reason is not None:
        pytest.skip(reason)


class NetnsFactory:
    """Makes namespaces and registers undo actions for one test; `finish()` undoes and checks."""

    def __init__(self) -> None:
        self.cleanup = netns.Cleanup()
        self.namespaces: list[str] = []
        self.root_links: list[str] = []  # names created in the root namespace, checked for leaks

    def namespace(self, role: str = "t", *, ipv6: bool = False) -> str:
        """A fresh namespace deleted at the end of the test (IPv6 off by default: quieter wires)."""
        name = self.cleanup.namespace(role, ipv6=ipv6)
        self.namespaces.append(name)
        return name

    def ifname(self, role: str = "if") -> str:
        return netns.random_ifname(role)

    def track_root_link(self, name: str) -> None:
        self.root_links.append(name)

    def defer(self, what: str, action: Callable[[], object]) -> None:
        """Run `action` at teardown (LIFO, before the namespaces it may live in are deleted)."""
        self.cleanup.push(what, action)

    def finish(self) -> None:
        self.cleanup.close()
        left = netns.leaks(self.namespaces, self.root_links)
        assert not left, f"test leaked: {left}"


@dataclass
class Endpoint:
    """One side of a bridge: an fd to poll, how to read a batch, how to write one frame."""

    fd: int
    read: ReadFn
    write: WriteFn
    frames_in: int = field(default=0)


class FrameBridge:
    """Copies frames A→B and B→A in a thread until `stop()`; errors resurface from `stop()`."""

    def __init__(self, a: Endpoint, b: Endpoint) -> None:
        self.a, self.b = a, b
        self._wake_r, self._wake_w = os.pipe()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="frame-bridge", daemon=True)

    def start(self) -> FrameBridge:
        self._thread.start()
        return self

    def _loop(self) -> None:
        try:
            poller = select.poll()
            for fd in (self.a.fd, self.b.fd, self._wake_r):
                poller.register(fd, select.POLLIN)
            while True:
                ready = {fd for fd, _ in poller.poll()}
                if self._wake_r in ready:
                    return
                for src, dst in ((self.a, self.b), (self.b, self.a)):
                    if src.fd in ready:
                        for frame in src.read():
                            src.frames_in += 1
                            dst.write(frame)
        except BaseException as exc:  # handed to the test thread by stop()
            self._error = exc

    def stop(self) -> None:
        if self._thread.is_alive():
            os.write(self._wake_w, b"x")
            self._thread.join()
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        self._wake_r = self._wake_w = -1
        if self._error is not None:
            raise self._error

    def __enter__(self) -> FrameBridge:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def single_reader(read_one: Callable[[], bytes | None], limit: int = 64) -> ReadFn:
    """Turn a read-one-frame-or-None function into a batch reader."""

    def read() -> list[bytes]:
        out: list[bytes] = []
        while len(out) < limit and (frame := read_one()) is not None:
            out.append(frame)
        return out

    return read


def ping(ns: str, address: str, count: int = 3) -> str:
    """Run `ping -c count` inside `ns` towards `address` (an address in a namespace the test made);
    return its output, failing the test with that output if any reply was missing."""
    if shutil.which("ping") is None:
        pytest.skip("needs ping (apt-get install iputils-ping)")
    # -W: per-reply wait, so a broken path fails the test instead of hanging it.
    proc = netns.run(ns, ["ping", "-n", "-c", str(count), "-W", "5", address], check=False)
    assert proc.returncode == 0, f"ping {address} from {ns} failed:\n{proc.stdout}{proc.stderr}"
    return proc.stdout


def names_in(ns: str, prefix: str = "") -> Sequence[str]:
    return netns.list_links(prefix=prefix, netns=ns)
