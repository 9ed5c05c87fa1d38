"""NvspGuest: the guest side of NVSP on the primary netvsc channel, sans-IO.

What lives here: the NVSP machine (version negotiation, NDIS config and version, receive- and
send-buffer connect, subchannel allocation, datapath switch, the host's VF messages, teardown). The plumbing it shares
with RndisGuest (event queue, outstanding requests with deadlines, the ERROR rule) is
proto/machine.py's; NetvscGuest (proto/netvsc.py) composes the two machines for the NIC.

How it is driven (NetvscGuest does this; see hvuio/proto/events.py for Inbound/Outbound)::

    nvsp = NvspGuest(recv_buf=BufferGrant(gpadl, size), send_buf=BufferGrant(gpadl, size))
    send_all(nvsp.start())                       # INIT with the newest version
    on every packet for the primary whose trans_id nvsp.expects(), or that is in-band:
        send_all(nvsp.receive(Inbound(kind, trans_id, payload)))
        while (ev := nvsp.next_event()) is not NEED_DATA: handle(ev)
    on every loop turn: send_all(nvsp.tick(time.monotonic()))
    NvspReady -> NdisConfigured -> RecvBufReady -> SendBufReady (start RNDIS now)
    later: nvsp.request_subchannels(n), nvsp.switch_datapath(vf), nvsp.stop() (then close)

The sequence is Linux's `netvsc_connect_vsp`/`netvsc_init_buf` and DPDK's `hn_nvs_attach`:
INIT (one version per message, min == max, newest first; a failure status means "try the next");
then, for NVSP >= 2, NDIS config; then NDIS version; neither has a reply. Then receive-buffer
connect (reply 102) and send-buffer connect (reply 105). Subchannels (NVSP >= 5) are asked for
after RNDIS has read the RSS capabilities; a failure status to that request is no error but
`SubchannelsRefused` (the primary runs alone). Teardown sends revoke-receive-buffer then
revoke-send-buffer, neither answered; the caller then closes the channel (Linux
`netvsc_revoke_buf`, DPDK `hn_nvs_detach`).

What must not live here: rings, fds, clocks, sleeps, RNDIS parsing (hvuio/proto/rndis.py), the
routing between the two machines (hvuio/proto/netvsc.py).
"""

from __future__ import annotations

import ctypes
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from hvuio.errors import LocalProtocolError
from hvuio.proto import limits
from hvuio.proto.events import (
    BuffersRevoked, DatapathSwitched, HostDatapathSwitched, Inbound, InboundKind, IndirectionTable, NdisConfigured,
    NvspReady, Outbound, RecvBufReady, RecvBufSection, SendBufReady, SubchannelsGranted, SubchannelsRefused,
    VfAssociation, VfMessageDropped,
)
from hvuio.proto.machine import Machine, Pending, Reject
from hvuio.proto.states import NVSP_TRANSITIONS, NvspInput, NvspState, advance
from hvuio.wire import nvsp as wn

__all__ = ["BufferGrant", "NvspGuest", "default_ndis_capabilities", "rsc_ndis_capabilities", "with_sriov"]


@dataclass(frozen=True, slots=True)
class BufferGrant:
    """A guest buffer the kernel registered as a GPADL (uio map 3 = receive, map 4 = send)."""

    gpadl: int
    size: int

    def __post_init__(self) -> None:
        if not (0 < self.gpadl <= 0xFFFFFFFF):
            raise LocalProtocolError(f"GPADL handle {self.gpadl!r} is not a non-zero u32")
        if not (0 < self.size <= 0xFFFFFFFF):
            raise LocalProtocolError(f"buffer size {self.size!r} is not a non-zero u32")


def default_ndis_capabilities(version: int) -> int:
    """Capabilities announced in NDIS config for NVSP `version`.

    VLAN (ieee8021q) always, as Linux and DPDK do; TEAMING from NVSP 5, which Linux sets so the
    host sends link-speed indications. Not SRIOV: only a NIC that pairs with a VF and moves its
    traffic there may invite the host to offer one (`with_sriov`; Linux also leaves it clear in
    isolated guests). Not RSC: rsc_ndis_capabilities adds it when the caller wants RSC.
    """
    caps = wn.NdisConfigCap.IEEE8021Q
    if version >= wn.NvspVersion.V5:
        caps |= wn.NdisConfigCap.TEAMING
    return int(caps)


