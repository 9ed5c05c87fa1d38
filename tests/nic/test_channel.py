"""hvuio.channel.Channel against the emulator's independent Python host ring (sim/vsp/ring.py).

The guest side is the real Channel over an anonymous shared mapping; the host side writes and
reads the same memory with HostRingWriter / HostRingReader, so every check goes through bytes a
host could have written. Interrupt = one end of a socketpair (the emulator's fd protocol).
"""

from __future__ import annotations

import contextlib
import mmap
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from hvuio.channel import Channel, MonitorSignal
from hvuio.device.uio import Interrupt, monitor_trigger
from hvuio.errors import HostProtocolError, LocalProtocolError, RescindedError, RingCorruptError
from hvuio.native.datapath import DataPath, Status
from hvuio.proto.events import Inbound, InboundKind, Outbound
from hvuio.proto.sections import ControlSections, SectionPool, split_send_sections
from hvuio.sim.host import wire as hw
from hvuio.sim.vsp.ring import HostRingReader, HostRingWriter
from hvuio.wire import nvsp as wn

PAGE = mmap.PAGESIZE
RING = PAGE + 64 * 1024
SECTION = 2048
RECV_SIZE = 8 * SECTION
SEND_SECTION = 1024
SEND_SIZE = 8 * SEND_SECTION


class CountingSignal:
    def __init__(self) -> None:
        self.count = 0

    def signal(self) -> None:
        self.count += 1

    def close(self) -> None:
        pass


@dataclass
class Pair:
    chan: Channel
    host_in: HostRingWriter  # host -> guest (the guest's RX ring)
    host_out: HostRingReader  # guest -> host (the guest's TX ring)
    recv: mmap.mmap
    send: mmap.mmap
    sig: CountingSignal
    peer: socket.socket

    def xfer(self, trans_id: int, messages: list[bytes], *, pageset: int = hw.RECV_BUFFER_ID,
             ranges: tuple[tuple[int, int], ...] | None = None, nvsp_type: int = wn.NvspType.SEND_RNDIS_PACKET,
             chan_type: int = 1) -> None:
        """Host writes `messages` into receive sections 0.. and a type-0x7 packet naming them."""
        made = []
        for i, msg in enumerate(messages):
            self.recv[i * SECTION:i * SECTION + len(msg)] = msg
            made.append((len(msg), i * SECTION))
        payload = hw.nvsp(nvsp_type, chan_type, 0xFFFFFFFF, 0, pad_to=40)
        raw = hw.encode_packet(0x7, 1, trans_id, payload, xfer_pageset_id=pageset,
                               ranges=ranges if ranges is not None else tuple(made))
        self.host_in.write_raw([raw])


@pytest.fixture
def pair() -> Iterator[Pair]:
    rings = mmap.mmap(-1, 2 * RING)
    recv, send = mmap.mmap(-1, RECV_SIZE), mmap.mmap(-1, SEND_SIZE)
    host_out = HostRingReader(memoryview(rings), offset=0, size=RING, header_size=PAGE)
    host_in = HostRingWriter(memoryview(rings), offset=RING, size=RING, header_size=PAGE)
    host_out.reset()
    host_in.reset()
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sig = CountingSignal()
    chan = Channel(rings, ring_size=RING, interrupt=Interrupt(a.detach(), "uio-test"), signaller=sig,
                   recv_buf=recv, send_buf=send, name="test channel")
    chan.set_recv_section(SECTION)
    yield Pair(chan, host_in, host_out, recv, send, sig, b)
    chan.close()
    chan.interrupt.close()
    b.close()


def host_reads(p: Pair) -> list[tuple[int, int, int, bytes]]:
    pkts, _ = p.host_out.read_batch()
    return [(k.type, k.flags, k.trans_id, k.payload) for k in pkts]


def test_inband_and_completion_become_inbound(pair: Pair) -> None:
    pair.host_in.write(0x6, b"A" * 40, trans_id=0)
    pair.host_in.write(0xB, b"B" * 16, trans_id=7)
    items = pair.chan.receive()
    assert items == [Inbound(InboundKind.INBAND, 0, b"A" * 40), Inbound(InboundKind.COMPLETION, 7, b"B" * 16)]


def test_transfer_page_control_messages_are_split_and_acked(pair: Pair) -> None:
    status = hw.rndis_status(0x4001000B)  # media connect
    reply = hw.rndis_query_complete(5, 0, b"\x01\x02\x03\x04")
    frame = hw.rndis_packet(b"\xff" * 60)
    pair.xfer(0x1234, [status + reply, frame])  # two messages in one range, a data packet in the next
    items = pair.chan.receive()
    assert items == [Inbound(InboundKind.RNDIS, 0x1234, status), Inbound(InboundKind.RNDIS, 0x1234, reply)]
    assert pair.chan.counters.rndis_data_dropped == 1
    sent = host_reads(pair)
    assert len(sent) == 1
    ptype, flags, tid, payload = sent[0]
    assert (ptype, flags, tid) == (0xB, 0, 0x1234)
    assert struct.unpack_from("<II", payload) == (wn.NvspType.SEND_RNDIS_PACKET_COMPLETE, wn.NvspStatus.SUCCESS)


