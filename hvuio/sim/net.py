"""The network behind the emulated host: where frames the guest transmits go, and where frames
the guest receives come from.

What lives here:
  * `HostNetwork` — the "wire side": a tap (default "hvunet0", with an IP address) in a network
    namespace of its own ("hvu-net-<random>"), so ping/TCP from the guest tap's namespace reach
    a real kernel stack once the emulator moves frames between the two.
  * `FrameNetwork` — the interface every network gives the sim host, and `NetCounters` — frames/
    bytes each way and drops; `software_frames` / `write_segments` for a network without GSO.
  * `VethVf` — one NIC's VF path for accelerated networking (`sim start --wire --vf`): a veth
    pair whose guest end carries the NIC's MAC in the guest's namespace (admin down, as a VF netdev
    appears; the guest finds it by MAC as Linux and DPDK do) and whose host end, in the host
    network's namespace, the host reads and writes through a packet socket. The host end is a port
    of that network, not an interface of its stack: ARP is off on it, so the guest only ever
    learns the tap's MAC for the network's address, whichever path it resolved it on (a veth that
    answered ARP would give its own MAC, which a new VF path changes). Same interface as the
    networks: the host writes the frames it sends over the VF and reads what the guest sent on it.
    `VfPath` is that interface with the guest end's name, which SimHost gives the kernel's tree as
    the VF netdev of the NIC's PCI pass-through device.

The sim host calls `write_frame` for every frame the guest transmits and delivers every frame
`read_frames` returns to the guest; it selects on `fileno()`.

Offloads (hvuio.sim.host.offload): `HostNetwork` opens its tap with IFF_VNET_HDR and, with `offload=True`
(the default), TUNSETOFFLOAD(TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6), so the host namespace's kernel
hands over 64 KiB TCP GSO frames and frames with a partial checksum, and accepts them. A frame the
guest sent with LSO arrives here as a `GsoFrame` (bytes + virtio_net_hdr): written with its header
(the kernel segments it, as the vswitch/NIC would), or segmented in software where the network has
no GSO (pcap.py, a tap without offloads). Frames read are segmented / checksum-completed in software
unless `deliver_gso` is set, in which case GSO frames are returned as `GsoFrame`s for a host that
delivers them itself (vRSC or segmentation in HostNvsp). The C fast path reads and writes the tap fd
itself with the same header (`vnet_hdr` / `offload` tell it how the fd is set up).

What must not live here: pcap files (`PcapNetwork`, the same interface for machines without
namespaces, and its writer and reader: pcap.py), NVSP/RNDIS (hvuio.sim.host), ring code, pyroute2
(hvuio/netdev/tap.py and netlink.py own it).
Unlike the rest of sim/, this module imports hvuio.netdev.tap and hvuio.netdev.netns: it is the emulator's
one seam to the host kernel's network stack.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import secrets
import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol

from hvuio.netdev import netns as netns_mod
from hvuio.errors import UsageError
from hvuio.sim.host import offload as ho
from hvuio.sim.host.profile import MAX_NDIS_MTU
from hvuio.sim.host.wire import HostWireError
from hvuio.netdev.tap import ETH_HLEN, TUNSETOFFLOAD, VLAN_HLEN, Tap

# RFC 2544 benchmarking range: never routed, and only ever configured inside our own namespaces.
DEFAULT_HOST_ADDRESS = "198.18.0.1/24"
DEFAULT_GUEST_ADDRESS = "198.18.0.2/24"
DEFAULT_IFNAME = "hvunet0"
DEFAULT_MTU = 1500
# Frames read per call when the caller passes no limit: one batch per wake-up (STYLE §13).
DEFAULT_BATCH = 64


@dataclass(slots=True)
class NetCounters:
    """to_net_*: frames the guest sent towards the network; from_net_*: frames for the guest."""

    to_net_frames: int = 0
    to_net_bytes: int = 0
    to_net_drops: int = 0
    from_net_frames: int = 0
    from_net_bytes: int = 0
    from_net_drops: int = 0

    def add_pump(self, d: Mapping[str, int]) -> None:
        """Count what the host's C pump moved (its counter deltas `d`, hvuio.sim.vsp.fastpath)
        directly between the tap and the guest, as if it had gone through this network."""
        self.to_net_frames += d["tx_frames"]
        self.to_net_bytes += d["tx_bytes"]
        self.to_net_drops += d["tx_net_errors"]
        self.from_net_frames += d["rx_frames"] + d["rx_dropped_no_section"] + d["rx_dropped_too_big"] + \
            d["rx_dropped_ring_full"]
        self.from_net_bytes += d["rx_bytes"]


class FrameNetwork(Protocol):
    """What the sim host needs from the network behind it."""

    counters: NetCounters

    def fileno(self) -> int: ...
    def read_frames(self, max_frames: int = DEFAULT_BATCH) -> list[bytes]: ...
    def write_frame(self, frame: bytes) -> bool: ...
    def close(self) -> None: ...


class VfPath(FrameNetwork, Protocol):
    """A NIC's VF path (`VethVf`): a FrameNetwork whose guest end is the netdev `guest_ifname`,
    the name the emulated kernel's tree gives the VF."""

    guest_ifname: str


