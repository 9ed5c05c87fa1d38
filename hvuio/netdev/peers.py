"""Telling a tap's neighbours where its addresses are: gratuitous ARP and unsolicited NA frames.

What lives here: the frames Linux's `netdev_notify_peers` makes a netdev send, built once per
notification (a rare control event, so in Python): per IPv4 address a gratuitous ARP request
(sender and target protocol address both the address, target hardware address zero, to the
broadcast MAC: torvalds/linux net/ipv4/devinet.c `inetdev_send_gratuitous_arp` via
net/ipv4/arp.c `arp_send`), and per IPv6 address that finished duplicate address detection (or is
optimistic) an unsolicited neighbour advertisement (net/ipv6/ndisc.c `ndisc_send_unsol_na`: to
ff02::1 from the address itself, hop limit 255, Override set, Solicited clear, Router clear here
— hvuio does not forward — and the target link-layer address option). `PeerNotifier` sends them
through an AF_PACKET socket bound to the tap inside the tap's namespace: the kernel transmits
them on the tap, so they reach the host through the data path's TX like every other frame.

What must not live here: when to notify (hvuio/linkwatch.py), pyroute2 (the addresses come from
`Tap.addresses()`), the data path.
"""

from __future__ import annotations

import ctypes
import ipaddress
import logging
import os
import socket
import struct
import threading
from typing import Final

from hvuio.errors import HvuioError
from hvuio.netdev.tap import NETNS_RUN_DIR, Tap, os_error

__all__ = ["PeerNotifier", "gratuitous_arp", "unsolicited_na"]

log = logging.getLogger(__name__)

ETH_P_ARP: Final = 0x0806
ETH_P_IPV6: Final = 0x86DD
BROADCAST: Final = b"\xff" * 6
ALL_NODES: Final = ipaddress.IPv6Address("ff02::1")
ALL_NODES_MAC: Final = bytes.fromhex("333300000001")
ICMPV6: Final = 58
NA_TYPE: Final = 136
NA_OVERRIDE: Final = 0x20000000
OPT_TARGET_LLADDR: Final = 2
IFA_F_OPTIMISTIC: Final = 0x04
IFA_F_TENTATIVE: Final = 0x40
CLONE_NEWNET: Final = 0x40000000


def gratuitous_arp(mac: bytes, ip: ipaddress.IPv4Address) -> bytes:
    """An ARP request announcing `ip` at `mac`, broadcast (42 bytes, no padding)."""
    arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, mac, ip.packed, bytes(6), ip.packed)
    return BROADCAST + mac + struct.pack("!H", ETH_P_ARP) + arp


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return int(~total & 0xFFFF)


def unsolicited_na(mac: bytes, ip: ipaddress.IPv6Address) -> bytes:
    """A neighbour advertisement of `ip` at `mac` to all nodes (86 bytes)."""
    body = struct.pack("!BBHI16sBB6s", NA_TYPE, 0, 0, NA_OVERRIDE, ip.packed, OPT_TARGET_LLADDR, 1, mac)
    pseudo = ip.packed + ALL_NODES.packed + struct.pack("!I3xB", len(body), ICMPV6)
    body = body[:2] + struct.pack("!H", _csum(pseudo + body)) + body[4:]
    ip6 = struct.pack("!IHBB16s16s", 6 << 28, len(body), ICMPV6, 255, ip.packed, ALL_NODES.packed)
    return ALL_NODES_MAC + mac + struct.pack("!H", ETH_P_IPV6) + ip6 + body


def announcements(mac: bytes, addresses: list[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]]
                  ) -> list[bytes]:
    """The frames for one notification: IPv4 first, then IPv6 without tentative addresses."""
    out = [gratuitous_arp(mac, a) for a, _ in addresses if isinstance(a, ipaddress.IPv4Address)]
    for a, flags in addresses:
        if isinstance(a, ipaddress.IPv6Address) and (not flags & IFA_F_TENTATIVE or flags & IFA_F_OPTIMISTIC):
            out.append(unsolicited_na(mac, a))
    return out


def _packet_socket(ifname: str, netns: str | None) -> socket.socket:
    """A send-only AF_PACKET socket bound to `ifname` in `netns` (a thread enters the namespace:
    setns changes only the calling thread, and a socket stays in the namespace it was made in)."""
    made: list[socket.socket] = []
    failed: list[BaseException] = []

    def make() -> None:
        try:
            if netns is not None:
                fd = os.open(os.path.join(NETNS_RUN_DIR, netns), os.O_RDONLY | os.O_CLOEXEC)
                try:
                    libc = ctypes.CDLL(None, use_errno=True)
                    if libc.setns(fd, CLONE_NEWNET) != 0:
                        err = ctypes.get_errno()
                        raise OSError(err, os.strerror(err))
                finally:
                    os.close(fd)
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC, 0)
            try:
                sock.bind((ifname, 0))
            except BaseException:
                sock.close()
                raise
            made.append(sock)
        except BaseException as exc:  # handed to the caller's thread
            failed.append(exc)

    thread = threading.Thread(target=make, name="hvuio-peers-socket")
    thread.start()
    thread.join()
    if failed:
        exc = failed[0]
        if isinstance(exc, OSError):
            raise os_error(exc, "open a packet socket on", ifname, netns) from exc
        raise exc
    return made[0]


class PeerNotifier:
    """Sends the announcements of a tap's addresses when asked (`notify`); counts what it sent."""

    def __init__(self, tap: Tap, mac: bytes) -> None:
        self._tap = tap
        self._mac = mac
        self._sock = _packet_socket(tap.name, tap.netns)
        self.sent = 0
        self.failed = 0

    def notify(self) -> None:
        """One gratuitous ARP per IPv4 address and one unsolicited NA per IPv6 address of the tap;
        a frame the kernel refuses is counted (`failed`) and logged, never raised."""
        try:
            frames = announcements(self._mac, self._tap.addresses())
        except HvuioError as err:
            self.failed += 1
            log.warning("peer notification: %s", err.message)
            return
        for frame in frames:
            try:
                self._sock.send(frame)
                self.sent += 1
            except OSError as exc:
                self.failed += 1
                log.warning("peer notification: sending a %d-byte frame on %s failed: %s",
                            len(frame), self._tap.name, exc.strerror)

    def close(self) -> None:
        self._sock.close()