@contextlib.contextmanager
def data_path(p: Pair) -> Iterator[tuple[DataPath, socket.socket]]:
    """The C pump over the channel's rings, its tap a datagram socketpair (the test reads the other
    end), wired as the engine wires it (`data_sink`)."""
    tap_guest, tap_host = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    irq_guest, irq_host = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    for sock in (tap_guest, tap_host, irq_guest, irq_host):
        sock.setblocking(False)
    dp = DataPath(tx_ring=p.chan.tx, rx_ring=p.chan.rx, recv_buf=p.recv, recv_section_size=SECTION,
                  send_buf=p.send, send_section_size=SEND_SECTION, send_section_count=8,
                  tap_fd=tap_guest.fileno(), irq_fd=irq_guest.fileno())
    p.chan.data_sink = dp.deliver_data
    try:
        yield dp, tap_host
    finally:
        p.chan.data_sink = None
        for sock in (tap_guest, tap_host, irq_guest, irq_host):
            sock.close()


def tap_frames(tap: socket.socket) -> list[bytes]:
    out = []
    while True:
        try:
            out.append(tap.recv(70000))
        except BlockingIOError:
            return out


@pytest.mark.parametrize("bad", [False, True])
def test_mixed_packet_frames_reach_the_tap_and_control_the_machines(pair: Pair, bad: bool) -> None:
    """Data, control reply, data in one packet (ranges dispatched on their own type, as Linux
    netvsc_receive): both frames on the tap, the reply handed up, one completion (FAILED when a
    data message was dropped)."""
    a, b = bytes(range(60)), bytes(range(100, 200))
    reply = hw.rndis_query_complete(5, 0, b"\x01\x02\x03\x04")
    last = bytearray(hw.rndis_packet(b))
    if bad:
        struct.pack_into("<I", last, 8, 8)               # data_offset below 36: the pump drops it
    with data_path(pair) as (dp, tap):
        pair.xfer(0x77, [hw.rndis_packet(a), reply, bytes(last)], chan_type=0)
        assert dp.rx() is Status.CONTROL                 # the engine's on_control: read, then ingest
        items = pair.chan.ingest(dp.read_control())
        assert items == [Inbound(InboundKind.RNDIS, 0x77, reply)]
        assert tap_frames(tap) == ([a] if bad else [a, b])
        c = dp.counters()
        assert c["rx_ctl_data"] == 2 and c["rx_comp_sent"] == 0
        assert c["rx_ranges"] == c["rx_ranges_written"] + c["rx_range_drops"]
        assert dp.rx() is Status.IDLE
    assert pair.chan.counters.rndis_data_handed == 2 and pair.chan.counters.rndis_data_dropped == 0
    sent = host_reads(pair)
    assert [(ptype, flags, tid) for ptype, flags, tid, _ in sent] == [(0xB, 0, 0x77)]
    status = wn.NvspStatus.FAIL if bad else wn.NvspStatus.SUCCESS
    assert struct.unpack_from("<II", sent[0][3]) == (wn.NvspType.SEND_RNDIS_PACKET_COMPLETE, status)


def test_transfer_page_id_zero_is_acked_with_id_zero(pair: Pair) -> None:
    # OpenVMM names a transfer by its first receive section, and section 0 exists (VMBUS.md §3.6).
    msg = hw.rndis_status(0x4001000B)
    pair.xfer(0, [msg])
    assert pair.chan.receive() == [Inbound(InboundKind.RNDIS, 0, msg)]
    ptype, flags, tid, _ = host_reads(pair)[0]
    assert (ptype, flags, tid) == (0xB, 0, 0)


def test_received_bytes_are_a_private_copy(pair: Pair) -> None:
    msg = hw.rndis_status(0x4001000C)
    pair.xfer(1, [msg])
    items = pair.chan.receive()
    pair.recv[0:len(msg)] = bytes(len(msg))  # the host rewrites the section afterwards
    assert items[0].payload == msg


@pytest.mark.parametrize("case, field", [
    ("pageset", "xfer_pageset_id"),
    ("past_buffer", "range"),
    ("over_section", "range"),
])
def test_bad_transfer_page_headers_are_refused(pair: Pair, case: str, field: str) -> None:
    msg = hw.rndis_status(0x4001000B)
    if case == "pageset":
        pair.xfer(1, [msg], pageset=0xBEEF)
    elif case == "past_buffer":
        pair.xfer(1, [msg], ranges=((len(msg), RECV_SIZE - 8),))
    else:
        pair.xfer(1, [msg], ranges=((SECTION + 8, 0),))
    with pytest.raises(RingCorruptError) as info:
        pair.chan.receive()
    assert info.value.field == field
    assert host_reads(pair) == []  # nothing acked