def random_mac() -> bytes:
    """A random locally administered unicast MAC (02:xx:xx:xx:xx:xx)."""
    return b"\x02" + secrets.token_bytes(5)


def _frame_ok(frame: bytes, mtu: int) -> bool:
    return ETH_HLEN <= len(frame) <= mtu + ETH_HLEN + VLAN_HLEN


def software_frames(frame: bytes) -> list[bytes]:
    """What a network without GSO puts on the wire for `frame`: a GsoFrame segmented (TCP) or its
    checksum completed; any other frame as it is. HostWireError for a GSO frame that does not parse."""
    if not isinstance(frame, ho.GsoFrame):
        return [frame]
    vnet = frame.vnet
    if vnet.gso_type & ~ho.GSO_ECN in (ho.GSO_TCPV4, ho.GSO_TCPV6):
        return ho.segment_tcp(frame, vnet)
    if vnet.flags & ho.VNET_F_NEEDS_CSUM:
        return [ho.complete_csum(frame, vnet)]
    return [bytes(frame)]


def write_segments(frame: bytes, write: Callable[[bytes], bool], counters: NetCounters) -> bool:
    """`frame` as software_frames makes it, each piece through `write`; a GSO frame that does not
    parse is a counted drop."""
    try:
        segments = software_frames(frame)
    except HostWireError:
        counters.to_net_drops += 1
        return False
    return all([write(seg) for seg in segments])  # a list: every segment is tried


READ_SIZE = ho.VNET_HDR_LEN + ho.MAX_GSO_FRAME


