"""The guest-side tap netdev: our own /dev/net/tun fd, configured through pyroute2.

What lives here:
  * `Tap` — opens /dev/net/tun itself (TUNSETIFF with IFF_TAP | IFF_NO_PI, optionally
    IFF_VNET_HDR and IFF_MULTI_QUEUE), keeps that fd non-blocking, and uses pyroute2's `IPRoute`
    only for configuration: MAC, MTU, moving the link into a named network namespace, admin state,
    addresses (added, and read back with their flags) and (as a fallback) carrier.
  * `TunOffload`, the TUNSETOFFLOAD bits a tap is opened with (and `set_offload` changes on
    every queue), and `set_queues`, which attaches or detaches queues of a multi-queue tap
    (TUNSETQUEUE) when a NIC re-initialised on the same tap has fewer channels.
  * The netlink plumbing (sockets in a namespace, waiting for a link change, the errno -> error
    mapping `netlink_error` / `os_error`, re-exported here) is hvuio/netdev/netlink.py's.

What must not live here: packet processing, and anything of the protocol (which offload bits a
NIC gets is hvuio/offloads.py's decision; this module applies them). The hot path (C,
`_native/rx.c` / `tx.c`) reads and writes the fd returned by `Tap.fileno()` directly;
`read_frame` / `write_frame` are helpers for tests and the emulator's slow path.

With hvuio/netdev/netlink.py and hvuio/netdev/vfpath.py (the VF's tc rules), the only modules
in hvuio that import pyroute2.

Frame format on the fd
----------------------
With ``vnet_hdr=True`` (the default) every read returns, and every write must supply, one frame as

    [virtio_net_hdr_v1, 12 bytes, little-endian][Ethernet frame: dst, src, type/len, payload]

    offset size field
         0    1 flags        (VIRTIO_NET_HDR_F_NEEDS_CSUM=1, F_DATA_VALID=2)
         1    1 gso_type     (0 = none; only value used while offloads are off)
         2    2 hdr_len
         4    2 gso_size
         6    2 csum_start
         8    2 csum_offset
        10    2 num_buffers  (the kernel does not fill it on read; ignore it; write 0)

TUNSETVNETHDRSZ is set to 12 (sizeof virtio_net_hdr_mrg_rxbuf) and TUNSETVNETLE to 1, so the
layout does not depend on the host's byte order. Offloads are TUNSETOFFLOAD(`offload`), 0 by
default: the kernel then hands us complete, checksummed, non-GSO frames (gso_type 0, flags 0 or
DATA_VALID) and we write headers of all zeros. With TUN_F_CSUM (and TUN_F_TSO4/TUN_F_TSO6; the
`TunOffload` flags) the kernel may hand over frames with NEEDS_CSUM (csum_start/csum_offset;
the checksum field holds the pseudo-header sum) and TCP GSO super-frames (gso_type TCPV4 = 1 /
TCPV6 = 4, gso_size = MSS) up to 64 KiB; the data path maps them to RNDIS checksum/LSO
per-packet info (_native/tx.c), and writes DATA_VALID / NEEDS_CSUM / GSO headers for what the
host verified or coalesced (rx.c).
The Ethernet frame carries no FCS. With ``vnet_hdr=False`` the fd
carries bare Ethernet frames.

Carrier follows the NIC's RNDIS link state: `set_carrier` uses the TUNSETCARRIER ioctl (in Linux
since 2018); on kernels without it, carrier off is emulated by setting the link administratively
down (and writes then fail with EIO, reported as a dropped frame).
"""

from __future__ import annotations

import enum
import errno
import fcntl
import ipaddress
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from pyroute2.netlink.exceptions import NetlinkError

from hvuio.errors import DeviceNotFoundError, PlatformError, UsageError
from hvuio.netdev.netlink import (IFNAMSIZ, NAME_PREFIX, NETNS_RUN_DIR, check_ifname, check_mac, check_netns_name,
                                  drop_unclaimed, format_mac, iproute, link_exists, lookup, move_link,
                                  netlink_error, os_error, parse_mac, random_ifname, wait_link_event)

