"""`RingGuest`: a minimal guest engine over the emulator's real shared memory, driven by hand.

`RingGuest` plays a minimal engine with the existing guest parts only: hvuio.device (bind,
UioHandle, the irq socket), hvuio.native.ring.Ring (the C ring core) for both directions, and the
sans-IO NetvscGuest (NVSP and RNDIS composed). RNDIS control messages are copied into the
send-buffer sections the guest picked, data frames go into the data sections, transfer-page
packets are parsed out of the receive buffer and acked, the host is signalled through the monitor
page (atomic OR, libatomic) or write(1) for non-monitored channels. `RingGuest.pump` waits in
bounded polls that fail with a message (WAIT seconds by default, from support.waiting). Used by
the emulator's tests (tests/sim/test_sim_vsp.py, test_sim_vsp_cli.py, test_sim_offload_netns.py,
test_sim_lifecycle.py: `sriov=True` offers SR-IOV, `switch_datapath` and `inband` play and watch
the VF handshake the engine does not make).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import os
import struct
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hvuio.device.bind import bind_device, resolve_device
from hvuio.device.uio import UioHandle
from hvuio.native.ring import Direction, Ring
from hvuio.proto.events import Inbound, InboundKind, RndisConfigured, Send
from hvuio.proto.netvsc import Effect, NetvscGuest
from hvuio.proto.nvsp import BufferGrant, default_ndis_capabilities
from hvuio.wire import nvsp as wn
from support.waiting import WAIT

INBAND, XFER, COMP = 0x6, 0x7, 0xB
SET_CMPLT = 0x80000005  # RNDIS_SET_CMPLT
RC = 1
RNDIS_PACKET = struct.Struct("<11I")  # RNDIS_PACKET_MSG head, 44 bytes
SWITCH_TID = 0x5D << 48  # trans_ids of our switch_datapath requests


def _atomic_or() -> Callable[[int, int, int], int]:
    lib = ctypes.CDLL(ctypes.util.find_library("atomic") or "libatomic.so.1")
    fn = lib.__atomic_fetch_or_4
    fn.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int]
    fn.restype = ctypes.c_uint32
    return fn


def eth_frame(payload: bytes, src: bytes = b"\x02\x00\x00\x00\x00\x01") -> bytes:
    return b"\xff" * 6 + src + b"\x88\xb5" + payload.ljust(46, b"\0")


class RingGuest:
    """A minimal guest engine for one NIC (see module docstring)."""

    def __init__(self, sysroot: Path, name: str = "hveth0", *, sriov: bool = False) -> None:
        bind_device(sysroot, name)
        self.device = resolve_device(sysroot, name)
        self.h = UioHandle.open(self.device)
        s = self.h.ring_size
        self.tx = Ring(self.h.rings, direction=Direction.TX, offset=0, size=s)
        self.rx = Ring(self.h.rings, direction=Direction.RX, offset=s, size=s)
        self.rx.set_interrupt_mask(0)  # kernels up to 6.16 open with the inbound mask set
        self.monitor_id = self.device.monitor_id
        self._or = _atomic_or() if self.monitor_id is not None else None
        assert self.h.recv_gpadl is not None and self.h.send_gpadl is not None
        assert self.h.recv_buffer is not None and self.h.send_buffer is not None
        self.recv_buf, self.send_buf = self.h.recv_buffer, self.h.send_buffer
        self.guest = NetvscGuest(recv_buf=BufferGrant(self.h.recv_gpadl, len(self.recv_buf)),
                                 send_buf=BufferGrant(self.h.send_gpadl, len(self.send_buf)))
        if sriov:  # hvuio's engine never offers SR-IOV (it has no VF data path); the VF tests need it
            self.guest.nvsp._capabilities = lambda v: default_ndis_capabilities(v) | wn.NdisConfigCap.SRIOV
        self.inband: list[tuple[int, int, bytes]] = []  # every host in-band packet: trans_id, flags, payload
        self.switch_done: dict[int, bytes | None] = {}  # switch_datapath trans_ids -> completion payload
        self.section_size = 0
        self.free: deque[int] = deque()  # data sections (the guest keeps the control ones)
        self.in_use: dict[int, int] = {}
        self.events: list[Any] = []
        self.frames: list[bytes] = []  # frames the host delivered in data transfer-page packets
        self.tx_done: dict[int, int] = {}  # our data sends: trans_id -> NVSP status
        self.raw_sets: dict[int, int | None] = {}  # rndis_set request ids -> RNDIS status (None: pending)
        self.sub_frames: dict[int, list[bytes]] = {}  # subchannel index -> frames delivered on it
        self._subs: dict[int, tuple[Any, Ring]] = {}  # subchannel index -> (mapping, inbound ring)
        self._tx_tid = 1 << 40
        self.signals = 0

    # -- host signalling (VMBUS.md §3.12) -------------------------------------------------------------

    def signal(self) -> None:
        self.signals += 1
        if self.monitor_id is None:
            self.h.interrupt.enable()  # write(1): the kernel signals the host (6.10+)
            return
        assert self._or is not None
        off = 8 + 8 * (self.monitor_id // 32)
        word = ctypes.c_uint32.from_buffer(self.h.monitor_page, off)
        self._or(ctypes.addressof(word), 1 << (self.monitor_id % 32), 5)
        del word

    def send_packet(self, ptype: int, payload: bytes, trans_id: int, flags: int) -> None:
        if self.tx.send(ptype, payload, flags=flags, trans_id=trans_id):
            self.signal()

    def send(self, msg: Send) -> None:
        rndis = msg.message.rndis
        if rndis is not None:
            self.send_buf[msg.offset:msg.offset + len(rndis)] = rndis
        self.send_packet(INBAND, msg.payload, msg.message.trans_id, RC if msg.message.want_completion else 0)

    def send_frame(self, frame: bytes) -> int:
        """One data frame in a send-buffer section (NVSP 107, channel type data); its trans_id."""
        section = self.free.popleft()
        msg = RNDIS_PACKET.pack(1, 44 + len(frame), 36, len(frame), 0, 0, 0, 0, 0, 0, 0) + frame
        start = section * self.section_size
        self.send_buf[start:start + len(msg)] = msg
        self._tx_tid += 1
        self.in_use[self._tx_tid] = section
        nv = wn.NvspSendRndisPacket(type=wn.NvspType.SEND_RNDIS_PACKET, channel_type=0,
                                    section_index=section, section_size=len(msg))
        self.send_packet(INBAND, wn.to_bytes(nv), self._tx_tid, RC)
        return self._tx_tid

    # -- host -> guest ------------------------------------------------------------------------------

    def pump(self, until: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
        """Read and handle inbound packets until `until()`; waits on the irq socket in between."""
        deadline = time.monotonic() + timeout
        while True:
            batch = self.rx.read_batch(64)
            for pkt in batch.packets:
                self._handle(pkt)
            if batch.need_signal:
                self.signal()
            if until():
                return
            assert time.monotonic() < deadline, f"timed out waiting for {what}; events: {self.events[-5:]}"
            if not batch.packets:
                self.h.interrupt.wait(0.02)
                self.rx.set_interrupt_mask(0)  # auto-masking kernels set it on every interrupt

    def _handle(self, pkt: Any) -> None:
        if pkt.type == COMP:
            if pkt.trans_id in self.switch_done:
                self.switch_done[pkt.trans_id] = bytes(pkt.payload)
                return
            if pkt.trans_id in self.tx_done or pkt.trans_id > 1 << 40:
                (mtype, status) = struct.unpack_from("<II", pkt.payload)
                assert mtype == wn.NvspType.SEND_RNDIS_PACKET_COMPLETE
                self.tx_done[pkt.trans_id] = status
                section = self.in_use.pop(pkt.trans_id, None)  # None: a GPA-direct send (no section)
                if section is not None:
                    self.free.append(section)
                return
            self._feed(Inbound(InboundKind.COMPLETION, pkt.trans_id, bytes(pkt.payload)))
        elif pkt.type == INBAND:
            self.inband.append((pkt.trans_id, pkt.flags, bytes(pkt.payload)))
            self._feed(Inbound(InboundKind.INBAND, pkt.trans_id, bytes(pkt.payload)))
        else:
            assert pkt.type == XFER
            pageset, _owns, _rsvd, count = struct.unpack_from("<HBBI", pkt.header)
            assert pageset == wn.RECV_BUFFER_ID
            nv = wn.NvspSendRndisPacket.from_buffer_copy(bytes(pkt.payload).ljust(40, b"\0"))
            assert nv.type == wn.NvspType.SEND_RNDIS_PACKET
            for i in range(count):
                length, offset = struct.unpack_from("<II", pkt.header, 8 + 8 * i)
                msg = bytes(self.recv_buf[offset:offset + length])
                if nv.channel_type == wn.RndisChannelType.DATA:
                    mtype, mlen, doff, dlen = struct.unpack_from("<IIII", msg)
                    assert mtype == 1 and mlen <= length
                    self.frames.append(msg[8 + doff:8 + doff + dlen])
                elif struct.unpack_from("<I", msg)[0] == SET_CMPLT and struct.unpack_from("<I", msg, 8)[0] in self.raw_sets:
                    self.raw_sets[struct.unpack_from("<I", msg, 8)[0]] = struct.unpack_from("<I", msg, 12)[0]
                else:
                    self._feed(Inbound(InboundKind.RNDIS, pkt.trans_id, msg))
            self.send_packet(COMP, wn.receive_ack(), pkt.trans_id, 0)

    def switch_datapath(self, vf: bool) -> bytes:
        """NVSP 4 SWITCH_DATA_PATH as Linux sends it (in-band, completion requested, 40 bytes) — the
        guest engine has no VF path and never sends it; the completion's payload once it came."""
        tid = SWITCH_TID + len(self.switch_done)  # apart from the engine's ids and our data sends'
        self.switch_done[tid] = None
        self.send_packet(INBAND, struct.pack("<II", wn.NvspType.SWITCH_DATA_PATH, int(vf)).ljust(40, b"\0"), tid, RC)
        self.pump(lambda: self.switch_done[tid] is not None, "the switch-data-path completion")
        done = self.switch_done[tid]
        assert done is not None
        return done

    def rndis_set(self, oid: int, info: bytes) -> int:
        """An RNDIS SET the guest engine does not make (OID_GEN_RECEIVE_SCALE_PARAMETERS...), sent
        as Linux sends control messages (a send section, NVSP 107 control); its completion status."""
        rid = 0x5E70000 + len(self.raw_sets)
        self.raw_sets[rid] = None
        msg = struct.pack("<7I", 5, 28 + len(info), rid, oid, len(info), 20, 0) + info
        section = self.free.popleft()
        start = section * self.section_size
        self.send_buf[start:start + len(msg)] = msg
        self._tx_tid += 1
        self.in_use[self._tx_tid] = section
        nv = wn.NvspSendRndisPacket(type=wn.NvspType.SEND_RNDIS_PACKET, channel_type=1,
                                    section_index=section, section_size=len(msg))
        self.send_packet(INBAND, wn.to_bytes(nv), self._tx_tid, RC)
        self.pump(lambda: self.raw_sets[rid] is not None, "the SET completion")
        status = self.raw_sets[rid]
        assert status is not None
        return status

    def attach_subchannels(self, rings: list[tuple[int, Path, int]]) -> None:
        """Map the inbound ring of each subchannel (index, its `ring` file, ring size) given."""
        for index, path, size in rings:
            if index in self._subs:
                continue
            fd = os.open(path, os.O_RDWR)
            try:
                mm = mmap.mmap(fd, 2 * size)
            finally:
                os.close(fd)
            ring = Ring(mm, direction=Direction.RX, offset=size, size=size)
            ring.set_interrupt_mask(0)
            self._subs[index] = (mm, ring)

    def read_subchannels(self) -> int:
        """Read what the host put on the subchannels' inbound rings into sub_frames (frames of
        data transfer-page packets); the packets are not completed, their sections stay in use."""
        got = 0
        for index, (_mm, ring) in sorted(self._subs.items()):
            batch = ring.read_batch(64)
            for pkt in batch.packets:
                assert pkt.type == XFER
                count = struct.unpack_from("<HBBI", pkt.header)[3]
                for i in range(count):
                    length, offset = struct.unpack_from("<II", pkt.header, 8 + 8 * i)
                    msg = bytes(self.recv_buf[offset:offset + length])
                    doff, dlen = struct.unpack_from("<II", msg, 8)
                    self.sub_frames.setdefault(index, []).append(msg[8 + doff:8 + doff + dlen])
                    got += 1
        return got

    def _feed(self, item: Inbound) -> None:
        self.do(self.guest.receive(item))

    def do(self, effects: list[Effect]) -> None:
        """Perform the guest's effects in order: record its events, write its Sends."""
        for e in effects:
            if isinstance(e, Send):
                self.send(e)
            else:
                self.events.append(e)
        sections = self.guest.sections
        if sections is not None and not self.section_size:  # the send buffer is connected
            self.section_size = sections.pool.size
            self.free = deque(range(self.guest.data_sections))

    def bring_up(self) -> None:
        self.do(self.guest.start())
        self.pump(lambda: RndisConfigured() in self.events, "NVSP and RNDIS bring-up")

    def of(self, cls: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, cls)]

    def close(self) -> None:
        for index in list(self._subs):
            mm, ring = self._subs.pop(index)
            ring.detach()
            del ring
            mm.close()
        self.tx.detach()
        self.rx.detach()
        del self.tx, self.rx
        self.h.close()