class HostNetwork:
    """A tap with an address in a namespace the emulator owns; see the module docstring.

    Build with `HostNetwork.create()`; `close()` (or the `with` block) removes the tap and, if
    this object created it, the namespace.
    """

    def __init__(self, tap: Tap, netns: str, owns_netns: bool, address: str, mtu: int,
                 offload: bool = False) -> None:
        self._tap = tap
        self._netns = netns
        self._owns_netns = owns_netns
        self._address = address
        self._mtu = mtu
        self.offload = offload  # TUNSETOFFLOAD(CSUM | TSO4 | TSO6) is in force on the tap
        self.deliver_gso = False  # read_frames may return GsoFrames (the reader segments/coalesces)
        self.counters = NetCounters()
        self.gso_written = 0  # GsoFrames handed to the kernel whole
        self.gso_read = 0  # GSO / partial-checksum frames the kernel handed over

    @classmethod
    def create(
        cls,
        *,
        address: str = DEFAULT_HOST_ADDRESS,
        mac: bytes | None = None,
        mtu: int = DEFAULT_MTU,
        ifname: str = DEFAULT_IFNAME,
        netns: str | None = None,
        offload: bool = True,
    ) -> HostNetwork:
        """Make the wire side: tap `ifname` with `address` in `netns` (None: a new "hvu-net-…").

        The tap carries a virtio_net_hdr before every frame; with `offload` the kernel may hand over
        and accept GSO / partial-checksum frames (see the module docstring). Carrier is always on.
        """
        owns = netns is None
        ns = netns_mod.create("net", ipv6=False) if netns is None else netns
        try:
            tap = Tap.open(ifname, random_mac() if mac is None else mac, mtu, netns=ns, vnet_hdr=True)
            try:
                if offload:
                    try:
                        fcntl.ioctl(tap.fileno(), TUNSETOFFLOAD, ho.TUN_F_CSUM | ho.TUN_F_TSO4 | ho.TUN_F_TSO6)
                    except OSError:  # a tun driver without these offloads: frames stay MTU-sized
                        offload = False
                tap.up()
                tap.add_address(address)
            except BaseException:
                tap.close()
                raise
        except BaseException:
            if owns:
                netns_mod.delete(ns)
            raise
        return cls(tap, ns, owns, address, mtu, offload)

    @property
    def netns(self) -> str:
        return self._netns

    @property
    def ifname(self) -> str:
        return self._tap.name

    @property
    def address(self) -> str:
        """The wire side's address with prefix, e.g. "198.18.0.1/24"."""
        return self._address

    @property
    def mac(self) -> bytes:
        return self._tap.state().mac

    @property
    def tap(self) -> Tap:
        return self._tap

    def fileno(self) -> int:
        return self._tap.fileno()

    def read_frames(self, max_frames: int = DEFAULT_BATCH) -> list[bytes]:
        """Up to `max_frames` frames the network sent towards the guest; never blocks."""
        if max_frames < 1:
            raise UsageError(f"max_frames must be at least 1, got {max_frames}")
        frames: list[bytes] = []
        fd = self._tap.fileno()
        while len(frames) < max_frames:
            try:
                data = os.read(fd, READ_SIZE)
            except BlockingIOError:
                break
            frames.extend(self.tap_frames(data))
        return frames

    def tap_frames(self, data: bytes) -> list[bytes]:
        """The frames of one read from the tap (virtio_net_hdr + frame), counted: a GSO frame
        whole (deliver_gso) or as software segments; [] for a read too short or a GSO frame that
        does not parse (a counted drop). The host's C pump hands its reads for other channels
        (vRSS) back through here."""
        if len(data) < ho.VNET_HDR_LEN + ETH_HLEN:
            self.counters.from_net_drops += 1
            return []
        vnet = ho.Vnet.decode(data)
        frame: bytes = data[ho.VNET_HDR_LEN:]
        if vnet.gso_type or vnet.flags:
            self.gso_read += 1
            frame = ho.GsoFrame.make(frame, vnet)
            if not self.deliver_gso:  # frames_from_net counts what the reader gets
                try:
                    segments = software_frames(frame)
                except HostWireError:
                    self.counters.from_net_drops += 1
                    return []
                self.counters.from_net_frames += len(segments)
                self.counters.from_net_bytes += sum(len(f) for f in segments)
                return segments
        self.counters.from_net_frames += 1
        self.counters.from_net_bytes += len(frame)
        return [frame]

    def write_frame(self, frame: bytes) -> bool:
        """Deliver one frame the guest sent; False (and a counted drop) if it could not be.
        A GsoFrame goes to the kernel whole with its header (offload on) or segmented."""
        if isinstance(frame, ho.GsoFrame):
            if not self.offload:
                return self._write_all(frame)
            if not ETH_HLEN <= len(frame) <= ho.MAX_GSO_FRAME:
                self.counters.to_net_drops += 1
                return False
            ok = self._write_raw(frame.vnet.encode(), frame)
            self.gso_written += ok
        else:
            ok = _frame_ok(frame, self._mtu) and self._write_raw(bytes(ho.VNET_HDR_LEN), frame)
        if not ok:
            self.counters.to_net_drops += 1
            return False
        self.counters.to_net_frames += 1
        self.counters.to_net_bytes += len(frame)
        return True

    def _write_all(self, frame: bytes) -> bool:
        return write_segments(frame, self.write_frame, self.counters)

    def _write_raw(self, vnet: bytes, frame: bytes) -> bool:
        try:
            os.writev(self._tap.fileno(), (vnet, frame))
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as exc:
            if exc.errno in (errno.EIO, errno.ENOBUFS, errno.EAGAIN, errno.EINVAL):
                return False
            raise
        return True

    def close(self) -> None:
        try:
            self._tap.close()
        finally:
            if self._owns_netns:
                netns_mod.delete(self._netns)
                self._owns_netns = False

    def __enter__(self) -> HostNetwork:
        return self

    def __exit__(self, t: type[BaseException] | None, v: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


CLONE_NEWNET = 0x40000000
ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_VNET_HDR = 15
PACKET_OUTGOING = 4  # a packet socket's pkttype for frames the socket's own interface sent
PACKET_VNET_LEN = 10  # PACKET_VNET_HDR: struct virtio_net_hdr (no num_buffers)


def packet_socket_in(netns: str, ifname: str, vnet_hdr: bool = False) -> socket.socket:
    """A non-blocking AF_PACKET socket bound to `ifname`, created inside namespace `netns` (a
    socket keeps the namespace it was made in; setns only in a throw-away thread); with `vnet_hdr`
    every frame both ways carries a virtio_net_hdr first (PACKET_VNET_HDR)."""
    result: list[socket.socket | BaseException] = []

    def work() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(os.path.join(netns_mod.NETNS_RUN_DIR, netns), os.O_RDONLY | os.O_CLOEXEC)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns into {netns}")
            finally:
                os.close(fd)
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW | socket.SOCK_NONBLOCK, socket.htons(ETH_P_ALL))
            if vnet_hdr:
                sock.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
            sock.bind((ifname, ETH_P_ALL))
            result.append(sock)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            result.append(exc)

    t = threading.Thread(target=work, name="hvuio-sim-vf-socket")
    t.start()
    t.join()
    if isinstance(result[0], BaseException):
        raise result[0]
    return result[0]