__all__ = ["LinkState", "NETNS_RUN_DIR", "Tap", "TunOffload", "check_ifname", "check_mac", "check_mtu",
           "check_netns_name", "format_mac", "netlink_error", "os_error", "parse_mac", "random_ifname"]

TUN_PATH = "/dev/net/tun"


def _iow(kind: str, nr: int, size: int = 4) -> int:
    """Linux _IOW(kind, nr, size): direction write (1) << 30 | size << 16 | type << 8 | nr."""
    return (1 << 30) | (size << 16) | (ord(kind) << 8) | nr


# ioctl numbers from include/uapi/linux/if_tun.h (all take an int / unsigned int argument).
TUNSETIFF = _iow("T", 202)
TUNSETOFFLOAD = _iow("T", 208)
TUNSETVNETHDRSZ = _iow("T", 216)
TUNSETVNETLE = _iow("T", 220)
TUNSETCARRIER = _iow("T", 226)
TUNSETQUEUE = _iow("T", 217)

IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
IFF_MULTI_QUEUE = 0x0100
IFF_ATTACH_QUEUE = 0x0200  # TUNSETQUEUE flags (include/uapi/linux/if_tun.h)
IFF_DETACH_QUEUE = 0x0400
#: most queues of one tap (the kernel's MAX_TAP_QUEUES is 256; a NIC has at most 64 channels)
MAX_QUEUES = 64


class TunOffload(enum.IntFlag):
    """TUNSETOFFLOAD bits (include/uapi/linux/if_tun.h TUN_F_*): what the kernel may hand the tap
    unfinished. hvuio/offloads.py derives them from what the host granted."""

    CSUM = 0x01  # TUN_F_CSUM: partial checksums (NEEDS_CSUM)
    TSO4 = 0x02  # TUN_F_TSO4: TCP GSO over IPv4
    TSO6 = 0x04  # TUN_F_TSO6: TCP GSO over IPv6


#: Every TunOffload bit a tap of ours accepts.
TUN_OFFLOAD_SUPPORTED = TunOffload.CSUM | TunOffload.TSO4 | TunOffload.TSO6

IFF_UP = 0x1  # link flag (include/uapi/linux/if.h)

VNET_HDR_LEN = 12  # sizeof(struct virtio_net_hdr_mrg_rxbuf) == sizeof(virtio_net_hdr_v1)
ETH_HLEN = 14
VLAN_HLEN = 4
MIN_MTU = 68  # ETH_MIN_MTU, the smallest MTU the kernel accepts on a tap
MAX_MTU = 65535  # tun's MAX_MTU
# Largest read: 64 KiB frame plus Ethernet+VLAN header plus the vnet header.
READ_SIZE = VNET_HDR_LEN + ETH_HLEN + VLAN_HLEN + 65535
# How long to wait for a link-state change the kernel applies asynchronously (linkwatch runs
# within about a second); reaching it means something is wrong, not slow.
LINK_WAIT_TIMEOUT = 5.0

_ZERO_VNET_HDR = bytes(VNET_HDR_LEN)
_OPER_UP = ("UP", "UNKNOWN")
_OPER_DOWN = ("DOWN", "LOWERLAYERDOWN", "NOTPRESENT")


@dataclass(frozen=True, slots=True)
class LinkState:
    """A snapshot of the link as the kernel reports it (RTM_GETLINK)."""

    index: int
    name: str
    mac: bytes
    mtu: int
    admin_up: bool
    carrier: bool
    operstate: str


def check_mtu(mtu: int) -> None:
    if not MIN_MTU <= mtu <= MAX_MTU:
        raise UsageError(f"MTU {mtu} is outside the range a tap accepts ({MIN_MTU}..{MAX_MTU})")


