"""One VMBus channel of a netvsc device: outbound Ring + inbound Ring + Interrupt + signalling.

What lives here:
  * `Channel` — built from an open `UioHandle` (the primary: map 0, TX ring at 0, RX ring at
    S = size / 2, VMBUS.md §1.4) or from a subchannel's `ring` file. `send()` writes a `Send`
    (an Outbound with its place, from hvuio/proto/netvsc.py) or `send_raw()` raw bytes, and
    signals the host per §3.11(a); an RNDIS control message is first copied into the place the
    Send names (which place is free is proto/sections.py's accounting, not the channel's): a
    send-buffer section (then an in-band packet), or a control page of the NIC's guest-memory
    pool (`control_pages`, a GuestRegion the Nic sets), then a GPA-direct packet (type 9,
    §3.7): u32 reserved 0, u32 range count 1, the range {len, offset 0, page number}, then the
    NVSP message, completion requested. `receive()` copies packets out (the C core validates §4 items 1–10),
    signals for flow control (§3.11 b) and turns them into proto `Inbound`s; `ingest()` does the
    same for one packet read elsewhere (the data path's `read_control`). With `trace` set
    (hvuio/trace/writer.py) every packet in and out is recorded there, with the RNDIS bytes its
    section, page or transfer-page ranges held.
  * Transfer-page packets (type 0x7) on the control path: header and ranges validated (§4.11, by
    the C core's `check_xfer_header`), the NVSP payload checked to be type 107 (§4.13), every
    range copied out of the receive buffer before it is parsed (§4.16), split into RNDIS
    messages, and the packet completed once with NVSP type 108 and the same trans_id (§3.6).
    Each message is dispatched on its own type, as Linux netvsc_receive / DPDK
    hn_nvs_handle_rxbuf do per range: control messages go up as Inbound items, data messages to
    `data_sink` (the running data path's `deliver_data`, which writes their frames to the tap; a
    packet mixing both reaches this path because the pump leaves it whole), or, with no data path
    running, are counted and dropped. A data message the sink dropped makes the completion FAILED,
    as the pump's own completions.
  * Signalling (§3.12): a monitored channel ORs its trigger bit into the monitor page atomically;
    a non-monitored one writes 1 to the uio fd (the kernel's irqcontrol then signals the host).
    `MonitorSignal` uses the C core's `hvu_monitor_signal` (a locked OR, never a plain store: the
    word is shared with every other channel of the guest, §3.12 item 61).
  * Interrupt policy (§1.10, §1.13 step 5): `unmask()` writes 1 to the uio fd once; `wait()`
    re-clears the inbound mask by a direct store after every wake-up (kernels up to 6.16 set it
    to 1 on each interrupt, and a write(1) would also signal the host each time), re-checks the
    ring, then polls. EIO / EOF become `RescindedError`, or what the platform explains the loss
    as (the emulator gone; uio.Interrupt does that).

What must not live here: protocol state and send-section accounting (hvuio/proto), device
discovery (hvuio/device), the hot data path (hvuio/native/datapath.py + _native/), timers other
than the bounded wait for ring space.
"""

from __future__ import annotations

import mmap
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Protocol

from hvuio.device.guestmem import HV_PAGE, GuestRegion
from hvuio.device.sysfs import SYSFS_HINT
from hvuio.device.uio import Interrupt, UioHandle, monitor_trigger
from hvuio.errors import (HostProtocolError, HostTimeoutError, LocalProtocolError, PlatformError,
                          SysfsError)
from hvuio.native.ring import (FLAG_COMPLETION_REQUESTED, Direction, MonitorBell, Packet, PacketType, Ring,
                               check_xfer_header)
from hvuio.proto.events import Inbound, InboundKind, Send
from hvuio.trace.pcapng import INBOUND, OUTBOUND
from hvuio.wire import nvsp as wn
from hvuio.wire import rndis as wr
from hvuio.wire import vmbus as wv

if TYPE_CHECKING:
    from hvuio.trace.writer import Trace

