"""Frames seen on an interface inside a network namespace, for end-to-end tests.

What lives here: `Capture`, a child Python process (`ip netns exec`) holding an AF_PACKET socket
on one interface that prints every ARP and IPv6 frame it receives as a hex line; the test waits
(bounded) for a frame it expects. A raw socket stands in for tcpdump, which test machines may lack.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from types import TracebackType

from hvuio.netdev import netns

_SNIFFER = r"""
import select, socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
s.bind((sys.argv[1], 0))
print("ready", flush=True)
while True:
    r, _, _ = select.select([s, sys.stdin], [], [], 1.0)
    if sys.stdin in r:
        break
    if s in r:
        f = s.recv(65535)
        if f[12:14] in (b"\x08\x06", b"\x86\xdd"):
            print(f.hex(), flush=True)
"""


class Capture:
    """ARP and IPv6 frames arriving on `ifname` in namespace `ns` while the object is open."""

    def __init__(self, ns: str, ifname: str, ready_timeout: float = 10.0) -> None:
        self._proc = netns.popen(ns, netns.python_argv("-c", _SNIFFER, ifname))
        self._lines: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        try:
            first = self._lines.get(timeout=ready_timeout)
        except queue.Empty:
            first = ""
        if first != "ready":
            self.close()
            raise RuntimeError(f"the capture on {ifname} in {ns} did not start")

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            self._lines.put(line.strip())

    def wait_for(self, match: Callable[[bytes], bool], timeout: float = 10.0) -> bytes | None:
        """The first captured frame `match` accepts, or None when none came within `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                frame = bytes.fromhex(self._lines.get(timeout=left))
            except queue.Empty:
                return None
            if match(frame):
                return frame

    def close(self) -> None:
        if self._proc.poll() is None:
            assert self._proc.stdin is not None
            try:
                self._proc.stdin.close()
                self._proc.wait(timeout=5)
            except Exception:
                self._proc.kill()
                self._proc.wait()

    def __enter__(self) -> Capture:
        return self

    def __exit__(self, t: type[BaseException] | None, v: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
