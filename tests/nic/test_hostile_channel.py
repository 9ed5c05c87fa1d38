"""Hostile host packets through the guest's control path: Channel.ingest -> Nic.process (NetvscGuest).

Invariant (the project standard, VMBUS.md §4): whatever packet the host puts in the inbound ring —
any type, flags, trans_id, header and payload, any transfer-page ranges over the receive
buffer, any bytes in that buffer — the control path either hands the machines what it found
and acts on their events, or raises a host error: HostProtocolError (RingCorruptError is one)
or HostRefusedError (a well-formed "no"). Nothing else escapes: no IndexError, struct.error,
ValueError, KeyError, OverflowError, and no LocalProtocolError (that would blame hvuio for what
the host did). Every RNDIS message found in a range is either handed up or counted as dropped.

The harness needs no emulator: a Channel over anonymous mappings (TX ring, RX ring, a small
receive and send buffer), an interrupt fd from a socketpair, and a `Nic` whose NetvscGuest is
driven to a chosen stage with well-formed replies first.
"""

from __future__ import annotations

import mmap
import socket
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from hvuio.channel import Channel
from hvuio.device.uio import Interrupt
from hvuio.errors import HostProtocolError, HostRefusedError, RingCorruptError
from hvuio.native.ring import Packet, PacketType
from hvuio.nic import Nic
from hvuio.nicinfo import NicInfo
from hvuio.proto.events import Inbound, InboundKind, Outbound
from hvuio.proto.limits import MAX_QUEUED_CONTROL
from hvuio.proto.netvsc import NetvscGuest
from hvuio.proto.nvsp import BufferGrant
from hvuio.proto.sections import ControlSections, SectionPool
from hvuio.wire import nvsp as wn
from hvuio.wire import rndis as wr
from hvuio.wire import vmbus as wv

from support.nvsp_host import chim_resp, init_resp, rxbuf_resp
from support.rndis_host import init_cmplt
from support.strategies import nvsp_payload, rndis_message

PAGE = mmap.PAGESIZE
RING = PAGE + 64 * 1024
SECTION = 1024
RECV_SIZE = 16 * SECTION
SEND_SECTION = 1024
SEND_SIZE = 32 * SEND_SECTION
HOST_ERRORS = (HostProtocolError, HostRefusedError)


class Recorder:
    """Signaller that counts; the harness has no host to wake."""

    def __init__(self) -> None:
        self.count = 0

    def signal(self) -> None:
        self.count += 1

    def close(self) -> None:
        pass


class RecordingChannel(Channel):
    """A Channel that also remembers every trans_id it sent (for replies that match)."""

    sent: list[int]
    mem: mmap.mmap  # the mapping under both rings (for tests that write the host's side)

    def send_raw(self, ptype: int, payload: bytes, *, trans_id: int, want_completion: bool,
                 header: bytes = b"", rndis: bytes = b"") -> None:
        self.sent.append(trans_id)
        super().send_raw(ptype, payload, trans_id=trans_id, want_completion=want_completion, header=header,
                         rndis=rndis)


@contextmanager
def channel() -> Iterator[RecordingChannel]:
    rings = mmap.mmap(-1, 2 * RING)
    recv, send = mmap.mmap(-1, RECV_SIZE), mmap.mmap(-1, SEND_SIZE)
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    chan = RecordingChannel(rings, ring_size=RING, interrupt=Interrupt(a.detach(), "uio-hostile"),
                            signaller=Recorder(), recv_buf=recv, send_buf=send, name="hostile channel")
    chan.sent = []
    chan.mem = rings
    try:
        yield chan
    finally:
        chan.close()
        chan.interrupt.close()
        b.close()
        for m in (rings, recv, send):
            m.close()


def xfer_packet(trans_id: int, ranges: list[tuple[int, int]], *, pageset: int = wv.XFER_PAGESET_ID_NETVSC,
                range_cnt: int | None = None, nvsp: bytes | None = None, flags: int = 0) -> Packet:
    """A type-0x7 packet as the C core hands it up (header and payload 8-byte padded)."""
    head = struct.pack("<HBBI", pageset, 0, 0, len(ranges) if range_cnt is None else range_cnt)
    head += b"".join(struct.pack("<II", count, offset) for count, offset in ranges)
    head += bytes(-(16 + len(head)) % 8)
    if nvsp is None:
        nvsp = struct.pack("<IIII", wn.NvspType.SEND_RNDIS_PACKET, 1, 0xFFFFFFFF, 0)
    nvsp += bytes(-len(nvsp) % 8)
    return Packet(type=PacketType.XFER_PAGES, flags=flags, trans_id=trans_id, header=head, payload=nvsp)


