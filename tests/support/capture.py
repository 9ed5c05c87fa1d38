"""Frames seen on an interface inside a network namespace, for end-to-end tests.

What lives here: `Capture`, a child Python process (`ip netns exec`) holding an AF_PACKET socket
on one interface that prints every frame of the EtherTypes asked for (ARP and IPv6 by default) as
a hex line with the 802.1Q TCI the kernel took off it (it strips a received tag into the packet's
metadata before any capture sees it; PACKET_AUXDATA hands it over), and `send_frame`, one raw frame
sent on an interface in a namespace (optionally behind a virtio_net_hdr: a GSO packet). A raw socket stands in for tcpdump, which test machines may
lack; the test waits (bounded) for a frame it expects.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from types import TracebackType

from hvuio.netdev import netns

_SNIFFER = r"""
import select, socket, struct, sys
PACKET_AUXDATA, TP_STATUS_VLAN_VALID = 8, 0x10
types = {int(t, 16) for t in sys.argv[2].split(",")}
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
s.setsockopt(263, PACKET_AUXDATA, 1)   # SOL_PACKET
s.bind((sys.argv[1], 0))
print("ready", flush=True)
while True:
    r, _, _ = select.select([s, sys.stdin], [], [], 1.0)
    if sys.stdin in r:
        break
    if s in r:
        f, anc, _, _ = s.recvmsg(65535, socket.CMSG_SPACE(20))
        tci = -1
        for level, kind, data in anc:
            if level == 263 and kind == PACKET_AUXDATA and len(data) >= 20:
                status, _, _, _, _, vtci, _ = struct.unpack("<IIIHHHH", data[:20])
                if status & TP_STATUS_VLAN_VALID:
                    tci = vtci
        if len(f) >= 14 and struct.unpack("!H", f[12:14])[0] in types:
            print(f.hex(), tci, flush=True)
"""

_SENDER = r"""
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
if len(sys.argv) > 3:
    s.setsockopt(263, 15, 1)   # SOL_PACKET, PACKET_VNET_HDR: the frame follows a virtio_net_hdr
s.bind((sys.argv[1], 0))
s.send(bytes.fromhex(sys.argv[2]))
"""


def send_frame(ns: str, ifname: str, frame: bytes, vnet: bytes | None = None) -> None:
    """Transmit one raw Ethernet frame on `ifname` in namespace `ns`, as it is; with `vnet` (a
    10-byte virtio_net_hdr) the kernel takes it as one partial-checksum or GSO packet."""
    args = [ifname, (vnet + frame).hex()] if vnet is not None else [ifname, frame.hex()]
    netns.run(ns, netns.python_argv("-c", _SENDER, *args, *(["vnet"] if vnet is not None else [])))


class Capture:
    """Frames of `ethertypes` arriving on `ifname` in namespace `ns` while the object is open."""

    def __init__(self, ns: str, ifname: str, ethertypes: Sequence[int] = (0x0806, 0x86DD),
                 ready_timeout: float = 10.0) -> None:
        types = ",".join(f"{t:x}" for t in ethertypes)
        self._proc = netns.popen(ns, netns.python_argv("-c", _SNIFFER, ifname, types))
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

    def wait_for_tagged(self, match: Callable[[bytes, int | None], bool],
                        timeout: float = 10.0) -> tuple[bytes, int | None] | None:
        """The first captured (frame, 802.1Q TCI or None) `match` accepts, or None when none came
        within `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                text, tci_text = self._lines.get(timeout=left).split()
            except queue.Empty:
                return None
            frame, tci = bytes.fromhex(text), int(tci_text)
            if match(frame, None if tci < 0 else tci):
                return frame, None if tci < 0 else tci

    def wait_for(self, match: Callable[[bytes], bool], timeout: float = 10.0) -> bytes | None:
        """The first captured frame `match` accepts, or None when none came within `timeout`."""
        got = self.wait_for_tagged(lambda f, _tci: match(f), timeout)
        return None if got is None else got[0]

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