class Tap:
    """One tap interface whose fd this process owns. Build it with `Tap.open`.

    The link exists while the fd is open (it is never made persistent); `close()` removes it.
    """

    def __init__(
        self,
        fd: int,
        name: str,
        index: int,
        netns: str | None,
        vnet_hdr: bool,
        multi_queue: bool,
        ipr: Any,
    ) -> None:
        self._fd = fd
        self._name = name
        self._index = index
        self._netns = netns
        self._vnet_hdr = vnet_hdr
        self._multi_queue = multi_queue
        #: the fds of queues 1.. of a multi-queue tap (queue 0 is `fileno()`), each non-blocking
        self._extra: list[int] = []
        self._ipr = ipr
        self._offload = TunOffload(0)
        self._carrier_ioctl = True  # cleared when the kernel lacks TUNSETCARRIER
        self._carrier = True

    # ---------------------------------------------------------------- construction
    @classmethod
    def open(
        cls,
        name: str | None,
        mac: bytes,
        mtu: int,
        netns: str | None = None,
        vnet_hdr: bool = True,
        multi_queue: bool = False,
        offload: TunOffload = TunOffload(0),
        queues: int = 1,
    ) -> Tap:
        """Create tap `name` (random "hvu-…" name if None), set MAC and MTU, move it into `netns`.

        `offload`: TUNSETOFFLOAD bits (TunOffload CSUM | TSO4 | TSO6; needs `vnet_hdr`).
        `queues` > 1: an IFF_MULTI_QUEUE tap with that many queue fds (`queue_fds`), all attached
        before the link moves (TUNSETIFF attaches by name in the opener's namespace); the kernel
        gives each flow one queue (tun's flow steering: the queue the flow was last written on).
        The link is left administratively down with carrier on; call `up()`.
        """
        bits = int(offload)
        if bits & ~int(TUN_OFFLOAD_SUPPORTED) or (bits and not vnet_hdr) or (
                bits & (TunOffload.TSO4 | TunOffload.TSO6) and not bits & TunOffload.CSUM):
            raise UsageError(f"tap offload bits {bits:#x}: only TUN_F_CSUM/TSO4/TSO6, TSO needs CSUM, "
                             f"and both need the vnet header")
        if not 1 <= queues <= MAX_QUEUES:
            raise UsageError(f"tap queues {queues} outside [1, {MAX_QUEUES}]")
        multi_queue = multi_queue or queues > 1
        final = random_ifname() if name is None else name
        check_ifname(final)
        check_mac(mac)
        check_mtu(mtu)
        if netns is not None:
            check_netns_name(netns)
            if not os.path.exists(os.path.join(NETNS_RUN_DIR, netns)):
                raise UsageError(f"network namespace {netns!r} does not exist", "Create it with 'ip netns add'.")
        # In the current namespace the tap is created under its final name; when it is to move,
        # under a random temporary name, then renamed in the same RTM_SETLINK that moves it.
        create_name = final if netns is None else random_ifname(NAME_PREFIX + "t")
        flags = IFF_TAP | IFF_NO_PI
        if vnet_hdr:
            flags |= IFF_VNET_HDR
        if multi_queue:
            flags |= IFF_MULTI_QUEUE

        root_ipr = iproute(None, final)
        fd = -1
        extra: list[int] = []
        ipr: Any = None
        try:
            if netns is None and lookup(root_ipr, create_name, None) is not None:
                raise netlink_error(errno.EEXIST, "create tap", create_name)
            fd = _open_tun(create_name)
            ifr = struct.pack(f"{IFNAMSIZ}sH22x", create_name.encode(), flags)
            try:
                _attach(fd, ifr, vnet_hdr, bits)
            except OSError as exc:
                raise os_error(exc, "create tap", create_name) from exc
            for _ in range(queues - 1):
                extra.append(_open_tun(create_name))
                try:
                    _attach(extra[-1], ifr, vnet_hdr, bits)
                except OSError as exc:
                    raise os_error(exc, "attach a tap queue", create_name) from exc
            index = lookup(root_ipr, create_name, None)
            if index is None:
                raise DeviceNotFoundError(f"tap {create_name!r} vanished right after it was created")
            if netns is not None:
                index = move_link(root_ipr, index, create_name, final, netns)
                ipr = iproute(netns, final)
            else:
                ipr, root_ipr = root_ipr, None
            tap = cls(fd, final, index, netns, vnet_hdr, multi_queue, ipr)
            tap._extra, extra = extra, []
            tap._offload = TunOffload(bits)
            tap._set(address=format_mac(mac), mtu=mtu, action="set MAC and MTU")
            return tap
        except BaseException:
            for q in extra:
                os.close(q)
            if fd >= 0:
                os.close(fd)  # not persistent: this removes the link wherever it is now
            if ipr is not None:
                ipr.close()
            raise
        finally:
            if root_ipr is not None:
                root_ipr.close()

    # ---------------------------------------------------------------- properties
    @property
    def name(self) -> str:
        return self._name

    @property
    def index(self) -> int:
        return self._index

    @property
    def netns(self) -> str | None:
        return self._netns

    @property
    def vnet_hdr(self) -> bool:
        return self._vnet_hdr

    @property
    def offload(self) -> TunOffload:
        """The TUNSETOFFLOAD bits in effect."""
        return self._offload

    @property
    def multi_queue(self) -> bool:
        return self._multi_queue

    @property
    def queue_fds(self) -> list[int]:
        """The fd of every queue, queue 0 (`fileno()`) first."""
        self._check_open()
        return [self._fd, *self._extra]

    @property
    def carrier(self) -> bool:
        """The carrier last requested with `set_carrier` (on after `open`)."""
        return self._carrier

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def fileno(self) -> int:
        """The tap fd (non-blocking); frame format in the module docstring."""
        self._check_open()
        return self._fd

    # ---------------------------------------------------------------- configuration
    def state(self) -> LinkState:
        """The link as the kernel reports it now."""
        self._check_open()
        try:
            msg = self._ipr.link("get", index=self._index)[0]
        except NetlinkError as exc:
            raise netlink_error(exc.code, "read state", self._name, self._netns) from exc
        finally:
            drop_unclaimed(self._ipr)
        return LinkState(
            index=self._index,
            name=str(msg.get_attr("IFLA_IFNAME")),
            mac=parse_mac(str(msg.get_attr("IFLA_ADDRESS"))),
            mtu=int(msg.get_attr("IFLA_MTU")),
            admin_up=bool(msg["flags"] & IFF_UP),
            carrier=bool(msg.get_attr("IFLA_CARRIER")),
            operstate=str(msg.get_attr("IFLA_OPERSTATE")),
        )

    def set_mac(self, mac: bytes) -> None:
        check_mac(mac)
        self._set(address=format_mac(mac), action="set MAC")

    def set_mtu(self, mtu: int) -> None:
        check_mtu(mtu)
        self._set(mtu=mtu, action="set MTU")

    def set_offload(self, offload: TunOffload) -> None:
        """TUNSETOFFLOAD `offload` on every queue (a NIC re-initialised on this tap may have been
        granted other offloads than the one it was opened for)."""
        self._check_open()
        if offload and not self._vnet_hdr:
            raise UsageError("tap offload bits need the vnet header")
        for fd in self.queue_fds:
            try:
                fcntl.ioctl(fd, TUNSETOFFLOAD, int(offload))
            except OSError as exc:
                raise os_error(exc, "set offloads", self._name, self._netns) from exc
        self._offload = TunOffload(offload)

    def set_queues(self, active: int) -> None:
        """Attach queues [0, active) and detach the rest (TUNSETQUEUE), so the kernel steers no
        flow to a queue nobody reads (a NIC re-initialised on this tap with fewer channels)."""
        fds = self.queue_fds
        if not 1 <= active <= len(fds):
            raise UsageError(f"tap {self._name!r} has {len(fds)} queues, {active} cannot be active")
        if not self._multi_queue:
            return
        for k, fd in enumerate(fds):
            flags = IFF_ATTACH_QUEUE if k < active else IFF_DETACH_QUEUE
            try:
                fcntl.ioctl(fd, TUNSETQUEUE, struct.pack(f"{IFNAMSIZ}xH22x", flags))
            except OSError as exc:
                if exc.errno != errno.EINVAL:  # EINVAL: already attached / detached
                    raise os_error(exc, "attach or detach a tap queue", self._name, self._netns) from exc

    def up(self) -> None:
        """Set the link administratively up and wait until the kernel reports it."""
        self._set(state="up", action="set up")
        self.wait_for(lambda s: s.admin_up and (s.operstate in _OPER_UP) == s.carrier, "link up")

    def down(self) -> None:
        self._set(state="down", action="set down")
        self.wait_for(lambda s: not s.admin_up and s.operstate in _OPER_DOWN, "link down")

    def add_address(self, cidr: str) -> None:
        """Add an IPv4 or IPv6 address given as "address/prefix" (e.g. "198.18.0.2/24")."""
        self._check_open()
        try:
            iface = ipaddress.ip_interface(cidr)
        except ValueError:
            raise UsageError(f"address {cidr!r} is not an IP address with a /prefix") from None
        if "/" not in cidr:
            raise UsageError(f"address {cidr!r} needs a /prefix length")
        try:
            self._ipr.addr("add", index=self._index, address=str(iface.ip), prefixlen=iface.network.prefixlen)
        except NetlinkError as exc:
            if exc.code == errno.EEXIST:
                raise UsageError(f"address {cidr} is already on interface {self._name!r}") from exc
            raise netlink_error(exc.code, f"add address {cidr}", self._name, self._netns) from exc
        finally:
            drop_unclaimed(self._ipr)

    def addresses(self) -> list[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]]:
        """The IPv4 (local) and IPv6 addresses on the tap with their IFA flags, as netlink has them."""
        self._check_open()
        try:
            msgs = self._ipr.get_addr(index=self._index)
        except NetlinkError as exc:
            raise netlink_error(exc.code, "read addresses", self._name, self._netns) from exc
        finally:
            drop_unclaimed(self._ipr)
        out: list[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]] = []
        for msg in msgs:
            text = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
            if text:
                out.append((ipaddress.ip_address(str(text)), int(msg.get_attr("IFA_FLAGS") or msg["flags"])))
        return out

    def set_carrier(self, up: bool) -> None:
        """Make the tap's carrier follow the NIC's link state; waits until the kernel shows it."""
        self._check_open()
        if self._carrier_ioctl:
            try:
                fcntl.ioctl(self._fd, TUNSETCARRIER, struct.pack("i", 1 if up else 0))
            except OSError as exc:
                if exc.errno not in (errno.EINVAL, errno.ENOTTY):
                    raise os_error(exc, "set carrier", self._name, self._netns) from exc
                self._carrier_ioctl = False
        self._carrier = up
        if not self._carrier_ioctl:
            # Fallback for kernels without TUNSETCARRIER: no carrier == administratively down.
            if up:
                self.up()
            else:
                self.down()
            return
        if up:
            self.wait_for(lambda s: s.carrier and (not s.admin_up or s.operstate in _OPER_UP), "carrier on")
        else:
            self.wait_for(lambda s: not s.carrier and (not s.admin_up or s.operstate in _OPER_DOWN), "carrier off")

    def wait_for(self, check: Callable[[LinkState], bool], what: str, timeout: float = LINK_WAIT_TIMEOUT) -> LinkState:
        """Wait until `check(state())` holds, woken by RTM_NEWLINK notifications (no sleeping).

        The monitor socket subscribes before the state is re-read, so a change that happens in
        between is not missed. Raises PlatformError after `timeout` seconds.
        """
        last: list[LinkState] = []

        def done() -> bool:
            last[:] = [self.state()]
            return check(last[0])

        def why() -> str:
            st = last[0]
            return (
                f"interface {self._name!r}: {what} not reached within {timeout:g} s "
                f"(admin_up={st.admin_up}, carrier={st.carrier}, operstate={st.operstate})"
            )

        wait_link_event(self._netns, self._name, done, why, timeout)
        return last[0]

    # ---------------------------------------------------------------- frames (tests, slow path)
    def read_frame(self) -> bytes | None:
        """One Ethernet frame from the fd (vnet header stripped), or None when none is queued."""
        self._check_open()
        try:
            data = os.read(self._fd, READ_SIZE)
        except BlockingIOError:
            return None
        except OSError as exc:
            raise os_error(exc, "read frame", self._name, self._netns) from exc
        if self._vnet_hdr:
            if len(data) < VNET_HDR_LEN:
                raise PlatformError(f"tap {self._name!r} returned {len(data)} bytes, less than the vnet header")
            return data[VNET_HDR_LEN:]
        return data

    def write_frame(self, frame: bytes) -> bool:
        """Hand one Ethernet frame to the kernel as if received on the link.

        Returns False when the kernel dropped it for a transient reason (link down: EIO; queue
        full: EAGAIN/ENOBUFS). A frame shorter than an Ethernet header or longer than MTU plus
        Ethernet and VLAN headers is a caller bug and raises UsageError.
        """
        self._check_open()
        if len(frame) < ETH_HLEN or len(frame) > MAX_MTU + ETH_HLEN + VLAN_HLEN:
            raise UsageError(f"frame of {len(frame)} bytes is not a valid Ethernet frame")
        try:
            if self._vnet_hdr:
                os.writev(self._fd, (_ZERO_VNET_HDR, frame))
            else:
                os.write(self._fd, frame)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as exc:
            if exc.errno in (errno.EIO, errno.ENOBUFS, errno.EAGAIN):
                return False
            raise os_error(exc, "write frame", self._name, self._netns) from exc
        return True

    # ---------------------------------------------------------------- teardown
    def close(self) -> None:
        """Close the fd, which removes the link (it is not persistent). Idempotent."""
        if self._fd < 0:
            return
        for q in self._extra:
            os.close(q)
        self._extra = []
        fd, self._fd = self._fd, -1
        os.close(fd)
        try:
            # The kernel unregisters the link on the last close of its fd; a forked helper
            # (pyroute2 creates namespace sockets in a child) may briefly hold a copy.
            wait_link_event(
                self._netns,
                self._name,
                lambda: not link_exists(self._ipr, self._index),
                lambda: f"tap {self._name!r} still exists {LINK_WAIT_TIMEOUT:g} s after its fd was closed",
                LINK_WAIT_TIMEOUT,
            )
        finally:
            self._ipr.close()

    def __enter__(self) -> Tap:
        return self

    def __exit__(self, t: type[BaseException] | None, v: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        where = f" netns={self._netns}" if self._netns else ""
        return f"<Tap {self._name} index={self._index}{where}{' closed' if self.closed else ''}>"

    # ---------------------------------------------------------------- internals
    def _check_open(self) -> None:
        if self._fd < 0:
            raise UsageError(f"tap {self._name!r} is closed")

    def _set(self, action: str, **kwargs: Any) -> None:
        self._check_open()
        try:
            self._ipr.link("set", index=self._index, **kwargs)
        except NetlinkError as exc:
            raise netlink_error(exc.code, action, self._name, self._netns) from exc
        finally:
            drop_unclaimed(self._ipr)


def _open_tun(ifname: str) -> int:
    try:
        return os.open(TUN_PATH, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise PlatformError(
            f"{TUN_PATH} does not exist, so tap {ifname!r} cannot be created",
            "Load the tun module ('modprobe tun') or run in a container with /dev/net/tun.",
        ) from None
    except OSError as exc:
        if exc.errno == errno.ENODEV:
            raise PlatformError(f"{TUN_PATH} exists but the tun driver is not loaded", "Run 'modprobe tun'.") from None
        raise os_error(exc, f"open {TUN_PATH} for", ifname) from exc


def _attach(fd: int, ifr: bytes, vnet_hdr: bool, offload: int) -> None:
    """TUNSETIFF (create the tap, or attach one more queue of a multi-queue tap), then the vnet
    header size, its byte order and the offload bits on that fd."""
    fcntl.ioctl(fd, TUNSETIFF, ifr)
    if vnet_hdr:
        fcntl.ioctl(fd, TUNSETVNETHDRSZ, struct.pack("i", VNET_HDR_LEN))
        _set_vnet_le(fd)
    fcntl.ioctl(fd, TUNSETOFFLOAD, offload)  # see the module docstring


def _set_vnet_le(fd: int) -> None:
    """Make the vnet header little-endian explicitly (it already is on little-endian hosts)."""
    try:
        fcntl.ioctl(fd, TUNSETVNETLE, struct.pack("i", 1))
    except OSError:
        import sys

        if sys.byteorder != "little":
            raise