def rsc_ndis_capabilities(version: int) -> int:
    """default_ndis_capabilities plus RSC from NVSP 6.1, as Linux netvsc_connect_vsp announces it
    (capability.rsc = 1 for nvsp >= NVSP_PROTOCOL_VERSION_61): for a data path that assembles
    RSC fragments (_native/rx.c does)."""
    caps = default_ndis_capabilities(version)
    if version >= wn.NvspVersion.V61:
        caps |= int(wn.NdisConfigCap.RSC)
    return caps


def with_sriov(capabilities: Callable[[int], int]) -> Callable[[int], int]:
    """`capabilities` plus SRIOV (bit 2) from NVSP 5, as Linux negotiate_nvsp_ver and DPDK
    hn_nvs_conf_ndis announce it: the host may then offer a VF (netvsc spec B.1 item 37)."""
    def caps(version: int) -> int:
        extra = int(wn.NdisConfigCap.SRIOV) if version >= wn.NvspVersion.V5 else 0
        return capabilities(version) | extra
    return caps


#: Bytes of a host's type-129 message this guest reads: type and active_datapath.
_HOST_SWITCH_LEN = 8


# Reply type expected for each request type (None: a completion without payload).
_REPLY_TYPE: dict[int, int | None] = {
    wn.NvspType.INIT: wn.NvspType.INIT_COMPLETE,
    wn.NvspType.SEND_RECV_BUF: wn.NvspType.SEND_RECV_BUF_COMPLETE,
    wn.NvspType.SEND_SEND_BUF: wn.NvspType.SEND_SEND_BUF_COMPLETE,
    wn.NvspType.SUBCHANNEL: wn.NvspType.SUBCHANNEL,
    wn.NvspType.SWITCH_DATA_PATH: None,
}

_REPLY_STRUCT: dict[int, type[wn.NvspStruct]] = {
    wn.NvspType.INIT_COMPLETE: wn.NvspInitComplete,
    wn.NvspType.SEND_RECV_BUF_COMPLETE: wn.NvspRecvBufComplete,
    wn.NvspType.SEND_SEND_BUF_COMPLETE: wn.NvspSendBufComplete,
    wn.NvspType.SUBCHANNEL: wn.NvspSubchannelComplete,
}


def _status_name(status: int) -> str:
    try:
        return f"{status} ({wn.NvspStatus(status).name})"
    except ValueError:
        return f"{status:#x}"