#: netvsc uses in-band, transfer-page and completion packets only (VMBUS.md §4 item 9).
NETVSC_TYPES: Final = (PacketType.INBAND, PacketType.XFER_PAGES, PacketType.COMP)
#: Seconds a control send may wait for outbound ring space before the host is declared stuck
#: (the same 5 s the protocol machines give a reply, hvuio/proto/limits.py).
RING_SPACE_TIMEOUT: Final = 5.0
_SPACE_POLL: Final = 0.005
_XFER_HEAD: Final = struct.Struct("<HBBI")  # pageset id, sender_owns, reserved, range_cnt
_RANGE: Final = struct.Struct("<II")  # byte_count, byte_offset
_DESC: Final = struct.Struct("<HHHHQ")
#: GPA-direct header with one range (VMBUS.md §3.7): reserved, range_count, byte_count, byte_offset, pfn
_GPA_ONE_RANGE: Final = struct.Struct("<IIIIQ")


class Signaller(Protocol):
    """How this channel tells the host "look at the outbound ring" (VMBUS.md §3.12)."""

    def signal(self) -> None: ...

    def close(self) -> None: ...


class IrqSignal:
    """Non-monitored channel: a 4-byte write of 1 to the uio fd (kernel irqcontrol, 6.10+)."""

    def __init__(self, interrupt: Interrupt) -> None:
        self._irq = interrupt

    def signal(self) -> None:
        self._irq.enable()

    def close(self) -> None:
        pass


class MonitorSignal:
    """Monitored channel: atomic OR of bit id % 32 into trigger_group[id / 32].pending (map 2)."""

    def __init__(self, monitor_page: mmap.mmap, monitor_id: int) -> None:
        try:
            trig = monitor_trigger(monitor_id)
        except ValueError as err:
            raise SysfsError(str(err), SYSFS_HINT) from None
        if trig.pending_offset + 4 > len(monitor_page):
            raise SysfsError(f"monitor page of {len(monitor_page)} bytes has no trigger group {trig.group}",
                             SYSFS_HINT)
        self._bell = MonitorBell(monitor_page, monitor_id)
        self.monitor_id = monitor_id

    def signal(self) -> None:
        self._bell.ring()

    def close(self) -> None:
        self._bell.close()  # releases the export of the mmap so it can be unmapped


@dataclass
class ChannelCounters:
    packets_in: int = 0
    packets_out: int = 0
    signals: int = 0
    xfer_packets: int = 0
    rndis_control: int = 0
    rndis_data_dropped: int = 0
    rndis_data_handed: int = 0  # data messages given to the data path (`Channel.data_sink`)
    acks_sent: int = 0
    control_gpa: int = 0  # RNDIS control messages sent GPA-direct (from a control page)
    control_sections: int = 0  # RNDIS control messages sent in a send-buffer section
    extra: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, int]:
        d = {k: v for k, v in vars(self).items() if isinstance(v, int)}
        d.update(self.extra)
        return d


