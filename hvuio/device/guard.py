"""The bind guard: which interfaces must not be taken from the kernel, because binding them would
cut this machine off (the default route) or end an SSH session (VMBUS.md §2.6).

What lives here: the interfaces holding an IPv4 or IPv6 default route (/proc/net/route,
/proc/net/ipv6_route), every local address of this network namespace with its interface (an
rtnetlink RTM_GETADDR dump: primary and secondary IPv4 addresses and every IPv6 address, not the
one IPv4 address per interface SIOCGIFADDR reports), the interfaces of SSH sessions (this
process's SSH_CONNECTION, and every established connection of an sshd process the kernel shows in
/proc/net/tcp{,6}, which `sudo` cannot hide), and `check_safe`, which raises `UnsafeBindError` for
an interface in either set.

What must not live here: binding itself (bind.py), sysfs reads (sysfs.py). Nothing here writes.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
from pathlib import Path
from typing import Final

from hvuio.errors import UnsafeBindError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# rtnetlink (linux/netlink.h, linux/rtnetlink.h, linux/if_addr.h)
_NLMSG_HDR: Final = struct.Struct("=IHHII")      # length, type, flags, seq, pid
_IFADDRMSG: Final = struct.Struct("=BBBBI")      # family, prefixlen, flags, scope, index
_RTATTR: Final = struct.Struct("=HH")            # length, type
_NLMSG_ERROR: Final = 2
_NLMSG_DONE: Final = 3
_RTM_NEWADDR: Final = 20
_RTM_GETADDR: Final = 22
_NLM_F_REQUEST: Final = 0x1
_NLM_F_DUMP: Final = 0x300
_IFA_ADDRESS: Final = 1
_IFA_LOCAL: Final = 2
_DUMP_TIMEOUT: Final = 5.0   # seconds; the kernel answers a dump at once


def default_route_interfaces(proc: Path = Path("/proc")) -> set[str]:
    """Interfaces holding an IPv4 or IPv6 default route in this network namespace."""
    out: set[str] = set()
    try:
        for line in (proc / "net" / "route").read_text().splitlines()[1:]:
            f = line.split()
            if len(f) >= 8 and f[1] == "00000000" and f[7] == "00000000" and int(f[3], 16) & 1:
                out.add(f[0])
    except OSError:
        pass
    try:
        for line in (proc / "net" / "ipv6_route").read_text().splitlines():
            f = line.split()
            if len(f) >= 10 and f[0] == "0" * 32 and f[1] == "00" and f[9] != "lo" and int(f[8], 16) & 1:
                out.add(f[9])
    except OSError:
        pass
    return out


def _align(n: int) -> int:
    return (n + 3) & ~3


def _parse_addresses(data: bytes) -> tuple[list[tuple[int, IPAddress]], bool]:
    """(interface index, local address) of the RTM_NEWADDR messages in one netlink read, and
    whether the dump ended (NLMSG_DONE). OSError for an NLMSG_ERROR with a nonzero errno."""
    out: list[tuple[int, IPAddress]] = []
    pos = 0
    while pos + _NLMSG_HDR.size <= len(data):
        length, kind, _flags, _seq, _pid = _NLMSG_HDR.unpack_from(data, pos)
        if length < _NLMSG_HDR.size or pos + length > len(data):
            break
        body = data[pos + _NLMSG_HDR.size: pos + length]
        pos += _align(length)
        if kind == _NLMSG_DONE:
            return out, True
        if kind == _NLMSG_ERROR:
            code = -struct.unpack_from("=i", body)[0] if len(body) >= 4 else 0
            if code:
                raise OSError(code, os.strerror(code))
            continue
        if kind != _RTM_NEWADDR or len(body) < _IFADDRMSG.size:
            continue
        family, _plen, _aflags, _scope, index = _IFADDRMSG.unpack_from(body)
        width = {socket.AF_INET: 4, socket.AF_INET6: 16}.get(family)
        attrs: dict[int, bytes] = {}
        apos = _IFADDRMSG.size
        while apos + _RTATTR.size <= len(body):
            alen, atype = _RTATTR.unpack_from(body, apos)
            if alen < _RTATTR.size or apos + alen > len(body):
                break
            attrs[atype] = body[apos + _RTATTR.size: apos + alen]
            apos += _align(alen)
        # IFA_LOCAL is the local address; IFA_ADDRESS is the peer of a point-to-point link when
        # IFA_LOCAL is present, else the local address (IPv6 sends IFA_ADDRESS alone)
        raw = attrs.get(_IFA_LOCAL, attrs.get(_IFA_ADDRESS))
        if width is not None and raw is not None and len(raw) == width:
            out.append((index, ipaddress.ip_address(raw)))
    return out, False


def local_addresses() -> list[tuple[str, IPAddress]]:
    """(interface, address) of every IPv4 and IPv6 address in this network namespace, secondary
    addresses included; [] when rtnetlink cannot be asked."""
    found: list[tuple[int, IPAddress]] = []
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE) as s:
            s.settimeout(_DUMP_TIMEOUT)
            request = _NLMSG_HDR.pack(_NLMSG_HDR.size + _IFADDRMSG.size, _RTM_GETADDR,
                                      _NLM_F_REQUEST | _NLM_F_DUMP, 1, 0) + _IFADDRMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
            s.sendto(request, (0, 0))
            done = False
            while not done:
                batch, done = _parse_addresses(s.recv(1 << 16))
                found += batch
    except OSError:
        return []
    out: list[tuple[str, IPAddress]] = []
    for index, address in found:
        try:
            out.append((socket.if_indextoname(index), address))
        except OSError:
            continue   # the interface went away during the dump
    return out


def interfaces_of_address(address: str) -> set[str]:
    """The local interfaces holding `address` (any of their addresses, IPv4 or IPv6; an IPv6
    address with a %scope names its interface), an IPv4-mapped IPv6 address as its IPv4 address."""
    text, _, scope = address.partition("%")
    try:
        ip: IPAddress = ipaddress.ip_address(text)
    except ValueError:
        return set()
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    holders = {name for name, local in local_addresses() if local == ip}
    if scope and isinstance(ip, ipaddress.IPv6Address):
        name = scope if not scope.isdigit() else _index_name(int(scope))
        if name:
            return {name}
    return holders


def _index_name(index: int) -> str:
    try:
        return socket.if_indextoname(index)
    except OSError:
        return ""


def ssh_interfaces(env: dict[str, str] | None = None) -> set[str]:
    """Interfaces of the current SSH session (SSH_CONNECTION's local address), if any."""
    conn = (os.environ if env is None else env).get("SSH_CONNECTION", "").split()
    return interfaces_of_address(conn[2]) if len(conn) >= 4 else set()


_SSHD_NAMES: Final = ("sshd", "sshd-session")   # OpenSSH 9.8+ runs sessions as sshd-session
_TCP_ESTABLISHED: Final = "01"


def _hex_address(text: str) -> str | None:
    """A /proc/net/tcp{,6} address field ("0100007F:0016") as an IP address string."""
    host = text.split(":")[0]
    try:
        raw = bytes.fromhex(host)
    except ValueError:
        return None
    if len(raw) not in (4, 16):
        return None
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))   # host-order 32-bit words
    return str(ipaddress.ip_address(words))