#: MTU of the VF path's host end: the largest frame the emulated host carries, less its Ethernet
#: header ([OV] MAX_MTU 9216), so a guest that raises its VF's MTU with its NIC's is carried
VF_HOST_MTU = MAX_NDIS_MTU - ETH_HLEN


class VethVf:
    """One NIC's VF path: a veth pair between the guest's namespace and the host network's (see the
    module docstring). Build with `VethVf.create()`; `close()` deletes the pair."""

    def __init__(self, sock: socket.socket, host_netns: str, host_ifname: str, guest_ifname: str,
                 guest_netns: str | None) -> None:
        self._sock = sock
        self.host_netns, self.host_ifname = host_netns, host_ifname
        self.guest_ifname, self.guest_netns = guest_ifname, guest_netns
        self.counters = NetCounters()  # to_net: frames the guest sent on its VF; from_net: frames for it

    @classmethod
    def create(cls, *, guest_ifname: str, mac: bytes, host_netns: str, guest_netns: str | None = None,
               host_ifname: str | None = None) -> VethVf:
        """The pair: `guest_ifname` with `mac` in `guest_netns` (None: this process's namespace),
        admin down at a new netdev's MTU of 1500 (the guest sets its own, as Linux's
        netvsc_change_mtu sets the VF's); its peer `host_ifname` (default: a random name) up in
        `host_netns`, taking frames as large as the host carries (VF_HOST_MTU), with ARP off (see
        the module docstring)."""
        host_ifname = host_ifname or netns_mod.random_ifname("vf")
        for name in (guest_ifname, host_ifname):
            if len(name) >= netns_mod.IFNAMSIZ:
                raise UsageError(f"interface name {name!r} is longer than {netns_mod.IFNAMSIZ - 1} characters")
        target = guest_netns if guest_netns is not None else str(os.getpid())
        netns_mod.ip("-n", host_netns, "link", "add", host_ifname, "type", "veth", "peer", "name", guest_ifname,
                     "address", ":".join(f"{b:02x}" for b in mac), "netns", target)
        try:
            netns_mod.ip("-n", host_netns, "link", "set", "dev", host_ifname, "mtu", str(VF_HOST_MTU), "arp", "off")
            netns_mod.set_up(host_netns, host_ifname)
            sock = packet_socket_in(host_netns, host_ifname, vnet_hdr=True)
        except BaseException:
            netns_mod.ip("-n", host_netns, "link", "del", host_ifname, check=False)
            raise
        return cls(sock, host_netns, host_ifname, guest_ifname, guest_netns)

    def fileno(self) -> int:
        return self._sock.fileno()

    def read_frames(self, max_frames: int = DEFAULT_BATCH) -> list[bytes]:
        """Frames the guest sent on its VF (those the host itself wrote are skipped): a frame the
        guest's stack left to the VF's offloads (TSO, checksum: the veth takes them as a VF does)
        comes as a GsoFrame, which the network segments or completes as the VF's hardware would."""
        out: list[bytes] = []
        while len(out) < max_frames:
            try:
                data, addr = self._sock.recvfrom(PACKET_VNET_LEN + ho.MAX_GSO_FRAME)
            except (BlockingIOError, InterruptedError):
                break
            if addr[2] == PACKET_OUTGOING or len(data) < PACKET_VNET_LEN + ETH_HLEN:
                continue
            vnet = ho.Vnet.decode(data[:PACKET_VNET_LEN] + bytes(ho.VNET_HDR_LEN - PACKET_VNET_LEN))
            frame: bytes = data[PACKET_VNET_LEN:]
            if vnet.gso_type or vnet.flags & ho.VNET_F_NEEDS_CSUM:
                frame = ho.GsoFrame.make(frame, vnet)
            self.counters.to_net_frames += 1
            self.counters.to_net_bytes += len(frame)
            out.append(frame)
        return out

    def write_frame(self, frame: bytes) -> bool:
        """A frame for the guest over its VF (a guest end that is down drops it, as a VF would)."""
        for part in software_frames(frame):  # a VF gets wire-sized frames
            try:
                self._sock.send(bytes(PACKET_VNET_LEN) + part)
            except OSError:
                self.counters.from_net_drops += 1
                return False
            self.counters.from_net_frames += 1
            self.counters.from_net_bytes += len(part)
        return True

    def close(self) -> None:
        """Close the socket and delete the pair (both ends go with either)."""
        if self._sock.fileno() < 0:
            return
        self._sock.close()
        netns_mod.ip("-n", self.host_netns, "link", "del", self.host_ifname, check=False)
