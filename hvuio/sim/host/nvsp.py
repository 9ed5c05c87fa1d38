"""The emulated host's network VSP (NVSP over VMBus), sans-IO: the protocol machine and its control plane.

What lives here: `HostNvsp`, which takes guest packets already copied out of a ring
(`GuestPacket`) and returns `Step`s — packets for the host→guest ring (`HostPacket`, with
`encode()` giving descriptor + header + payload) and events (`FrameFromGuest`,
`SubchannelsOffered`, `Rejection`, `ChannelFault`, ... from events.py). Its control plane is
here: dispatch and checks of every packet, INIT, NDIS config and version, the buffer connects,
subchannel requests (answered as queues.py decides), revokes, replies and completions, RNDIS
control messages handed to HostRndis, faults (the VF state and its messages: vf.py; the queues:
the subchannels granted, the send indirection table and a frame's queue, queues.py). The data
plane it drives lives beside it: the guest's RNDIS sends are read and split by send.py
(`SendBuffer`); frames are delivered with `deliver(frame)` / `deliver_batch(frames)` through
receive.py (`ReceiveBuffer`: sections, transfer-page packets, optionally corrupted on purpose with
`inject`, for the guest's VMBUS.md §4 checks). Memory is reached only through the accessors the
emulator passes in.

Behaviour follows OpenVMM's netvsp ([OV] microsoft/openvmm vm/devices/net/netvsp/src/lib.rs),
a real host implementation; [NVSC] = torvalds/linux drivers/net/hyperv/netvsc.c. Per case:
* Anything but INIT before INIT; a message type not defined at the negotiated version; a message
  shorter than its struct; INIT/NDIS config/NDIS version/buffer connects repeated; receive buffer
  before NDIS config (v2+); unknown GPADL; a send-buffer section outside the buffer; RNDIS before
  the receive buffer and NDIS version; unknown completion types; unknown or repeated receive
  completion ids; flags other than bit 0; packet types other than 0x6/0x9/0xb: [OV] ends the
  channel worker with an error → `ChannelFault`, the host stays silent afterwards.
* INIT with an unsupported version: INIT_COMPLETE with status NVSP_STAT_NONE (0) and
  negotiated version 0xFFFFFFFF, and the guest may retry ([OV] initialize; Linux walks its list).
* NDIS config MTU outside [1514, mtu_max]: silently replaced by 1514 ([OV] "as in the vmswitch").
* A malformed RNDIS data message, another message type after a data message in one send, an
  RNDIS control message on a subchannel: RNDIS-packet-complete with NVSP_STAT_FAIL ([OV]
  process_ring_buffer, handle_rndis). A send may span send-buffer sections (any sub-range of
  the buffer: [OV] parse_packet); a control message takes the rest of its send (what follows it
  is logged, not read).
* Requests without the completion-requested flag get no reply ([OV] send_completion(None)).
* `stall_control()` (fault injection, no host source): RNDIS control messages are completed as
  sends and never answered from then on (counted: control_unanswered); data keeps flowing.
* Revoke of a buffer once running: [OV] stops processing the channel without error → BufferRevoked;
  the other buffer's revoke (teardown sends both) is taken too, anything later only counted.
* trans_id 0 with completion requested: answered like any other id, not logged ([OV]
  send_completion; DPDK relies on it).
* Offloads (offload.py): checksum/LSO per-packet info of guest data is validated and applied
  (a refused request completes with NVSP_STAT_FAIL and counts tx_failed, as any malformed data
  message; a checksum request for an offload not enabled is logged and the frame sent as is); an LSO
  frame leaves as a `GsoFrame` for the network. Network GSO frames become vRSC fragments (guest
  enabled RSC, NVSP >= 6.1) or MSS segments; receive checksum info is marked once the guest set
  OID_TCP_OFFLOAD_PARAMETERS.
* strict only: RNDIS data before RNDIS INITIALIZE and a packet filter → NVSP_STAT_FAIL; receive
  buffer before NDIS version → fault; one GPADL for both buffers → fault; receive buffer id
  other than 0xCAFE → logged; more
  RNDIS messages in one send than max_packets_per_message, or one off the packet alignment →
  logged (the send is served).

What must not live here: rings, fds, sockets, clocks, RNDIS message semantics (rndis.py), the
receive buffer's sections and transfers (receive.py), splitting a send into frames (send.py),
subchannel grants, the send indirection table and a frame's queue (queues.py).
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from hvuio.sim.host import profile as hp
from hvuio.sim.host import wire as w
from hvuio.sim.host.events import (
    BufferRevoked, ChannelFault, FrameFromGuest, HostEvent, HostFault, NvspNegotiated, ReceiveBufferConnected,
    Rejection, RejectionLog, RndisInitialized, SendBufferConnected, fault,
)
from hvuio.sim.host.queues import HostQueues
from hvuio.sim.host.receive import ReceiveBuffer, RxFault, WriteRecvBuffer
from hvuio.sim.host.rndis import HostRndis, Reply
from hvuio.sim.host.rss import RssState
from hvuio.sim.host.send import ReadGuestPages, ReadSendBuffer, SendBuffer, TxRefused
from hvuio.sim.host.vf import HOST_TIDS, GuestVf
from hvuio.sim.host.wire import GuestPacket, HostPacket, parse_guest_packet

__all__ = [
    "GuestPacket", "HostNvsp", "HostPacket", "ReadGuestPages", "ReadSendBuffer", "RxFault", "Step", "WriteRecvBuffer",
    "parse_guest_packet",
]

PACKET_SIZE_V1 = 0x1C  # [OV] replies are zero padded to this before NVSP 6.1 ...
PACKET_SIZE_V61 = 0x28  # ... and to 40 bytes from 6.1 on


@dataclass(frozen=True, slots=True)
class Step:
    packets: tuple[HostPacket, ...] = ()
    events: tuple[HostEvent, ...] = ()


@dataclass(slots=True)
class _Out:
    packets: list[HostPacket] = field(default_factory=list)
    events: list[HostEvent] = field(default_factory=list)

    def step(self) -> Step:
        return Step(tuple(self.packets), tuple(self.events))


State = Literal["version", "init", "ready", "stopped"]


class HostNvsp:
    """Host side of one synthetic NIC. Not thread-safe; one instance per device open."""

    def __init__(
        self,
        profile: hp.HostProfile,
        *,
        gpadls: Mapping[int, int],
        read_send_buffer: ReadSendBuffer,
        write_recv_buffer: WriteRecvBuffer,
        read_guest_pages: ReadGuestPages | None = None,
    ) -> None:
        self.profile = profile
        self.gpadls = gpadls  # GPADL handle -> size in bytes, as registered by the (emulated) kernel
        self.log = RejectionLog()
        self.state: State = "version"
        self.version = 0
        self.ndis_mtu: int | None = None
        self.ndis_caps = 0
        self.ndis_version: tuple[int, int] | None = None
        self.rndis: HostRndis | None = None
        self._link_up = profile.link_up
        self.counters: dict[str, int] = dict.fromkeys((
            "rx_delivered", "rx_dropped_no_section", "rx_dropped_ring_full", "rx_dropped_filtered",
            "rx_dropped_not_ready", "rx_dropped_too_big", "tx_frames", "tx_failed", "control_queued", "tx_offload_ignored", "tx_lso",
            "rx_gso", "rx_rsc_fragments", "rx_dropped_bad_gso", "ignored_after_stop", "rx_vlan", "tx_vlan",
            "control_unanswered"), 0)
        #: RNDIS control messages are taken (their sends completed) and never answered (`stall_control`)
        self.control_stalled = False
        self._revoked: set[str] = set()  # buffers the guest revoked ("receive", "send")
        self._rx = ReceiveBuffer(write_recv_buffer, self.counters, self.profile.rx_layout)
        self._rx.vlan_oob = profile.vlan_oob
        self._tx = SendBuffer(profile, self.log, self.counters, read_send_buffer, read_guest_pages)
        self.vf = GuestVf(profile.vf_serial, self.log)  # accelerated networking (vf.py)
        self.queues = HostQueues(profile, self.log)  # subchannels, send table, a frame's queue (queues.py)

    @property
    def subchannels(self) -> int:
        """The subchannels of the last grant (channels 1..subchannels; 0 is the primary)."""
        return self.queues.count

    @property
    def rejections(self) -> list[Rejection]:
        return self.log.records

    @property
    def recv(self) -> tuple[int, int, int, int] | None:
        """The receive buffer the guest connected: gpadl, pageset id, section size, count."""
        return self._rx.layout

    @property
    def send(self) -> tuple[int, int, int] | None:
        """The send buffer the guest connected: gpadl, section size, buffer size."""
        return self._tx.layout

    @property
    def outstanding_receives(self) -> int:
        """Receive sections the guest has not completed yet."""
        return self._rx.outstanding

    @property
    def free_data(self) -> deque[int]:
        """The free data sections of the receive buffer (the runtime lends them to its C pump)."""
        return self._rx.free_data

    @property
    def rss(self) -> RssState | None:
        """The guest's RSS parameters as accepted (None: RSS off, the default)."""
        return self.rndis.rss if self.rndis is not None else None

    def rx_queue(self, frame: bytes) -> int:
        """The channel a frame from the network goes to: the guest's RSS table entry for its hash,
        else (RSS off, a frame that cannot be hashed, an entry past the granted queues) 0 (queues.py)."""
        return self.queues.rx_queue(self.rss, frame)

    # ---------------------------------------------------------------- entry points

    def receive(self, pkt: GuestPacket) -> Step:
        """Process one guest packet. Never raises for guest data: bad input becomes a Rejection."""
        out = _Out()
        if self.state == "stopped":
            which = _revoked_buffer(pkt)
            if self._revoked and which is not None and which not in self._revoked:
                # teardown revokes both buffers (Linux: receive, then send); the second is expected
                self._revoked.add(which)
                out.events.append(BufferRevoked(which))
            else:
                self._ignore_stopped(pkt.type, out)
            return out.step()
        try:
            self._receive(pkt, out)
        except HostFault as exc:
            self._fault(exc.rejection, out)
        except w.HostWireError as exc:
            self._fault(Rejection(str(exc), pkt.type, exc.field, exc.value, "fault"), out)
        return out.step()

    def receive_raw(self, raw: bytes, channel: int = 0) -> Step:
        """`receive` for packet bytes straight from a ring; a bad descriptor ends the channel."""
        try:
            pkt = parse_guest_packet(raw, channel)
        except w.HostWireError as exc:
            out = _Out()
            if self.state == "stopped":
                self._ignore_stopped(0, out)
            else:
                self._fault(Rejection(f"corrupt packet descriptor: {exc}", 0, exc.field, exc.value, "fault"), out)
            return out.step()
        return self.receive(pkt)

    def _ignore_stopped(self, ptype: int, out: _Out) -> None:
        """[OV] a stopped channel ignores what still arrives. After the guest's own revoke that is
        teardown (in-flight completions): counted only. After a fault it is logged, quietly."""
        if self._revoked:
            self.counters["ignored_after_stop"] += 1
        else:
            out.events.append(self.log.add(
                Rejection("channel no longer serviced", ptype, "state", 0, "ignored"), quiet=True))

    def deliver(self, frame: bytes, channel: int = 0, *, inject: RxFault | None = None) -> Step:
        """Send one Ethernet frame to the guest through a free receive section, or count a drop."""
        return self.deliver_batch((frame,), channel, inject=inject)

    def deliver_batch(self, frames: Sequence[bytes], channel: int = 0, *, inject: RxFault | None = None,
                      room: int | None = None) -> Step:
        """Send frames as one transfer-page packet, one range per frame (as [OV] batches them).

        Frames that cannot be sent are dropped and counted: before RNDIS is up, with no packet
        filter ([OV] NDIS_PACKET_TYPE_NONE), longer than the MTU or a section, with no free section,
        or when the packet does not fit `room`, the bytes free in the channel's inbound ring
        (None: no limit; [OV] process_endpoint_rx drops rather than queue: rx_dropped_ring_full).
        `inject` corrupts what the host writes, to exercise the guest's checks (VMBUS.md §4, §5.14).
        """
        self.queues.check_channel(channel)
        out = _Out()
        rndis = self.rndis
        if self.state != "ready" or rndis is None or not rndis.operational:
            self.counters["rx_dropped_not_ready"] += len(frames)
            return out.step()
        if not rndis.packet_filter:
            self.counters["rx_dropped_filtered"] += len(frames)
            return out.step()
        assert self.recv is not None
        mtu = self.ndis_mtu if self.ndis_mtu is not None else hp.DEFAULT_NDIS_MTU
        pkt = self._rx.deliver(frames, channel, mtu, rndis.offload, self._pad, inject, room)
        if pkt is not None:
            out.packets.append(pkt)
        return out.step()

    def set_link(self, up: bool, now: float | None = None) -> Step:
        """Scripted link change: an RNDIS media indication once RNDIS is up (see HostRndis.set_link)."""
        out = _Out()
        if self.rndis is None:
            self._link_up = up  # applied when the RNDIS device comes up
            return out.step()
        self._emit(self.rndis.set_link(up, now), out)
        return out.step()

    def indicate(self, kind: str, speed_bps: int | None = None) -> Step:
        """A scripted RNDIS indication (HostRndis.indicate: "network_change", "media_connect",
        "link_speed" with `speed_bps`) once RNDIS is up; nothing before."""
        out = _Out()
        if self.rndis is None:
            return out.step()
        self._emit(self.rndis.indicate(kind, speed_bps), out)
        return out.step()

    def tick(self, now: float) -> Step:
        """Time input (seconds, any monotonic origin): delayed link indications, host keep-alives."""
        out = _Out()
        if self.state == "ready" and self.rndis is not None:
            self._emit(self.rndis.tick(now), out)
        return out.step()

    def vf_add(self, serial: int) -> Step:
        """The host got a VF for this NIC: an association once the guest may hear of it (vf.py)."""
        out = _Out()
        self.vf.add(serial, self._pad, out)
        return self._host_step(out)

    def vf_remove(self) -> Step:
        """The host lost the NIC's VF: switched back to synthetic (told), then allocated 0 (vf.py)."""
        out = _Out()
        self.vf.remove(self._pad, out)
        return self._host_step(out)

    def stall_control(self) -> Step:
        """Leave every RNDIS control message from now on unanswered (counted: control_unanswered)
        while data sends are still completed and frames still delivered: a fault injection, no
        host is known to do this (OpenVMM's worker stops everything at once, `stall`)."""
        self.control_stalled = True
        return _Out().step()

    def _host_step(self, out: _Out) -> Step:
        if self.state == "stopped":  # a revoked channel hears nothing more
            out.packets.clear()
        return out.step()

    def channels_opened(self, opened: int) -> Step:
        """`opened` channels of the NIC are open, the primary included: the v5+ send indirection
        table once they are as many as the queues of the last grant (queues.py)."""
        out = _Out()
        table = self.queues.opened(opened, self.version) if self.state == "ready" else None
        if table is not None:
            out.packets.append(table)
        return out.step()

    # ---------------------------------------------------------------- dispatch

    def _receive(self, pkt: GuestPacket, out: _Out) -> None:
        if pkt.flags & ~w.FLAG_COMPLETION_REQUESTED:
            raise fault("flags other than completion-requested", pkt.type, "flags", pkt.flags)
        if pkt.channel and not 0 < pkt.channel <= self.subchannels:
            raise fault("packet on a channel the host never offered", pkt.type, "channel", pkt.channel)
        if pkt.type == w.PKT_COMPLETION:
            self._completion(pkt, out)
            return
        if pkt.type not in (w.PKT_INBAND, w.PKT_GPA_DIRECT):
            raise fault("packet type the network VSP does not accept", pkt.type, "type", pkt.type)
        (mtype,) = w.u32s(pkt.payload, 0, 1, "NVSP header")
        # Completion requested: answered whatever the id, 0 included, quietly ([OV] the packet's
        # transaction id is set iff a completion was requested, and send_completion answers it;
        # DPDK sends NVS init, buffer connects and RNDIS control with id 0, VMBUS.md §3.5).
        answer = bool(pkt.flags & w.FLAG_COMPLETION_REQUESTED)
        need_version = 0 if mtype == w.NVSP_INIT else w.NVSP_MIN_VERSION.get(mtype)
        if need_version is None or self.version < need_version:  # version is 0 until INIT succeeds
            raise fault("NVSP message type unknown at this protocol version", mtype, "msg_type", mtype)
        need = w.NVSP_MIN_SIZE[mtype]
        if len(pkt.payload) < need:
            raise fault(f"NVSP message shorter than its {need}-byte struct", mtype, "payload length", len(pkt.payload))
        if pkt.channel and mtype != w.NVSP_SEND_RNDIS_PKT:
            raise fault("control message on a subchannel", mtype, "channel", pkt.channel)
        reply = _Reply(self, pkt, answer, out)
        if mtype == w.NVSP_INIT:
            self._init(pkt.payload, reply)
        elif self.state == "init":
            self._negotiate(mtype, pkt, reply)
        else:
            self._ready(mtype, pkt, reply)

    def _init(self, payload: bytes, reply: _Reply) -> None:
        if self.state != "version":
            raise fault("INIT after the version was negotiated", w.NVSP_INIT, "state", 1)
        ver_min, ver_max = w.u32s(payload, 4, 2, "INIT")
        # [OV] reads only the first field (Linux and DPDK send min == max) and answers with the
        # pre-6.1 packet size; the negotiated-version field is "deprecated" except for v1.
        if self.profile.strict and ver_max != ver_min:
            reply.out.events.append(self.log.add(Rejection(
                "INIT offers a version range; the host reads only min_protocol_ver (strict)", w.NVSP_INIT,
                "max_protocol_ver", ver_max, "logged")))
        if ver_min in self.profile.versions:
            negotiated = ver_min if ver_min == w.NVSP_VERSION_1 else w.NVSP_INVALID_VERSION
            reply.send_raw(w.nvsp(w.NVSP_INIT_COMPLETE, negotiated, hp.MAX_MDL_CHAIN, w.NVSP_STAT_SUCCESS,
                                  pad_to=PACKET_SIZE_V1))
            self.state, self.version = "init", ver_min
            reply.out.events.append(NvspNegotiated(ver_min))
            return
        reply.out.events.append(self.log.add(Rejection(
            "NVSP version outside the host's range", w.NVSP_INIT, "min_protocol_ver", ver_min, "failure-status")))
        reply.send_raw(w.nvsp(w.NVSP_INIT_COMPLETE, w.NVSP_INVALID_VERSION, hp.MAX_MDL_CHAIN, w.NVSP_STAT_NONE,
                              pad_to=PACKET_SIZE_V1))

    def _negotiate(self, mtype: int, pkt: GuestPacket, reply: _Reply) -> None:
        p = pkt.payload
        if mtype == w.NVSP_SEND_NDIS_CONFIG:
            if self.ndis_mtu is not None:
                raise fault("NDIS config sent twice", mtype, "mtu", self.ndis_mtu)
            mtu, _rsvd, caps_lo, caps_hi = w.u32s(p, 4, 4, "NDIS config")
            if not hp.MIN_NDIS_MTU <= mtu <= self.profile.mtu_max:
                reply.out.events.append(self.log.add(Rejection(
                    f"NDIS config MTU outside [{hp.MIN_NDIS_MTU}, {self.profile.mtu_max}]; default used",
                    mtype, "mtu", mtu, "substituted")))
                mtu = self.profile.mtu_default
            self.ndis_mtu, self.ndis_caps = mtu, caps_lo | caps_hi << 32
            self.vf.negotiated(self.version, self.ndis_caps)
            reply.send_empty()
        elif mtype == w.NVSP_SEND_NDIS_VERSION:
            if self.ndis_version is not None:
                raise fault("NDIS version sent twice", mtype, "major", self.ndis_version[0])
            major, minor = w.u32s(p, 4, 2, "NDIS version")
            if self.profile.strict and major != 6:  # Linux and DPDK send 6.1 (NVSP <= 4) or 6.30
                reply.out.events.append(self.log.add(Rejection(
                    "NDIS major version is not 6 (strict)", mtype, "ndis_major_ver", major, "logged")))
            self.ndis_version = (major, minor)
            reply.send_empty()
        elif mtype == w.NVSP_SEND_RECV_BUF:
            self._connect_recv(p, reply)
        elif mtype == w.NVSP_SEND_SEND_BUF:
            self._connect_send(p, reply)
        elif mtype == w.NVSP_SEND_RNDIS_PKT:
            ready = (self.ndis_version is not None and self.recv is not None
                     and (self.ndis_mtu is not None or self.version < w.NVSP_VERSION_2))
            if not ready:
                raise fault("RNDIS message before NDIS version and receive buffer", mtype, "state", 0)
            self._become_ready()
            self._ready(mtype, pkt, reply)
        else:
            raise fault("message not valid while the channel is being set up", mtype, "msg_type", mtype)

    def _gpadl(self, mtype: int, handle: int) -> int:
        size = self.gpadls.get(handle)
        if size is None:
            raise fault("GPADL handle not registered for this channel", mtype, "gpadl_handle", handle)
        return size

    def _connect_recv(self, p: bytes, reply: _Reply) -> None:
        mtype = w.NVSP_SEND_RECV_BUF
        if self.recv is not None:
            raise fault("receive buffer sent twice", mtype, "gpadl_handle", self.recv[0])
        if self.ndis_mtu is None and self.version >= w.NVSP_VERSION_2:
            raise fault("receive buffer before NDIS config (MTU unknown)", mtype, "state", 0)
        if self.profile.strict and self.ndis_version is None:
            raise fault("receive buffer before NDIS version (strict)", mtype, "state", 0)
        (gpadl,) = w.u32s(p, 4, 1, "receive buffer")
        (buf_id,) = struct.unpack_from("<H", p, 8)
        size = self._gpadl(mtype, gpadl)
        if self.send is not None and self.profile.strict and self.send[0] == gpadl:
            raise fault("receive buffer GPADL is the send buffer's (strict)", mtype, "gpadl_handle", gpadl)
        if self.profile.strict and buf_id != w.RECV_BUFFER_ID:
            reply.out.events.append(self.log.add(Rejection(
                "receive buffer id is not 0xCAFE; echoed as the pageset id", mtype, "id", buf_id, "logged")))
        mtu = self.ndis_mtu if self.ndis_mtu is not None else hp.DEFAULT_NDIS_MTU
        section = self.profile.recv_section_for_mtu(mtu)
        count = size // section
        if count == 0:
            raise fault("receive buffer smaller than one section", mtype, "buffer size", size)
        self._rx.connect(gpadl, buf_id, section, count, self.profile.control_sections)
        payload = w.recv_buf_complete(w.NVSP_STAT_SUCCESS, ((0, section, count, section * count),), self._pad)
        reply.send_raw(payload)
        reply.out.events.append(ReceiveBufferConnected(gpadl, section, count))

    def _connect_send(self, p: bytes, reply: _Reply) -> None:
        mtype = w.NVSP_SEND_SEND_BUF
        if self.send is not None:
            raise fault("send buffer sent twice", mtype, "gpadl_handle", self.send[0])
        (gpadl,) = w.u32s(p, 4, 1, "send buffer")
        size = self._gpadl(mtype, gpadl)
        if self.recv is not None and self.profile.strict and self.recv[0] == gpadl:
            raise fault("send buffer GPADL is the receive buffer's (strict)", mtype, "gpadl_handle", gpadl)
        sec = self.profile.send_section_size
        self._tx.connect(gpadl, sec, size)
        reply.send(w.NVSP_SEND_SEND_BUF_COMPLETE, w.NVSP_STAT_SUCCESS, sec)
        reply.out.events.append(SendBufferConnected(gpadl, sec, size // sec))

    def _become_ready(self) -> None:
        self.state = "ready"
        mtu = self.ndis_mtu if self.ndis_mtu is not None else hp.DEFAULT_NDIS_MTU
        self.rndis = HostRndis(self.profile, self.log, mtu, self.profile.max_subchannels + 1, self.version)
        self.rndis.link_up = self._link_up

    # ---------------------------------------------------------------- running channel

    def _ready(self, mtype: int, pkt: GuestPacket, reply: _Reply) -> None:
        p = pkt.payload
        if mtype == w.NVSP_SEND_RNDIS_PKT:
            self._rndis_packet(pkt, reply)
        elif mtype == w.NVSP_SUBCHANNEL:
            op, count = w.u32s(p, 4, 2, "subchannel request")
            reply.send(w.NVSP_SUBCHANNEL, *self.queues.request(op, count, self._rx.data_sections, reply.out.events))
        elif mtype in (w.NVSP_REVOKE_RECV_BUF, w.NVSP_REVOKE_SEND_BUF):
            self.state = "stopped"
            which: Literal["receive", "send"] = "receive" if mtype == w.NVSP_REVOKE_RECV_BUF else "send"
            self._revoked.add(which)
            reply.out.events.append(BufferRevoked(which))
        elif mtype == w.NVSP_SWITCH_DATA_PATH:  # primary only: a subchannel's faulted above
            (active,) = w.u32s(p, 4, 1, "switch data path")
            self.vf.switch(active, reply.out)
            reply.send_empty()  # [OV] an empty completion, whether or not anything switched
        elif mtype == w.NVSP_OID_QUERY_EX:
            reply.send(w.NVSP_OID_QUERY_EX_COMPLETE, w.RNDIS_STATUS_NOT_SUPPORTED, 0)
        else:
            raise fault("set-up message on a running channel", mtype, "msg_type", mtype)

    def _rndis_packet(self, pkt: GuestPacket, reply: _Reply) -> None:
        mtype = w.NVSP_SEND_RNDIS_PKT
        chan_type, index, size = w.u32s(pkt.payload, 4, 3, "RNDIS packet")
        got = self._tx.read(pkt, index, size, reply.out.events)
        if got is None:
            reply.complete(w.NVSP_STAT_FAIL)
            return
        data, ends = got
        if not pkt.flags & w.FLAG_COMPLETION_REQUESTED:  # [OV] MissingTransactionId
            reply.out.events.append(self.log.add(Rejection(
                "RNDIS packet without completion requested", mtype, "flags", pkt.flags, "ignored")))
            return
        mtu = self.ndis_mtu if self.ndis_mtu is not None else hp.DEFAULT_NDIS_MTU
        try:
            frames, controls = self._tx.split(data, chan_type, pkt.channel, self.rndis, mtu, reply.out.events, ends)
        except w.HostWireError as exc:
            self.counters["tx_failed"] += 1
            reply.out.events.append(self.log.add(Rejection(str(exc), mtype, exc.field, exc.value, "failure-status")))
            reply.complete(w.NVSP_STAT_FAIL)
            return
        except TxRefused as exc:
            self.counters["tx_failed"] += 1
            reply.out.events.append(self.log.add(exc.rejection))
            reply.complete(w.NVSP_STAT_FAIL)
            return
        for frame in frames:
            reply.out.events.append(FrameFromGuest(frame, pkt.channel))
        self.counters["tx_frames"] += len(frames)
        reply.complete(w.NVSP_STAT_SUCCESS)  # [OV] completes the send before answering control messages
        for msg in controls:
            self._control(msg, reply.out)

    def _control(self, msg: bytes, out: _Out) -> None:
        assert self.rndis is not None
        if self.control_stalled:
            self.counters["control_unanswered"] += 1
            return
        events = self._emit(self.rndis.control(msg), out)
        if any(isinstance(e, RndisInitialized) for e in events):
            self._after_rndis_init(out)

    def _emit(self, reply: Reply, out: _Out) -> list[HostEvent]:
        """What HostRndis answered: its events into `out`, each message sent as a control message;
        returns the events."""
        msgs, events = reply
        out.events.extend(events)
        for m in msgs:
            self._send_control(m, out)
        return events

    def _after_rndis_init(self, out: _Out) -> None:
        table = self.queues.table_after_rndis_init(self.version)
        if table is not None:
            out.packets.append(table)
        self.vf.rndis_initialized(self._pad, out)

    # ---------------------------------------------------------------- receive buffer

    @property
    def _pad(self) -> int:
        return PACKET_SIZE_V61 if self.version >= w.NVSP_VERSION_61 else PACKET_SIZE_V1

    def _send_control(self, msg: bytes, out: _Out) -> None:
        pkt = self._rx.send_control(msg, self._pad)
        if pkt is not None:
            out.packets.append(pkt)

    def _completion(self, pkt: GuestPacket, out: _Out) -> None:
        if pkt.trans_id in HOST_TIDS:
            return  # completions of the host's VF messages ([OV] parse_packet): accepted and ignored
        if self.state != "ready":
            raise fault("completion while the channel is being set up", pkt.type, "trans_id", pkt.trans_id)
        (mtype,) = w.u32s(pkt.payload, 0, 1, "completion")
        if mtype != w.NVSP_SEND_RNDIS_PKT_COMPLETE:
            raise fault("completion of an unknown NVSP type", mtype, "msg_type", mtype)
        _, status = w.u32s(pkt.payload, 0, 2, "RNDIS packet completion")
        if not self._rx.complete(pkt.trans_id):
            raise fault("receive completion for no outstanding transfer (unknown or repeated id)",
                        mtype, "trans_id", pkt.trans_id)
        if status != w.NVSP_STAT_SUCCESS:
            out.events.append(self.log.add(Rejection(
                "guest completed a receive with a failure status", mtype, "status", status, "logged")))
        out.packets.extend(self._rx.send_pending(self._pad))

    def _fault(self, rej: Rejection, out: _Out) -> None:
        if self.profile.fatal_faults:
            self.state = "stopped"
            out.events.append(self.log.add(rej))
            out.events.append(ChannelFault(rej.reason))
        else:
            out.events.append(self.log.add(Rejection(rej.reason, rej.message_type, rej.field, rej.value, "dropped")))


class _Reply:
    """Completion packets for one guest request (suppressed when no completion was requested)."""

    def __init__(self, host: HostNvsp, pkt: GuestPacket, answer: bool, out: _Out) -> None:
        self.host, self.pkt, self.answer, self.out = host, pkt, answer, out

    def send_raw(self, payload: bytes) -> None:
        if self.answer:
            self.out.packets.append(HostPacket(self.pkt.channel, w.PKT_COMPLETION, 0, self.pkt.trans_id, payload))

    def send(self, mtype: int, *fields: int) -> None:
        self.send_raw(w.nvsp(mtype, *fields, pad_to=self.host._pad))

    def send_empty(self) -> None:
        self.send_raw(b"")  # [OV] "The UEFI client expects a completion packet, which can be empty"

    def complete(self, status: int) -> None:
        self.send(w.NVSP_SEND_RNDIS_PKT_COMPLETE, status)


def _revoked_buffer(pkt: GuestPacket) -> Literal["receive", "send"] | None:
    """"receive" / "send" when `pkt` is an in-band NVSP revoke of that buffer, else None."""
    if pkt.type != w.PKT_INBAND or len(pkt.payload) < 4:
        return None
    (mtype,) = w.u32s(pkt.payload, 0, 1, "NVSP header")
    if mtype == w.NVSP_REVOKE_RECV_BUF:
        return "receive"
    return "send" if mtype == w.NVSP_REVOKE_SEND_BUF else None