class NvspGuest(Machine):
    """Guest NVSP machine for the primary channel. No I/O: bytes in, events and bytes out."""

    _name = "NVSP"

    def __init__(self, *, recv_buf: BufferGrant, send_buf: BufferGrant, mtu: int = 1500,
                 versions: Sequence[int] = wn.SUPPORTED_NVSP_VERSIONS,
                 send_buf_id: int = wn.SEND_BUFFER_ID,
                 capabilities: Callable[[int], int] = default_ndis_capabilities,
                 xid_base: int = limits.NVSP_XID_BASE) -> None:
        super().__init__(timeout=limits.NVSP_REPLY_TIMEOUT_S, xid_base=xid_base)
        versions = tuple(int(v) for v in versions)
        if not versions or any(a <= b for a, b in zip(versions, versions[1:])):
            raise LocalProtocolError(f"NVSP versions {versions!r} must be non-empty, descending")
        if not (limits.MIN_MTU <= mtu <= limits.MAX_MTU):
            raise LocalProtocolError(
                f"MTU {mtu} outside [{limits.MIN_MTU}, {limits.MAX_MTU}]")
        if not (0 <= send_buf_id <= 0xFFFF):
            raise LocalProtocolError(f"send buffer id {send_buf_id!r} is not a u16")
        self._versions = versions
        self._recv_buf = recv_buf
        self._send_buf = send_buf
        self._send_buf_id = send_buf_id
        self._mtu = mtu
        self._capabilities = capabilities
        self._state = NvspState.IDLE
        self._tried: list[int] = []
        self.version: int | None = None
        self.recv_connected = False
        self.send_connected = False
        self.send_section_size = 0
        self.send_section_count = 0
        self._subchannels_asked = 0
        self._datapath_vf = False
        #: in-band host messages of types we do not act on (counted, as Linux ignores them)
        self.ignored_messages = 0

    @property
    def state(self) -> NvspState:
        return self._state

    def _set_error_state(self) -> None:
        self._state = NvspState.ERROR

    def _move(self, inp: NvspInput) -> None:
        self._state = advance(NVSP_TRANSITIONS, self._state, inp)

    # -- commands ---------------------------------------------------------------------------------

    def start(self) -> list[Outbound]:
        """INIT with the newest version."""
        def go() -> list[Outbound]:
            self._move(NvspInput.START)
            return [self._init_request(self._versions[0])]
        return self._run(go)

    def request_subchannels(self, count: int) -> list[Outbound]:
        """Ask for `count` subchannels (NVSP >= 5); answered by SubchannelsGranted."""
        def go() -> list[Outbound]:
            if not (1 <= count <= limits.MAX_SUBCHANNELS):
                raise LocalProtocolError(
                    f"subchannel count {count} outside [1, {limits.MAX_SUBCHANNELS}]")
            if self._state is NvspState.READY and (self.version or 0) < wn.NvspVersion.V5:
                raise LocalProtocolError(
                    f"subchannels need NVSP 5 or later, negotiated {self.version:#x}")
            self._move(NvspInput.REQUEST_SUBCHANNELS)
            self._subchannels_asked = count
            msg = wn.NvspSubchannelRequest(type=wn.NvspType.SUBCHANNEL,
                                           op=wn.SubchannelOp.ALLOCATE, count=count)
            return [self._request(msg, wn.NvspType.SUBCHANNEL, f"subchannel request ({count})")]
        return self._run(go)

    def switch_datapath(self, vf: bool) -> list[Outbound]:
        """Tell the host which data path is active (NVSP >= 4); answered by DatapathSwitched.

        Linux requests a completion without payload and waits for it; DPDK sends without one.
        We request it, so the caller knows when the host has switched.
        """
        def go() -> list[Outbound]:
            if self._state is NvspState.READY and (self.version or 0) < wn.NvspVersion.V4:
                raise LocalProtocolError(
                    f"datapath switch needs NVSP 4 or later, negotiated {self.version:#x}")
            self._move(NvspInput.SWITCH_DATAPATH)
            self._datapath_vf = vf
            path = wn.Datapath.VF if vf else wn.Datapath.SYNTHETIC
            msg = wn.NvspSwitchDatapath(type=wn.NvspType.SWITCH_DATA_PATH, active_datapath=path)
            return [self._request(msg, wn.NvspType.SWITCH_DATA_PATH,
                                  f"datapath switch ({path.name})")]
        return self._run(go)

    def stop(self) -> list[Outbound]:
        """Revoke the receive buffer, then the send buffer (no replies). Then close the channel."""
        def go() -> list[Outbound]:
            self._move(NvspInput.STOP)
            self._awaiting.clear()
            out: list[Outbound] = []
            if self.recv_connected:
                msg = wn.NvspRevokeRecvBuf(type=wn.NvspType.REVOKE_RECV_BUF, id=wn.RECV_BUFFER_ID)
                out.append(Outbound(wn.to_bytes(msg), self._xid(), False))
            if self.send_connected:
                msg2 = wn.NvspRevokeSendBuf(type=wn.NvspType.REVOKE_SEND_BUF, id=self._send_buf_id)
                out.append(Outbound(wn.to_bytes(msg2), self._xid(), False))
            self._events.append(BuffersRevoked(recv=self.recv_connected, send=self.send_connected))
            self.recv_connected = self.send_connected = False
            return out
        return self._run(go)

    # -- the single receive entry point -----------------------------------------------------------

    def receive(self, item: Inbound) -> list[Outbound]:
        """Feed one in-band packet or completion from the primary channel."""
        return self._run(lambda: self._receive(item))

    def _receive(self, item: Inbound) -> list[Outbound]:
        if item.kind is InboundKind.RNDIS:
            raise LocalProtocolError("RNDIS messages go to RndisGuest, not NvspGuest")
        if self._state is NvspState.IDLE:
            raise Reject(f"NVSP: host sent a packet (kind {item.kind.name}) before INIT")
        data = item.payload
        if len(data) > limits.MAX_NVSP_MESSAGE:
            raise Reject(f"NVSP: message length {len(data)} exceeds the limit "
                         f"{limits.MAX_NVSP_MESSAGE}")
        if item.kind is InboundKind.COMPLETION:
            return self._completion(item.trans_id, data)
        return self._inband(data)

    def _completion(self, xid: int, data: bytes) -> list[Outbound]:
        pending = self._awaiting.pop(xid, None)
        if pending is None:
            raise Reject(f"NVSP completion: trans_id {xid:#x} matches no outstanding request")
        want = _REPLY_TYPE[pending.tag]
        if want is None:  # datapath switch: a bare VMBus completion
            if data and (len(data) < 4 or struct.unpack_from("<I", data)[0] != pending.tag):
                raise Reject(f"completion of {pending.what}: payload of {len(data)} bytes "
                             f"is neither empty nor a type-{pending.tag} message")
            return self._datapath_done()
        if len(data) < 4:
            raise Reject(f"completion of {pending.what}: length {len(data)} is shorter "
                         f"than the 4-byte header")
        mtype = struct.unpack_from("<I", data)[0]
        if mtype != want:
            raise Reject(f"completion of {pending.what}: type {mtype} (expected {want})")
        cls = _REPLY_STRUCT[want]
        if len(data) < cls.MIN_LEN:
            raise Reject(f"completion of {pending.what}: length {len(data)} is shorter "
                         f"than the {cls.MIN_LEN} bytes of a type-{want} reply")
        if want == wn.NvspType.INIT_COMPLETE:
            return self._init_done(wn.from_prefix(wn.NvspInitComplete, data))
        if want == wn.NvspType.SEND_RECV_BUF_COMPLETE:
            return self._recv_buf_done(data)
        if want == wn.NvspType.SEND_SEND_BUF_COMPLETE:
            return self._send_buf_done(wn.from_prefix(wn.NvspSendBufComplete, data))
        return self._subchannels_done(wn.from_prefix(wn.NvspSubchannelComplete, data))

    def _inband(self, data: bytes) -> list[Outbound]:
        if len(data) < 4:
            raise Reject(f"NVSP in-band message: length {len(data)} is shorter than the "
                         f"4-byte header")
        mtype = struct.unpack_from("<I", data)[0]
        if mtype == wn.NvspType.SEND_VF_ASSOCIATION:
            if len(data) < wn.NvspVfAssociation.MIN_LEN:
                raise Reject(f"NVSP VF association: length {len(data)} is shorter than "
                             f"{wn.NvspVfAssociation.MIN_LEN}")
            vf = wn.from_prefix(wn.NvspVfAssociation, data)
            if vf.allocated > 1:
                self._events.append(VfMessageDropped(mtype, f"allocated {vf.allocated} is neither 0 nor 1"))
            else:
                self._events.append(VfAssociation(allocated=vf.allocated == 1, serial=vf.serial))
        elif mtype == wn.NvspType.SWITCH_DATA_PATH:
            # the host's own switch (OpenVMM, when it loses the VF: netvsc spec B.3 item 43)
            if len(data) < _HOST_SWITCH_LEN:
                raise Reject(f"NVSP data path switch from the host: length {len(data)} is shorter than "
                             f"{_HOST_SWITCH_LEN}")
            active = struct.unpack_from("<I", data, 4)[0]
            if active > wn.Datapath.VF:
                self._events.append(VfMessageDropped(mtype, f"active_datapath {active} is neither 0 nor 1"))
            else:
                self._events.append(HostDatapathSwitched(vf=active == wn.Datapath.VF))
        elif mtype == wn.NvspType.SEND_INDIRECTION_TABLE:
            self._events.append(self._indirection_table(data))
        else:
            self.ignored_messages += 1
        return []

    # -- replies ------------------------------------------------------------------------------------

    def _init_done(self, msg: wn.NvspInitComplete) -> list[Outbound]:
        tried = self._tried[-1]
        if msg.status != wn.NvspStatus.SUCCESS:
            remaining = self._versions[len(self._tried):]
            if not remaining:
                offered = ", ".join(f"{v:#x}" for v in self._tried)
                raise Reject(f"NVSP INIT: the host refused every version offered ({offered}); "
                             f"last status {_status_name(msg.status)}", refused=True)
            self._move(NvspInput.VERSION_REFUSED)
            return [self._init_request(remaining[0])]
        # negotiated_version is not checked: Linux and DPDK both ignore it (we offered min == max).
        self._move(NvspInput.VERSION_ACCEPTED)
        self.version = tried
        ndis = wn.ndis_version_for(tried)
        self._events.append(NvspReady(version=tried, ndis_version=int(ndis)))
        out: list[Outbound] = []
        mtu: int | None = None
        caps = 0
        if tried >= wn.NvspVersion.V2:
            mtu = self._mtu + limits.ETH_HEADER_LEN
            caps = self._capabilities(tried)
            conf = wn.NvspNdisConfig(type=wn.NvspType.SEND_NDIS_CONFIG, mtu=mtu, capabilities=caps)
            out.append(Outbound(wn.to_bytes(conf), self._xid(), False))
        ver = wn.NvspNdisVersion(type=wn.NvspType.SEND_NDIS_VERSION, ndis_major=ndis >> 16,
                                 ndis_minor=ndis & 0xFFFF)
        out.append(Outbound(wn.to_bytes(ver), self._xid(), False))
        self._events.append(NdisConfigured(mtu=mtu, capabilities=caps, ndis_version=int(ndis)))
        conn = wn.NvspRecvBufConnect(type=wn.NvspType.SEND_RECV_BUF, gpadl=self._recv_buf.gpadl,
                                     id=wn.RECV_BUFFER_ID)
        out.append(self._request(conn, wn.NvspType.SEND_RECV_BUF,
                                 f"receive buffer connect (GPADL {self._recv_buf.gpadl:#x})"))
        return out

    def _recv_buf_done(self, data: bytes) -> list[Outbound]:
        what = "NVSP receive buffer reply"
        head = wn.from_prefix(wn.NvspRecvBufComplete, data)
        if head.status != wn.NvspStatus.SUCCESS:
            raise Reject(f"{what}: status {_status_name(head.status)}", refused=True)
        count = head.num_sections
        if not (1 <= count <= limits.MAX_RECV_BUF_SECTIONS):
            raise Reject(f"{what}: num_sections {count} outside [1, "
                         f"{limits.MAX_RECV_BUF_SECTIONS}]")
        need = wn.NvspRecvBufComplete.HEAD_LEN + count * ctypes.sizeof(wn.NvspRecvBufSection)
        if len(data) < need:
            raise Reject(f"{what}: length {len(data)} cannot hold {count} sections "
                         f"({need} bytes)")
        size = self._recv_buf.size
        sections = []
        for i in range(count):
            off = wn.NvspRecvBufComplete.HEAD_LEN + i * ctypes.sizeof(wn.NvspRecvBufSection)
            s = wn.NvspRecvBufSection.from_buffer_copy(data, off)
            name = f"{what}: section {i}"
            if i == 0 and s.offset != 0:
                raise Reject(f"{name} offset {s.offset:#x} is not 0 (the section covers the "
                             f"whole buffer)")
            if s.sub_alloc_size < limits.MIN_SECTION_SIZE:
                raise Reject(f"{name} sub_alloc_size {s.sub_alloc_size} is below "
                             f"{limits.MIN_SECTION_SIZE}")
            if s.num_sub_allocs == 0:
                raise Reject(f"{name} num_sub_allocs is 0")
            # end_offset is only checked for order and bounds: Linux and DPDK never read it, so
            # its relation to sub_alloc_size * num_sub_allocs is not something hosts are held to.
            if not (s.offset <= s.end_offset <= size):
                raise Reject(f"{name} offset {s.offset:#x} / end_offset {s.end_offset:#x} not "
                             f"ordered inside the buffer of {size:#x} bytes")
            span = s.sub_alloc_size * s.num_sub_allocs
            if s.offset + span > size:
                raise Reject(f"{name} offset {s.offset:#x} + sub_alloc_size {s.sub_alloc_size} "
                             f"* num_sub_allocs {s.num_sub_allocs} exceeds the buffer size "
                             f"{size:#x}")
            sections.append(RecvBufSection(s.offset, s.sub_alloc_size, s.num_sub_allocs,
                                           s.end_offset))
        self._move(NvspInput.RECV_BUF_CONNECTED)
        self.recv_connected = True
        self._events.append(RecvBufReady(sections=tuple(sections)))
        conn = wn.NvspSendBufConnect(type=wn.NvspType.SEND_SEND_BUF, gpadl=self._send_buf.gpadl,
                                     id=self._send_buf_id)
        return [self._request(conn, wn.NvspType.SEND_SEND_BUF,
                              f"send buffer connect (GPADL {self._send_buf.gpadl:#x})")]

    def _send_buf_done(self, msg: wn.NvspSendBufComplete) -> list[Outbound]:
        what = "NVSP send buffer reply"
        if msg.status != wn.NvspStatus.SUCCESS:
            raise Reject(f"{what}: status {_status_name(msg.status)}", refused=True)
        sect, size = msg.section_size, self._send_buf.size
        if sect < limits.MIN_SECTION_SIZE:
            raise Reject(f"{what}: section_size {sect} is below {limits.MIN_SECTION_SIZE}")
        if sect % limits.SEND_SECTION_ALIGN:
            raise Reject(f"{what}: section_size {sect} is not a multiple of "
                         f"{limits.SEND_SECTION_ALIGN}")
        if sect > size:
            raise Reject(f"{what}: section_size {sect:#x} exceeds the send buffer size {size:#x}")
        count = size // sect  # so section_size * count <= size
        self._move(NvspInput.SEND_BUF_CONNECTED)
        self.send_connected = True
        self.send_section_size, self.send_section_count = sect, count
        self._events.append(SendBufReady(section_size=sect, count=count))
        return []

    def _subchannels_done(self, msg: wn.NvspSubchannelComplete) -> list[Outbound]:
        what = "NVSP subchannel reply"
        if msg.status != wn.NvspStatus.SUCCESS:
            # not fatal: the primary carries on alone (Linux netvsc_subchan_work, OpenVMM's FAILURE)
            self._move(NvspInput.SUBCHANNELS_GRANTED)
            self._events.append(SubchannelsRefused(asked=self._subchannels_asked, status=msg.status))
            return []
        if msg.count > self._subchannels_asked:
            raise Reject(f"{what}: count {msg.count} exceeds the {self._subchannels_asked} "
                         f"requested")
        self._move(NvspInput.SUBCHANNELS_GRANTED)
        self._events.append(SubchannelsGranted(count=msg.count))
        return []

    def _datapath_done(self) -> list[Outbound]:
        self._move(NvspInput.DATAPATH_SWITCHED)
        self._events.append(DatapathSwitched(vf=self._datapath_vf))
        return []

    def _indirection_table(self, data: bytes) -> IndirectionTable:
        what = "NVSP indirection table"
        if len(data) < wn.NvspIndirectionTable.MIN_LEN:
            raise Reject(f"{what}: length {len(data)} is shorter than "
                         f"{wn.NvspIndirectionTable.MIN_LEN}")
        head = wn.from_prefix(wn.NvspIndirectionTable, data)
        count, offset = head.count, head.offset
        if count != wn.INDIRECTION_TABLE_SIZE:
            raise Reject(f"{what}: count {count} is not {wn.INDIRECTION_TABLE_SIZE}")
        table_len = 4 * count
        # Hosts up to NVSP 6 put a wrong offset in this message; Linux (netvsc_send_table) then
        # reads the table right after the 40-byte nvsp_message when the message is long enough.
        if (self.version or 0) <= wn.NvspVersion.V6 and \
                len(data) >= wn.NVSP_MESSAGE_SIZE + table_len:
            offset = wn.NVSP_MESSAGE_SIZE
        if len(data) < table_len or offset > len(data) - table_len:
            raise Reject(f"{what}: offset {offset:#x} + {table_len} bytes exceeds message "
                         f"length {len(data):#x}")
        return IndirectionTable(channels=struct.unpack_from(f"<{count}I", data, offset))

    # -- helpers ------------------------------------------------------------------------------------

    def _init_request(self, version: int) -> Outbound:
        self._tried.append(version)
        msg = wn.NvspInit(type=wn.NvspType.INIT, ver_min=version, ver_max=version)
        return self._request(msg, wn.NvspType.INIT, f"INIT (version {version:#x})")

    def _request(self, msg: wn.NvspStruct, tag: int, what: str) -> Outbound:
        xid = self._xid()
        self._awaiting[xid] = Pending(what=f"NVSP {what}", tag=tag)
        return Outbound(wn.to_bytes(msg), xid, True)