def _sshd_socket_inodes(proc: Path) -> set[str]:
    inodes: set[str] = set()
    try:
        pids = [e for e in os.listdir(proc) if e.isdigit()]
    except OSError:
        return inodes
    for pid in pids:
        try:
            if (proc / pid / "comm").read_text().strip() not in _SSHD_NAMES:
                continue
            fds = os.listdir(proc / pid / "fd")
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(proc / pid / "fd" / fd)
            except OSError:
                continue
            if link.startswith("socket:[") and link.endswith("]"):
                inodes.add(link[8:-1])
    return inodes


def ssh_session_interfaces(proc: Path = Path("/proc")) -> set[str]:
    """Interfaces whose addresses hold an established sshd connection, from the kernel's view
    (sshd's sockets in /proc/net/tcp{,6}): what `sudo` (which drops SSH_CONNECTION) cannot hide."""
    inodes = _sshd_socket_inodes(proc)
    out: set[str] = set()
    if not inodes:
        return out
    for table in ("tcp", "tcp6"):
        try:
            lines = (proc / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if len(f) >= 10 and f[3] == _TCP_ESTABLISHED and f[9] in inodes:
                address = _hex_address(f[1])
                if address is not None:
                    out |= interfaces_of_address(address)
    return out


def check_safe(netdevs: list[str], env: dict[str, str] | None = None, proc: Path = Path("/proc")) -> None:
    """UnsafeBindError when one of `netdevs` carries the default route or an SSH session (this
    process's, or any sshd connection the kernel shows) on any of its addresses."""
    routes = default_route_interfaces(proc)
    for name in netdevs:
        if name in routes:
            raise UnsafeBindError(f"interface {name} holds the default route; binding it would cut this machine off")
    sessions = ssh_session_interfaces(proc) | ssh_interfaces(env)
    for name in netdevs:
        if name in sessions:
            raise UnsafeBindError(f"interface {name} carries an SSH session; binding it would end the session")