class Channel:
    """Two rings over `rings` (TX at 0, RX at `ring_size`), the interrupt and the signal path."""

    def __init__(self, rings: mmap.mmap, *, ring_size: int, interrupt: Interrupt, signaller: Signaller,
                 recv_buf: mmap.mmap | None, send_buf: mmap.mmap | None, name: str,
                 may_unmask: bool = True, relid: int = 0) -> None:
        if len(rings) < 2 * ring_size:
            raise SysfsError(f"{name}: ring mapping of {len(rings):#x} bytes cannot hold two rings of {ring_size:#x}",
                             SYSFS_HINT)
        self.name = name
        self.relid = relid
        tx = Ring(rings, direction=Direction.TX, offset=0, size=ring_size, accept_types=NETVSC_TYPES)
        try:
            rx = Ring(rings, direction=Direction.RX, offset=ring_size, size=ring_size,
                      accept_types=NETVSC_TYPES)
        except BaseException:
            tx.detach()  # release its export of the mapping so the handle can unmap it
            raise
        self._rings: tuple[Ring, Ring] | None = (tx, rx)
        self.interrupt = interrupt
        self.recv_buf = recv_buf
        self.send_buf = send_buf
        self.may_unmask = may_unmask
        self.counters = ChannelCounters()
        self._signaller = signaller
        self._recv_section: int | None = None
        #: the control pages of the NIC's guest-memory pool (GPA-direct control messages), if any
        self.control_pages: GuestRegion | None = None
        #: where RNDIS data messages met on this path go while a data path runs (its
        #: `deliver_data`: True = frame written, False = dropped); None: counted and dropped
        self.data_sink: Callable[[bytes], bool] | None = None
        #: where every control packet in and out is recorded (`up --trace`); None: not traced
        self.trace: Trace | None = None

    # ---- construction -------------------------------------------------------------------------

    @staticmethod
    def _make_signaller(handle: UioHandle, monitor_id: int | None) -> Signaller:
        if monitor_id is None:
            return IrqSignal(handle.interrupt)
        return MonitorSignal(handle.monitor_page, monitor_id)

    @classmethod
    def _build(cls, handle: UioHandle, rings: mmap.mmap, ring_size: int, monitor_id: int | None,
               name: str, may_unmask: bool, relid: int) -> Channel:
        sig = cls._make_signaller(handle, monitor_id)
        try:
            return cls(rings, ring_size=ring_size, interrupt=handle.interrupt, signaller=sig,
                       recv_buf=handle.recv_buffer, send_buf=handle.send_buffer, name=name,
                       may_unmask=may_unmask, relid=relid)
        except BaseException:
            sig.close()  # the monitor bell exports map 2; the handle could not unmap it otherwise
            raise

    @classmethod
    def primary(cls, handle: UioHandle) -> Channel:
        """The primary channel of an open device (map 0; monitor id from the device directory)."""
        return cls._build(handle, handle.rings, handle.ring_size, handle.device.monitor_id,
                          f"{handle.device.guid} channel {handle.device.relid}", True, handle.device.relid)

    @classmethod
    def subchannel(cls, handle: UioHandle, relid: int) -> Channel:
        """A subchannel from its `ring` file. Its inbound mask is never cleared (VMBUS.md §1.10 item 39)."""
        ring = handle.open_subchannel_ring(relid)
        return cls._build(handle, ring, len(ring) // 2, handle.device.channel(relid).monitor_id,
                          f"{handle.device.guid} channel {relid}", False, relid)

    @property
    def tx(self) -> Ring:
        """The outbound (guest -> host) ring."""
        if self._rings is None:
            raise LocalProtocolError(f"{self.name}: channel used after close")
        return self._rings[0]

    @property
    def rx(self) -> Ring:
        """The inbound (host -> guest) ring."""
        if self._rings is None:
            raise LocalProtocolError(f"{self.name}: channel used after close")
        return self._rings[1]

    @property
    def closed(self) -> bool:
        return self._rings is None

    # ---- configuration from NVSP events ------------------------------------------------------------

    def set_recv_section(self, section_size: int) -> None:
        """Receive-buffer slot size from RecvBufReady: the largest transfer-page range allowed."""
        self._recv_section = section_size

    # ---- sending --------------------------------------------------------------------------------------

    def signal(self) -> None:
        self.counters.signals += 1
        self._signaller.signal()

    def send(self, msg: Send) -> None:
        """Write one message NetvscGuest placed; an RNDIS message goes into its page or section first."""
        rndis = msg.message.rndis
        if rndis is not None and msg.page is not None:
            self._send_gpa_direct(msg, rndis, msg.page)
            return
        if rndis is not None:
            if self.send_buf is None:
                raise LocalProtocolError(f"{self.name}: no send buffer to hold control messages")
            if msg.offset + len(rndis) > len(self.send_buf):
                raise LocalProtocolError(f"{self.name}: control section {msg.section} ends past the send buffer")
            self.send_buf[msg.offset:msg.offset + len(rndis)] = rndis
            self.counters.control_sections += 1
        self.send_raw(PacketType.INBAND, msg.payload, trans_id=msg.message.trans_id,
                      want_completion=msg.message.want_completion, rndis=rndis or b"")

    def _send_gpa_direct(self, msg: Send, rndis: bytes, page: int) -> None:
        """The RNDIS bytes into control page `page`, then one type-9 packet naming its page number."""
        pages = self.control_pages
        if pages is None:
            raise LocalProtocolError(f"{self.name}: a control message was placed in page {page} but the "
                                     "channel has no control pages")
        if not 0 <= page < pages.pages or msg.offset != page * HV_PAGE:
            raise LocalProtocolError(f"{self.name}: control page {page} (offset {msg.offset}) is outside the "
                                     f"{pages.pages} control pages")
        if len(rndis) > HV_PAGE:
            raise LocalProtocolError(f"{self.name}: control message of {len(rndis)} bytes would cross its "
                                     f"{HV_PAGE}-byte page")
        pages.view[msg.offset:msg.offset + len(rndis)] = rndis
        header = _GPA_ONE_RANGE.pack(0, 1, len(rndis), 0, pages.pfns[page])
        self.send_raw(PacketType.GPA_DIRECT, msg.payload, trans_id=msg.message.trans_id, want_completion=True,
                      header=header, rndis=rndis)
        self.counters.control_gpa += 1

    def send_all(self, msgs: list[Send]) -> None:
        for m in msgs:
            self.send(m)

    def send_raw(self, ptype: int, payload: bytes, *, trans_id: int, want_completion: bool,
                 header: bytes = b"", rndis: bytes = b"") -> None:
        """One packet (`header`: its type-specific header, a multiple of 8 bytes); waits (bounded)
        for ring space, then signals per §3.11(a). `rndis`: the RNDIS bytes the packet's section or
        page holds, for the trace only."""
        flags = FLAG_COMPLETION_REQUESTED if want_completion else 0
        deadline: float | None = None
        while True:
            try:
                need_signal = self.tx.send(ptype, payload, flags=flags, trans_id=trans_id, header=header)
                break
            except BlockingIOError:
                now = time.monotonic()
                if deadline is None:
                    deadline = now + RING_SPACE_TIMEOUT
                elif now >= deadline:
                    raise HostTimeoutError(f"{self.name}: the host did not drain the outbound ring "
                                           f"within {RING_SPACE_TIMEOUT:g} s") from None
                time.sleep(_SPACE_POLL)
        self.counters.packets_out += 1
        if self.trace is not None:
            self.trace.control(OUTBOUND, self.relid, ptype, trans_id, payload, rndis)
        if need_signal:
            self.signal()

    # ---- receiving ------------------------------------------------------------------------------------

    def receive(self, max_packets: int = 64) -> list[Inbound]:
        """Every packet available now (up to `max_packets`), as proto Inbound items."""
        batch = self.rx.read_batch(max_packets)
        if batch.need_signal:
            self.signal()
        out: list[Inbound] = []
        for pkt in batch.packets:
            out.extend(self.ingest(pkt))
        return out

    def ingest(self, pkt: Packet) -> list[Inbound]:
        """One packet copied out of the inbound ring -> Inbound items (acks transfer pages)."""
        self.counters.packets_in += 1
        if self.trace is not None and pkt.type != PacketType.XFER_PAGES:  # those once their ranges are read
            self.trace.control(INBOUND, self.relid, pkt.type, pkt.trans_id, pkt.payload)
        if pkt.type == PacketType.INBAND:
            return [Inbound(InboundKind.INBAND, pkt.trans_id, pkt.payload)]
        if pkt.type == PacketType.COMP:
            return [Inbound(InboundKind.COMPLETION, pkt.trans_id, pkt.payload)]
        if pkt.type == PacketType.XFER_PAGES:
            return self._transfer_pages(pkt)
        raise HostProtocolError(f"{self.name}: packet type {pkt.type:#x} is not one netvsc uses (0x6, 0x7, 0xb)")

    def _transfer_pages(self, pkt: Packet) -> list[Inbound]:
        self.counters.xfer_packets += 1
        what = f"{self.name}: transfer-page packet {pkt.trans_id:#x}"
        if self.recv_buf is None or self._recv_section is None:
            raise HostProtocolError(f"{what} arrived before the receive buffer was connected")
        hlen = _DESC.size + len(pkt.header)
        raw = _DESC.pack(pkt.type, hlen // 8, (hlen + len(pkt.payload)) // 8, pkt.flags, pkt.trans_id)
        check_xfer_header(raw + pkt.header + pkt.payload, pageset_id=wv.XFER_PAGESET_ID_NETVSC,
                          recv_buf_size=len(self.recv_buf), section_size=self._recv_section)
        if len(pkt.payload) < wn.NvspSendRndisPacket.MIN_LEN:
            raise HostProtocolError(f"{what}: NVSP payload of {len(pkt.payload)} bytes is shorter than "
                                    f"{wn.NvspSendRndisPacket.MIN_LEN}")
        nvsp_type = struct.unpack_from("<I", pkt.payload)[0]
        if nvsp_type != wn.NvspType.SEND_RNDIS_PACKET:
            raise HostProtocolError(f"{what}: NVSP type {nvsp_type} is not {int(wn.NvspType.SEND_RNDIS_PACKET)} "
                                    "(send RNDIS packet)")
        _, _, _, count = _XFER_HEAD.unpack_from(pkt.header)
        out: list[Inbound] = []
        delivered = True
        ranges: list[bytes] = []
        for i in range(count):
            length, offset = _RANGE.unpack_from(pkt.header, _XFER_HEAD.size + 8 * i)
            ranges.append(bytes(self.recv_buf[offset:offset + length]))  # private copy before parsing (§4.16)
        if self.trace is not None:
            self.trace.control(INBOUND, self.relid, pkt.type, pkt.trans_id, pkt.payload, b"".join(ranges))
        for i, data in enumerate(ranges):
            delivered &= self._split_rndis(data, pkt.trans_id, f"{what} range {i}", out)
        status = wn.NvspStatus.SUCCESS if delivered else wn.NvspStatus.FAIL
        self.send_raw(PacketType.COMP, wn.receive_ack(status), trans_id=pkt.trans_id, want_completion=False)
        self.counters.acks_sent += 1
        return out

    def _split_rndis(self, data: bytes, trans_id: int, what: str, out: list[Inbound]) -> bool:
        """The RNDIS messages of one range: control ones appended to `out`, data ones to the
        sink. False when the sink dropped one."""
        delivered = True
        pos = 0
        while pos < len(data):
            if len(data) - pos < wr.RNDIS_HEADER_SIZE:
                raise HostProtocolError(f"{what}: {len(data) - pos} bytes left at offset {pos}, "
                                        "fewer than an 8-byte RNDIS header")
            mtype, mlen = struct.unpack_from("<II", data, pos)
            if not wr.RNDIS_HEADER_SIZE <= mlen <= len(data) - pos:
                raise HostProtocolError(f"{what}: RNDIS message_length {mlen} at offset {pos} outside "
                                        f"[8, {len(data) - pos}] (bytes left in the range)")
            if mtype == wr.RndisType.PACKET and self.data_sink is not None:
                self.counters.rndis_data_handed += 1
                delivered &= self.data_sink(data[pos:pos + mlen])
            elif mtype == wr.RndisType.PACKET:
                self.counters.rndis_data_dropped += 1
            else:
                self.counters.rndis_control += 1
                out.append(Inbound(InboundKind.RNDIS, trans_id, data[pos:pos + mlen]))
            pos += mlen
        return delivered

    # ---- waiting ------------------------------------------------------------------------------------

    def unmask(self) -> None:
        """Ask for host interrupts on this channel: write 1 to the uio fd (VMBUS.md §1.10)."""
        if self.may_unmask:
            self.interrupt.enable()

    def wait(self, timeout: float) -> bool:
        """True when the inbound ring has data now or after an interrupt within `timeout` s."""
        if self.rx.bytes_to_read():
            return True
        woke = self.interrupt.wait(timeout) is not None
        if woke and self.may_unmask and self.rx.interrupt_mask:
            self.rx.set_interrupt_mask(0)  # kernels <= 6.16 auto-mask on every interrupt
        return bool(self.rx.bytes_to_read())

    # ---- teardown -----------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop using the rings and the monitor page (the UioHandle unmaps and closes the fd)."""
        if self._rings is None:
            return
        for ring in self._rings:
            ring.detach()
        self._rings = None  # drops the rings' exports of the mapping (others may hold DataPath's)
        self.control_pages = None  # its view is of the Nic's guest memory, released after this
        self._signaller.close()