def nic_at(tmp: Path, chan: RecordingChannel, stage: int) -> Nic:
    """A Nic over `chan`, its NetvscGuest driven with well-formed host replies to `stage`:
    0 INIT sent, 1 receive buffer connect sent, 2 send buffer connect sent, 3 RNDIS init sent,
    4 RNDIS initialized (bring-up queries in flight)."""
    nic = Nic(tmp, "hostile")
    nic.channel = chan
    nic.info = NicInfo(device="hostile", uio="uio0", relid=1, monitored=False, ring_size=RING,
                       recv_buffer_size=RECV_SIZE, send_buffer_size=SEND_SIZE)
    nic.guest = NetvscGuest(recv_buf=BufferGrant(1, RECV_SIZE), send_buf=BufferGrant(2, SEND_SIZE))
    nic._perform(nic.guest.start())  # what Nic.open does once the channel is built
    replies = [init_resp(), rxbuf_resp(sections=[(0, SECTION, RECV_SIZE // SECTION, RECV_SIZE)]),
               chim_resp(sectsz=SEND_SECTION)]
    for reply in replies[:min(stage, 3)]:
        nic.process([Inbound(InboundKind.COMPLETION, chan.sent[-1], reply)])
    if stage >= 4:
        assert nic.guest.rndis is not None
        nic.process([Inbound(InboundKind.RNDIS, 0, init_cmplt(1))])
    return nic


def walk_rndis(data: bytes) -> tuple[int, int] | None:
    """(control messages, data messages) a well-formed range holds, None if it is malformed."""
    pos = control = packets = 0
    while pos < len(data):
        if len(data) - pos < 8:
            return None
        mtype, mlen = struct.unpack_from("<II", data, pos)
        if mlen < 8 or mlen > len(data) - pos:
            return None
        packets += mtype == wr.RndisType.PACKET
        control += mtype != wr.RndisType.PACKET
        pos += mlen
    return control, packets


# ---- strategies ---------------------------------------------------------------------------------

U32 = st.integers(0, 0xFFFFFFFF)
EDGE = st.sampled_from([0, 1, 7, 8, 16, SECTION - 8, SECTION, SECTION + 1, RECV_SIZE - SECTION,
                        RECV_SIZE - 8, RECV_SIZE, RECV_SIZE + 8, 0x7FFFFFFF, 0xFFFFFFF8, 0xFFFFFFFF])
RANGE = st.tuples(st.one_of(EDGE, st.integers(0, SECTION + 16), U32),
                  st.one_of(EDGE, st.integers(0, RECV_SIZE).map(lambda v: v & ~7), U32))


@st.composite
def hostile_packet(draw: Any, ids: list[int]) -> Packet:
    kind = draw(st.sampled_from(["inband", "comp", "xfer", "xfer", "xfer", "other"]))
    xid = draw(st.one_of(st.integers(0, 2**64 - 1), st.sampled_from(ids or [0])))
    flags = draw(st.sampled_from([0, 0, 1]))
    if kind == "xfer":
        ranges = draw(st.lists(RANGE, max_size=6))
        cnt = draw(st.one_of(st.none(), st.none(), st.sampled_from([0, 1, 7, 0x10000, 0xFFFFFFFF])))
        pageset = draw(st.sampled_from([wv.XFER_PAGESET_ID_NETVSC] * 4 + [0, 0xBEEF]))
        nvsp = draw(st.one_of(st.none(), st.none(), nvsp_payload()))
        return xfer_packet(xid, ranges, pageset=pageset, range_cnt=cnt, nvsp=nvsp, flags=flags)
    payload = draw(nvsp_payload())
    payload += bytes(-len(payload) % 8)
    header = bytes(8 * draw(st.integers(0, 3)))
    ptype = {"inband": PacketType.INBAND, "comp": PacketType.COMP}.get(
        kind, draw(st.sampled_from([0, 1, 0x8, 0x9, 0xA, 0xC, 0xFFFF])))
    return Packet(type=ptype, flags=flags, trans_id=xid, header=header, payload=payload)


@st.composite
def receive_buffer(draw: Any) -> bytes:
    """Receive-buffer contents: RNDIS messages (control, data, malformed) packed section by section."""
    out = bytearray()
    for _ in range(draw(st.integers(0, RECV_SIZE // SECTION))):
        msgs = draw(st.lists(st.one_of(rndis_message(),
                                       st.binary(min_size=8, max_size=64).map(
                                           lambda b: struct.pack("<II", wr.RndisType.PACKET, 8 + len(b)) + b)),
                             max_size=4))
        sect = b"".join(msgs)[:SECTION]
        out += sect + bytes(SECTION - len(sect))
    return bytes(out)


# ---- the invariant -------------------------------------------------------------------------------

@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(stage=st.integers(0, 4), data=st.data(), recv=receive_buffer())
def test_any_host_packet_yields_results_or_a_host_error(tmp_path: Path, stage: int, data: Any, recv: bytes) -> None:
    with channel() as chan:
        nic = nic_at(tmp_path, chan, stage)
        assert chan.recv_buf is not None
        chan.recv_buf[:len(recv)] = recv
        for pkt in data.draw(st.lists(hostile_packet(list(chan.sent)), min_size=1, max_size=5)):
            before = (chan.counters.rndis_control, chan.counters.rndis_data_dropped)
            try:
                items = chan.ingest(pkt)
            except HOST_ERRORS as err:
                event(f"ingest refused: {type(err).__name__}")
                break
            if pkt.type == PacketType.XFER_PAGES and nic.channel is not None:
                # every message of every range is handed up or counted as dropped
                count = struct.unpack_from("<I", pkt.header, 4)[0]
                found = [walk_rndis(recv_bytes(chan, pkt, i)) for i in range(count)]
                assert all(f is not None for f in found)
                control = sum(f[0] for f in found if f is not None)
                dropped = sum(f[1] for f in found if f is not None)
                assert chan.counters.rndis_control - before[0] == control == len(items)
                assert chan.counters.rndis_data_dropped - before[1] == dropped
            event(f"stage {stage}: {len(items)} RNDIS item(s) handed up" if items else "no RNDIS items")
            try:
                nic.process(items)
            except HOST_ERRORS as err:
                event(f"machines refused: {type(err).__name__}")
                break
            event("machines accepted")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(stage=st.integers(0, 4), data=st.data(), recv=receive_buffer())
def test_a_traced_channel_records_hostile_packets_and_each_decodes_to_a_line(tmp_path: Path, stage: int,
                                                                            data: Any, recv: bytes) -> None:
    """With `up --trace`, what a hostile host sends is recorded before it is refused, and `hvuio
    trace` turns every record into one line without raising."""
    from hvuio.trace.decode import Decoder
    from hvuio.trace.pcapng import INBOUND, is_control, read_trace
    from hvuio.trace.writer import Trace

    with channel() as chan, Trace(tmp_path / "hostile.pcapng") as trace:
        nic = nic_at(tmp_path, chan, stage)
        assert chan.recv_buf is not None
        chan.recv_buf[:len(recv)] = recv
        chan.trace = trace
        ingested = 0
        for pkt in data.draw(st.lists(hostile_packet(list(chan.sent)), min_size=1, max_size=5)):
            ingested += 1
            try:
                nic.process(chan.ingest(pkt))
            except HOST_ERRORS:
                break
    recs = list(read_trace(trace.path.read_bytes()))
    assert all(is_control(r) for r in recs)
    inbound = [r for r in recs if r.direction == INBOUND]
    assert len(inbound) <= ingested  # one record per packet at most (none when refused before)
    dec = Decoder()
    assert all("\n" not in dec.decode(r).line for r in recs)


def recv_bytes(chan: Channel, pkt: Packet, i: int) -> bytes:
    count, offset = struct.unpack_from("<II", pkt.header, 8 + 8 * i)
    assert chan.recv_buf is not None
    return bytes(chan.recv_buf[offset:offset + count])


@settings(max_examples=300, deadline=None)
@given(words=st.lists(st.one_of(U32, st.sampled_from([0, 1, 2, 3, 6, 7, 0xB, 16, 24, 0x10000])), max_size=40),
       write_index=st.one_of(st.integers(0, 4096), U32))
def test_any_inbound_ring_bytes_yield_packets_or_ring_corrupt(words: list[int], write_index: int) -> None:
    """Raw bytes in the inbound ring's data area and any write_index: receive() copies packets
    out or raises RingCorruptError naming the field; it never reads outside the ring."""
    with channel() as chan:
        raw = b"".join(struct.pack("<I", w) for w in words)
        mem = chan.mem
        mem[RING + PAGE:RING + PAGE + len(raw)] = raw
        struct.pack_into("<I", mem, RING, write_index)  # RX header: write_index at offset 0
        try:
            chan.receive()
        except RingCorruptError as err:
            assert err.field
        except HostProtocolError:
            pass


# ---- flooding hosts -----------------------------------------------------------------------------

def test_host_keepalive_flood_is_dropped_and_counted_never_answered(tmp_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    """KEEPALIVEs from a host are not answered (VMBUS.md §4 item 21): a flood of them sends
    nothing, takes no control section and queues nothing; each is counted, one warning."""
    with channel() as chan, caplog.at_level("WARNING", logger="hvuio.nic"):
        nic = nic_at(tmp_path, chan, 4)
        assert nic.guest is not None
        sections = nic.guest.sections
        assert sections is not None
        in_flight, sent = sections.in_flight, len(chan.sent)
        flood = sections.pool.count + MAX_QUEUED_CONTROL + 16
        for i in range(flood):
            keepalive = struct.pack("<III", wr.RndisType.KEEPALIVE, 12, i)
            nic.process([Inbound(InboundKind.RNDIS, 0, keepalive)])
        assert (sections.in_flight, sections.waiting, sections.queued) == (in_flight, 0, 0)
        assert len(chan.sent) == sent
        assert nic.counters["keepalives_dropped"] == flood
        assert len([r for r in caplog.records if "KEEPALIVE" in r.getMessage()]) == 1


def test_section_smaller_than_a_control_message_is_the_hosts_limit(tmp_path: Path) -> None:
    sections = ControlSections(SectionPool(0, 2, 72))
    big = Outbound(b"\0" * 40, 1 << 32, True, rndis=b"\0" * 100)
    with pytest.raises(HostProtocolError, match="section_size 72"):
        sections.place([big])


def test_interrupt_flood_does_not_pin_wait() -> None:
    """A peer that keeps the interrupt fd readable: wait() returns after a bounded number of
    reads instead of reading for as long as the host keeps interrupting."""
    from hvuio.device import uio

    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    irq = Interrupt(a.detach(), "uio-flood")
    try:
        for n in range(uio.MAX_COUNT_READS * 3):
            b.send(struct.pack("=i", n + 1))
        assert irq.wait(1) == uio.MAX_COUNT_READS
        assert irq.wait(1) == 2 * uio.MAX_COUNT_READS
    finally:
        irq.close()
        b.close()


def test_interrupt_fd_errors_are_hvuio_errors() -> None:
    """A read error the kernel does not document for uio (here: EBADF after close) is a named
    error, not a bare OSError."""
    from hvuio.errors import LocalProtocolError

    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    irq = Interrupt(a.detach(), "uio-closed")
    irq.close()
    b.close()
    with pytest.raises(LocalProtocolError):
        irq.wait(0)
    with pytest.raises(LocalProtocolError):
        irq.enable()


def test_failed_channel_construction_releases_the_monitor_page() -> None:
    """Bring-up failing half way (here: a ring mapping too small for two rings) must not leave
    the monitor bell's export on map 2, or the handle can never unmap it (VMBUS.md §1.11 item 46)."""
    from types import SimpleNamespace

    from hvuio.errors import SysfsError

    monitor = mmap.mmap(-1, PAGE)
    rings = mmap.mmap(-1, 2 * RING)
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    handle = SimpleNamespace(interrupt=Interrupt(a.detach(), "uio-half"), monitor_page=monitor,
                             recv_buffer=None, send_buffer=None, rings=rings, ring_size=RING + PAGE,
                             device=SimpleNamespace(monitor_id=5, guid="half", relid=1))
    try:
        with pytest.raises(SysfsError, match="cannot hold two rings") as info:
            Channel.primary(handle)  # type: ignore[arg-type]
        # Nic.open unmaps in its except block, while the traceback (and every frame local of the
        # failed construction) is still alive: the export must already be gone by then
        assert info.tb is not None
        monitor.close()  # BufferError if the bell still exported the page
        rings.close()
    finally:
        handle.interrupt.close()
        b.close()


@pytest.mark.parametrize("stage", [0, 2, 4])
def test_completion_matching_no_request_is_dropped_and_counted(tmp_path: Path, stage: int) -> None:
    """Spec 4.15: a completion whose trans_id matches no outstanding request is dropped (and
    counted); the bring-up it arrives in goes on."""
    with channel() as chan:
        nic = nic_at(tmp_path, chan, stage)
        before = nic.guest.nvsp.state if nic.guest is not None else None
        for xid in (0, 0x7777, 1 << 62):
            nic.process([Inbound(InboundKind.COMPLETION, xid, init_resp())])
        assert nic.counters["unknown_completions"] == 3
        assert nic.guest is not None and nic.guest.nvsp.state == before