def test_bad_nvsp_type_and_rndis_length_are_host_errors(pair: Pair) -> None:
    pair.xfer(1, [hw.rndis_status(0x4001000B)], nvsp_type=wn.NvspType.SEND_RNDIS_PACKET_COMPLETE)
    with pytest.raises(HostProtocolError, match="NVSP type 108 is not 107"):
        pair.chan.receive()
    bad = bytearray(hw.rndis_status(0x4001000B))
    bad[4:8] = struct.pack("<I", len(bad) + 8)
    pair.xfer(2, [bytes(bad)])
    with pytest.raises(HostProtocolError, match="message_length"):
        pair.chan.receive()


def test_transfer_pages_before_the_receive_buffer_are_refused(pair: Pair) -> None:
    pair.chan._recv_section = None
    pair.xfer(1, [hw.rndis_status(0x4001000B)])
    with pytest.raises(HostProtocolError, match="before the receive buffer was connected"):
        pair.chan.receive()


def rndis_out(tid: int, body: bytes) -> Outbound:
    nv = wn.NvspSendRndisPacket(type=wn.NvspType.SEND_RNDIS_PACKET, channel_type=1,
                                section_index=wn.SEND_SECTION_NONE, section_size=0)
    return Outbound(wn.to_bytes(nv), tid, True, body)


def test_rndis_sends_use_pool_sections_queue_and_release(pair: Pair) -> None:
    sections = ControlSections(SectionPool(6, 2, SEND_SECTION))
    bodies = [bytes([i]) * (16 + i) for i in range(3)]
    for i, body in enumerate(bodies):
        pair.chan.send_all(sections.place([rndis_out(100 + i, body)]))
    assert sections.queued == 1
    sent = host_reads(pair)
    assert [s[2] for s in sent] == [100, 101]
    for (_, flags, _, payload), body in zip(sent, bodies):
        _, chan_type, index, size = struct.unpack_from("<IIII", payload)
        assert flags == 1 and index in (6, 7) and size == len(body)
        assert bytes(pair.send[index * SEND_SECTION:index * SEND_SECTION + size]) == body
    pair.chan.send_all(sections.release(100))  # the host completed the first: the queued one goes out in its section
    (queued,) = host_reads(pair)
    _, _, index, size = struct.unpack_from("<IIII", queued[3])
    assert queued[2] == 102 and bytes(pair.send[index * SEND_SECTION:index * SEND_SECTION + size]) == bodies[2]


def test_signal_only_on_empty_to_non_empty(pair: Pair) -> None:
    pair.chan.send_raw(0x6, b"x" * 40, trans_id=1, want_completion=True)
    pair.chan.send_raw(0x6, b"y" * 40, trans_id=2, want_completion=True)
    assert pair.sig.count == 1  # the second write found the ring non-empty (VMBUS.md §3.11 a)
    host_reads(pair)
    pair.chan.send_raw(0x6, b"z" * 40, trans_id=3, want_completion=False)
    assert pair.sig.count == 2


def test_wait_sees_data_and_rescind(pair: Pair) -> None:
    assert pair.chan.wait(0) is False
    pair.host_in.write(0x6, b"A" * 40)
    assert pair.chan.wait(0) is True  # data already there: no interrupt needed
    pair.chan.receive()
    pair.host_in.write(0x6, b"B" * 40)
    pair.peer.send(struct.pack("=i", 1))
    assert pair.chan.wait(1.0) is True
    pair.chan.receive()
    pair.peer.shutdown(socket.SHUT_RDWR)
    with pytest.raises(RescindedError):
        pair.chan.wait(1.0)


def test_monitor_signal_sets_only_its_bit() -> None:
    page = mmap.mmap(-1, 4096)
    trig = monitor_trigger(37)
    page[trig.pending_offset:trig.pending_offset + 4] = struct.pack("<I", 1 << 3)  # another channel's bit
    sig = MonitorSignal(page, 37)
    sig.signal()
    sig.signal()
    assert struct.unpack_from("<I", page, trig.pending_offset)[0] == (1 << 3) | (1 << trig.bit)
    sig.close()
    with pytest.raises(LocalProtocolError):
        sig.signal()
    page.close()  # close() released the export


def test_section_split_and_pool_rules() -> None:
    assert split_send_sections(2730) == (2714, 2714)
    assert split_send_sections(4) == (2, 2)
    with pytest.raises(HostProtocolError):
        split_send_sections(1)
    pool = SectionPool(2, 2, 64)
    a, b = pool.alloc(), pool.alloc()
    assert {a, b} == {2, 3} and pool.alloc() is None
    pool.free(a)  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        pool.free(a)  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        pool.offset(4)
