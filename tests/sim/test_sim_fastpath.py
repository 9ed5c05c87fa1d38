"""The emulator's C host data path (hvuio.sim._simhost via hvuio.sim.vsp.fastpath) on in-memory rings,
its vRSS steering (rss.c) included: the same hash as hvuio.sim.host.rss and tests/support/toeplitz.py.

The guest is played with the Python ring classes of hvuio.sim.vsp.ring (a ring writer on the
outbound ring, a reader on the inbound ring), the tap with a non-blocking AF_UNIX seqpacket pair.
No root needed.
"""

from __future__ import annotations

import random
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from support.sim_offload import BITS, RX_IP_OK, section_image, udp4
from support.simhost import c
from support.toeplitz import expected_queue, flow_frame

from hvuio.sim.host import offload as ho
from hvuio.sim.host import rss
from hvuio.sim.host import wire as w
from hvuio.sim.host.receive import openvmm_message
from hvuio.sim.vsp import fastpath
from hvuio.sim.vsp.fastpath import HostPump, PumpConfig, PumpResult, Reason
from hvuio.sim.vsp.ring import HostRingReader, HostRingWriter, RingPacket

pytestmark = pytest.mark.skipif(not fastpath.available(), reason="hvuio.sim._simhost not built")

HDR = 4096
RING = HDR + 64 * 1024
SEC = 1806  # not a multiple of 8, as the default 256 + 1514 + 36
SEND_SEC = 6144
PAD = 40
RX_UDP_OK = c(BITS, "NDIS_RXCSUM_INFO_UDPCS_OK")
CSUM_NOT_CHECKED = ho.ppi(ho.PPI_CSUM, bytes(4))  # the openvmm layout's checksum info on an unmarked frame


@dataclass
class Rig:
    mem: bytearray
    recv: bytearray
    send: bytearray
    monitor: bytearray
    pump: HostPump
    guest_out: HostRingWriter  # the guest writing its outbound ring
    guest_in: HostRingReader  # the guest reading its inbound ring
    host_out: HostRingReader  # Python's host reader (control hand-off)
    host_in: HostRingWriter  # Python's host writer (control replies)
    net: socket.socket  # the network's end of the "tap"


def make_rig(sections: int = 8, strict: bool = False, owned: int | None = None, **cfg_kw: Any) -> Iterator[Rig]:
    mem = bytearray(2 * RING)
    for off in (0, RING):
        struct.pack_into("<I", mem, off + 64, 1)  # feature bit pending_send_sz
    recv, send, monitor = bytearray(SEC * sections), bytearray(SEND_SEC * 16), bytearray(4096)
    tap, net = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    tap.setblocking(False)
    net.setblocking(False)
    cfg = PumpConfig(ring_size=RING, header_size=HDR, recv_section=SEC, recv_count=sections,
                     send_section=SEND_SEC, max_frame=1514, nvsp_pad=PAD, tap_fd=tap.fileno(),
                     monitor_id=37, strict=strict, rx_batch=4, **cfg_kw)
    pump = HostPump(cfg, mem, recv, send, monitor)
    pump.add_sections(range(sections if owned is None else owned))
    pump.rx_enabled = True
    view = memoryview(mem)
    rig = Rig(mem, recv, send, monitor, pump,
              HostRingWriter(view, offset=0, size=RING), HostRingReader(view, offset=RING, size=RING),
              HostRingReader(view, offset=0, size=RING), HostRingWriter(view, offset=RING, size=RING), net)
    try:
        yield rig
    finally:
        pump.close()
        tap.close()
        net.close()


@pytest.fixture
def rig() -> Iterator[Rig]:
    yield from make_rig()


def frame(n: int, fill: int = 0xAB) -> bytes:
    return bytes.fromhex("020000000001" "00155d000001" "0800") + bytes([fill]) * (n - 14)


def guest_send(rig: Rig, section: int, msg: bytes, tid: int, *, size: int | None = None, flags: int = 1) -> None:
    if (section + 1) * SEND_SEC <= len(rig.send):
        rig.send[section * SEND_SEC:section * SEND_SEC + len(msg)] = msg
    payload = w.nvsp(w.NVSP_SEND_RNDIS_PKT, 0, section, len(msg) if size is None else size, pad_to=PAD)
    rig.guest_out.write(w.PKT_INBAND, payload, flags=flags, trans_id=tid)


def inbound(rig: Rig) -> list[RingPacket]:
    out = []
    while (pkt := rig.guest_in.read_packet()) is not None:
        out.append(pkt)
    rig.guest_in.commit()
    return out


def test_guest_frame_reaches_the_tap_and_is_completed(rig: Rig) -> None:
    f = frame(600)
    guest_send(rig, 3, w.rndis_packet(f), tid=77)
    assert rig.pump.run() == PumpResult.SIGNAL  # empty inbound ring, mask 0
    assert rig.net.recv(4096) == f
    (comp,) = inbound(rig)
    assert (comp.type, comp.trans_id, comp.flags) == (w.PKT_COMPLETION, 77, 0)
    assert comp.payload == w.nvsp(w.NVSP_SEND_RNDIS_PKT_COMPLETE, w.NVSP_STAT_SUCCESS, pad_to=PAD)
    assert rig.pump.counters()["tx_frames"] == 1
    assert struct.unpack_from("<I", rig.mem, 4)[0] == struct.unpack_from("<I", rig.mem, 0)[0]  # read_index published


def test_no_signal_when_the_guest_masked_its_inbound_ring(rig: Rig) -> None:
    struct.pack_into("<I", rig.mem, RING + 8, 1)
    guest_send(rig, 0, w.rndis_packet(frame(60)), tid=5)
    assert rig.pump.run() == PumpResult.TIMEOUT
    assert not rig.pump.signal and len(inbound(rig)) == 1


@pytest.mark.parametrize("layout", ["openvmm", "compact"])
def test_network_frames_batched_into_one_transfer_page_packet(layout: str) -> None:
    for rig in make_rig(rx_layout=layout):
        _frames_batched(rig, layout)


def _frames_batched(rig: Rig, layout: str) -> None:
    frames = [frame(60 + i * 100, i) for i in range(3)]
    for f in frames:
        rig.net.send(f)
    assert rig.pump.run() == PumpResult.SIGNAL
    (pkt,) = inbound(rig)
    assert pkt.type == w.PKT_XFER_PAGES and pkt.flags == 1
    pageset, _owns, _rsvd, count = struct.unpack_from("<HBBI", pkt.header)
    assert (pageset, count) == (0xCAFE, 3)
    assert pkt.payload[:16] == struct.pack("<4I", w.NVSP_SEND_RNDIS_PKT, 0, w.NO_SEND_SECTION, 0)
    for i, f in enumerate(frames):
        length, offset = struct.unpack_from("<II", pkt.header, 8 + 8 * i)
        want = (section_image(openvmm_message(f, CSUM_NOT_CHECKED, SEC)) if layout == "openvmm"
                else w.rndis_packet(f))
        assert offset % SEC == 0 and bytes(rig.recv[offset:offset + length]) == want
    sections = [struct.unpack_from("<I", pkt.header, 12 + 8 * i)[0] // SEC for i in range(3)]
    assert pkt.trans_id == sections[0]  # the batch's first section, as OpenVMM's process_endpoint_rx
    assert rig.pump.sections_free == 5 and rig.pump.in_flight == 3
    # the guest completes: the sections come back, once
    done = w.nvsp(w.NVSP_SEND_RNDIS_PKT_COMPLETE, w.NVSP_STAT_SUCCESS, pad_to=PAD)
    rig.guest_out.write(w.PKT_COMPLETION, done, trans_id=sections[1])  # in the batch, not its id
    rig.guest_out.write(w.PKT_COMPLETION, done, trans_id=pkt.trans_id)
    rig.guest_out.write(w.PKT_COMPLETION, done, trans_id=pkt.trans_id)  # repeated
    rig.pump.run()
    c = rig.pump.counters()
    assert rig.pump.sections_free == 8 and rig.pump.in_flight == 0
    assert (c["rx_completions"], c["completions_unknown"], c["rx_frames"]) == (1, 2, 3)
    assert rig.pump.reason == Reason.UNKNOWN_TID


@pytest.mark.parametrize("marks", [False, True], ids=["direct-read", "marked"])
def test_openvmm_layout_fills_the_whole_section_like_the_python_host(marks: bool) -> None:
    """tests/sim/test_sim_rx_layout.py's checks on the pump: range and message_length = the
    section, frame at 256, checksum info first (0: not checked), the rest of the section unwritten."""
    off_rx = ho.OFF_IP4 | ho.OFF_UDP4 if marks else 0
    for rig in make_rig(rx_layout="openvmm", offloads=lambda: (0, off_rx)):
        rig.recv[:] = b"\xee" * len(rig.recv)
        f = udp4(b"y" * 200) if marks else frame(1514, 3)
        rig.net.send(f)
        rig.pump.run()
        (pkt,) = inbound(rig)
        count, offset = struct.unpack_from("<II", pkt.header, 8)
        sec = bytes(rig.recv[offset:offset + SEC])
        flags = RX_UDP_OK | RX_IP_OK if marks else 0
        assert count == SEC and struct.unpack_from("<9I", sec) == (1, SEC, 248, len(f), 0, 0, 0, 36, 16)
        assert struct.unpack_from("<4I", sec, 44) == (16, ho.PPI_CSUM, 12, flags)
        assert sec[256:256 + len(f)] == f
        assert set(sec[60:256]) == {0xEE} and set(sec[256 + len(f):]) <= {0xEE}


def test_transfer_ids_are_section_indexes_from_zero() -> None:
    for rig in make_rig(sections=4, owned=2):
        rig.pump.rx_enabled = True
        rig.net.send(frame(60, 1))
        rig.pump.run()
        (pkt,) = inbound(rig)
        assert pkt.trans_id in (0, 1) and struct.unpack_from("<I", pkt.header, 12)[0] == pkt.trans_id * SEC
        done = w.nvsp(w.NVSP_SEND_RNDIS_PKT_COMPLETE, w.NVSP_STAT_SUCCESS, pad_to=PAD)
        rig.guest_out.write(w.PKT_COMPLETION, done, trans_id=pkt.trans_id)
        rig.guest_out.write(w.PKT_COMPLETION, done, trans_id=3)  # a section Python kept: Python's
        assert rig.pump.run() == PumpResult.CONTROL
        assert rig.pump.counters()["rx_completions"] == 1 and rig.pump.in_flight == 0
        rig.host_out._reload()
        left = rig.host_out.read_packet()
        assert left is not None and left.trans_id == 3


def test_section_exhaustion_is_counted() -> None:
    for rig in make_rig(sections=2):
        for i in range(5):
            rig.net.send(frame(100, i))
        rig.pump.run()
        c = rig.pump.counters()
        assert (c["rx_frames"], c["rx_dropped_no_section"]) == (2, 3)
        assert rig.pump.sections_free == 0
        with pytest.raises(Exception, match="already the pump's"):
            rig.pump.add_sections([0])


def padded(msg: bytes, align: int = 8) -> bytes:
    """An RNDIS message grown to the packet alignment (msg_len included), as one followed by another."""
    n = -len(msg) % align
    return msg[:4] + struct.pack("<I", len(msg) + n) + msg[8:] + bytes(n)


def aggregated(frames: list[bytes], align: int = 8) -> bytes:
    msgs = [w.rndis_packet(f) for f in frames]
    return b"".join(padded(m, align) for m in msgs[:-1]) + msgs[-1]


def test_aggregated_send_within_the_rndis_limits_is_served_in_c() -> None:
    for rig in make_rig(strict=True):
        frames = [frame(60 + i, i) for i in range(8)]   # max_packets_per_message, odd lengths padded
        guest_send(rig, 2, aggregated(frames), tid=5)
        assert rig.pump.run() == PumpResult.SIGNAL
        assert [rig.net.recv(4096) for _ in frames] == frames
        (comp,) = inbound(rig)
        assert comp.trans_id == 5
        assert rig.pump.counters()["tx_frames"] == 8 and rig.pump.counters()["handoffs"] == 0


@pytest.mark.parametrize("strict", [True, False], ids=["strict", "lenient"])
@pytest.mark.parametrize("send, nframes", [
    (aggregated([frame(60 + i, i) for i in range(9)]), 9),                  # one past max_packets
    (w.rndis_packet(frame(61)) + w.rndis_packet(frame(60)), 2),              # second off the alignment
], ids=["nine", "misaligned"])
def test_sends_past_the_rndis_limits_go_to_python_when_strict(strict: bool, send: bytes, nframes: int) -> None:
    for rig in make_rig(strict=strict):
        guest_send(rig, 1, send, tid=9)
        before = bytes(rig.mem[:8])
        result = rig.pump.run()
        if strict:
            assert result == PumpResult.CONTROL and rig.pump.reason == Reason.AGGREGATION
            assert bytes(rig.mem[:8]) == before  # left unread for HostNvsp, which logs and serves it
            assert rig.pump.counters()["tx_frames"] == 0
        else:
            assert result == PumpResult.SIGNAL and rig.pump.counters()["tx_frames"] == nframes


def messages_filling(total: int) -> tuple[list[bytes], bytes]:
    """Frames and the send of their RNDIS packet messages (44 + 1500, then the rest: multiples of 8)
    tiling `total` bytes."""
    frames = []
    while total > 1544 + 64:
        frames.append(frame(1500, len(frames)))
        total -= 1544
    frames.append(frame(total - 44, len(frames)))
    return frames, b"".join(w.rndis_packet(f) for f in frames)


@pytest.mark.parametrize("section, size", [(2, 2 * SEND_SEC - 8), (14, 2 * SEND_SEC)],
                         ids=["two-sections", "to-the-buffer-end"])
def test_send_spanning_sections_is_served_in_c_when_strict(section: int, size: int) -> None:
    # [OV] parse_packet takes any sub-range of the send buffer: the host's send may span sections.
    for rig in make_rig(strict=True):
        frames, send = messages_filling(size)
        assert len(send) == size and (section * SEND_SEC + size <= len(rig.send)) and len(frames) <= 8
        guest_send(rig, section, send, tid=6)
        assert rig.pump.run() == PumpResult.SIGNAL
        assert [rig.net.recv(4096) for _ in frames] == frames
        (comp,) = inbound(rig)
        assert comp.trans_id == 6 and struct.unpack_from("<2I", comp.payload) == (w.NVSP_SEND_RNDIS_PKT_COMPLETE,
                                                                                   w.NVSP_STAT_SUCCESS)
        assert rig.pump.counters()["handoffs"] == 0


def test_a_send_one_byte_past_the_send_buffer_is_pythons(rig: Rig) -> None:
    guest_send(rig, 14, w.rndis_packet(frame(60)), 9, size=2 * SEND_SEC + 1)
    assert rig.pump.run() == PumpResult.CONTROL and rig.pump.reason == Reason.BAD_SECTION


def test_data_then_another_message_type_is_handed_to_python_unread(rig: Rig) -> None:
    # the Python host fails such a send ([OV] NonRndisPacketAfterPacket); the pump sends nothing of it
    send = w.rndis_packet(frame(60)) + w.rndis(w.RNDIS_KEEPALIVE_MSG, bytes(4))
    guest_send(rig, 1, send, 9)
    before = bytes(rig.mem[:8])
    assert rig.pump.run() == PumpResult.CONTROL
    assert rig.pump.reason == Reason.RNDIS_TYPE and bytes(rig.mem[:8]) == before
    with pytest.raises(BlockingIOError):
        rig.net.recv(2048)


def test_oversized_network_frame_is_dropped(rig: Rig) -> None:
    rig.net.send(bytes(1600))
    rig.net.send(bytes(10))
    rig.pump.run()
    assert rig.pump.counters()["rx_dropped_too_big"] == 2 and rig.pump.sections_free == 8


@pytest.mark.parametrize(("mutate", "reason"), [
    (lambda rig: guest_send(rig, 5000, w.rndis_packet(frame(60)), 9), Reason.BAD_SECTION),
    (lambda rig: guest_send(rig, 15, w.rndis_packet(frame(60)), 9, size=SEND_SEC + 8), Reason.BAD_SECTION),
    (lambda rig: guest_send(rig, 1, w.rndis_packet(frame(60))[:4] + struct.pack("<I", 5000)
                            + w.rndis_packet(frame(60))[8:], 9), Reason.RNDIS_LEN),
    (lambda rig: guest_send(rig, 1, w.rndis_packet(frame(60))[:8] + struct.pack("<I", 4000)
                            + w.rndis_packet(frame(60))[12:], 9), Reason.RNDIS_DATA),
    (lambda rig: guest_send(rig, 1, w.rndis_packet(frame(60)), 9, flags=0), Reason.NO_COMPLETION_FLAG),
    (lambda rig: guest_send(rig, 1, w.rndis(w.RNDIS_KEEPALIVE_MSG, bytes(4)), 9), Reason.RNDIS_TYPE),
    (lambda rig: rig.guest_out.write(w.PKT_INBAND, w.nvsp(w.NVSP_INIT, 0x60001, 0x60001, pad_to=PAD),
                                     flags=1, trans_id=1), Reason.CONTROL),
    (lambda rig: rig.guest_out.write(w.PKT_COMPLETION, w.nvsp(w.NVSP_SEND_RNDIS_PKT_COMPLETE, 1, pad_to=PAD),
                                     trans_id=12), Reason.CONTROL),
])
def test_what_the_pump_does_not_own_is_handed_over_unread(rig: Rig, mutate: object, reason: Reason) -> None:
    mutate(rig)  # type: ignore[operator]
    before = bytes(rig.mem[:8])
    assert rig.pump.run() == PumpResult.CONTROL
    assert rig.pump.reason == reason and rig.pump.fault_message()
    assert bytes(rig.mem[:8]) == before  # nothing consumed
    with pytest.raises(BlockingIOError):
        rig.net.recv(2048)  # nothing reached the network
    rig.host_out._reload()
    assert rig.host_out.read_packet() is not None and rig.host_out.read_packet() is None
    rig.host_out.commit()
    assert rig.pump.counters()["tx_frames"] == 0


def test_control_hand_off_both_directions(rig: Rig) -> None:
    """C stops at a control packet; Python reads exactly it and answers; C resumes after both."""
    guest_send(rig, 0, w.rndis_packet(frame(64, 1)), tid=1)
    rig.guest_out.write(w.PKT_INBAND, w.nvsp(w.NVSP_SUBCHANNEL, 1, 2, pad_to=PAD), flags=1, trans_id=2)
    guest_send(rig, 1, w.rndis_packet(frame(64, 2)), tid=3)
    assert rig.pump.run() == PumpResult.CONTROL
    assert rig.net.recv(2048) == frame(64, 1)
    rig.host_out._reload()
    pkt = rig.host_out.read_packet()
    assert pkt is not None and pkt.trans_id == 2
    rig.host_out.commit()
    rig.host_in._reload()  # C wrote completion 1: take write_index from the header
    rig.host_in.write(w.PKT_COMPLETION, w.nvsp(w.NVSP_SUBCHANNEL, 1, 0, pad_to=PAD), trans_id=2)
    rig.pump.run()
    assert rig.net.recv(2048) == frame(64, 2)
    assert [p.trans_id for p in inbound(rig)] == [1, 2, 3]


@pytest.mark.parametrize(("offset", "value", "reason"), [
    (0, 12, Reason.BAD_WRITE_INDEX),  # outbound write_index not a multiple of 8
    (0, RING, Reason.BAD_WRITE_INDEX),  # beyond the data area
    (RING + 4, 4, Reason.BAD_READ_INDEX),  # inbound read_index (hit when writing a completion)
])
def test_bad_ring_indices_fault_with_a_reason(rig: Rig, offset: int, value: int, reason: Reason) -> None:
    guest_send(rig, 0, w.rndis_packet(frame(64)), tid=1)
    struct.pack_into("<I", rig.mem, offset, value)
    assert rig.pump.run() == PumpResult.FAULT
    assert rig.pump.reason == reason and rig.pump.value == value
    assert rig.pump.run() == PumpResult.FAULT  # stays dead


def test_bad_len8_faults(rig: Rig) -> None:
    guest_send(rig, 0, w.rndis_packet(frame(64)), tid=1)
    struct.pack_into("<H", rig.mem, HDR + 4, 0x7FFF)
    assert rig.pump.run() == PumpResult.FAULT and rig.pump.reason == Reason.BAD_LEN8


def test_monitor_bit_is_consumed_and_others_kept(rig: Rig) -> None:
    group_word = 8 + 8 * (37 // 32)
    struct.pack_into("<I", rig.monitor, group_word, (1 << (37 % 32)) | 1)
    rig.pump.run()
    assert struct.unpack_from("<I", rig.monitor, group_word)[0] == 1
    assert rig.pump.counters()["monitor_wakeups"] == 1


@pytest.mark.parametrize("spin_us, busy", [(1_000_000, True), (0, False)])
def test_after_traffic_the_pump_spins_for_spin_us_then_sleeps(spin_us: int, busy: bool) -> None:
    # poll_us 50 ms: a pump that sleeps between looks makes at most a handful of passes in 0.2 s;
    # one that spins (the window covers the whole run) makes thousands
    for rig in make_rig(spin_us=spin_us, poll_us=50_000, idle_poll_us=50_000):
        guest_send(rig, 0, w.rndis_packet(frame(60)), tid=1)
        assert rig.pump.run() == PumpResult.SIGNAL  # the frame (no C irq here: returns to signal)
        before = rig.pump.counters()["passes"]
        assert rig.pump.run(timeout=0.2) == PumpResult.TIMEOUT
        passes = rig.pump.counters()["passes"] - before
        assert rig.net.recv(2048) == frame(60)
        assert (passes > 500) if busy else (passes <= 8), passes


def test_wake_fd_returns_control_to_python(rig: Rig) -> None:
    import os
    fd = os.eventfd(1, os.EFD_NONBLOCK)
    try:
        assert rig.pump.run(fd, timeout=5.0) == PumpResult.WAKE
    finally:
        os.close(fd)


def test_full_inbound_ring_pauses_sends_until_room() -> None:
    for rig in make_rig():
        # fill the inbound ring from the "host" so that no completion fits
        rig.host_in._reload()
        filler = bytes(1000)
        while rig.host_in.bytes_free() > 1100:
            rig.host_in.write(w.PKT_INBAND, filler)
        while rig.host_in.bytes_free() > 80:
            rig.host_in.write(w.PKT_INBAND, bytes(8))
        guest_send(rig, 0, w.rndis_packet(frame(64)), tid=44)
        rig.pump.run()
        assert rig.pump.counters()["tx_wait_ring_full"] >= 1 and rig.pump.counters()["tx_frames"] == 0
        assert struct.unpack_from("<I", rig.mem, RING + 12)[0] > 0  # pending_send_sz set
        assert all(p.trans_id != 44 for p in inbound(rig))  # the guest drains
        rig.pump.run()
        assert rig.net.recv(2048) == frame(64)
        assert [p.trans_id for p in inbound(rig)] == [44]
        assert struct.unpack_from("<I", rig.mem, RING + 12)[0] == 0


@pytest.mark.parametrize(("pending", "signal"), [(RING - HDR - 8, True), (0, False)])
def test_outbound_pending_send_sz_crossing_signals(rig: Rig, pending: int, signal: bool) -> None:
    struct.pack_into("<I", rig.mem, RING + 8, 1)  # inbound masked: only the outbound rule can signal
    guest_send(rig, 0, w.rndis_packet(frame(64)), tid=3)
    struct.pack_into("<I", rig.mem, 12, pending)  # the guest waits for this much free space
    rig.pump.run()
    assert rig.pump.signal is signal


def test_simhost_sources_share_nothing_with_the_guest_core() -> None:
    from support.paths import ROOT
    src = ROOT / "_native" / "simhost"
    lines = [ln for p in sorted(src.glob("*.[ch]")) for ln in p.read_text().splitlines()]
    includes = {ln.split()[1].strip('"<>') for ln in lines if ln.startswith("#include")}
    assert includes & {"hvuio.h", "hvuio_api.h", "datapath.h", "datapath_api.h", "counters.h"} == set()
    code = "\n".join(lines)
    assert "hvu_ring_" not in code and "hvu_dp_" not in code and "hvu_rx_" not in code and "hvu_tx_" not in code


# -- vRSS (rss.c): the pump hashes as hvuio.sim.host.rss and hands other channels' frames over --

RSS_TYPES = [0x1701, 0x1 | 0x100 | 0x400, 0x1 | 0x200, 0x1 | 0x4000 | 0x8000 | 0x100, 0x1 | 0x1000 | 0x100, 0x1]


def some_frames(rnd: random.Random, n: int) -> list[bytes]:
    out = []
    for i in range(n):
        kind = i % 5
        if kind == 4:  # not IP: never hashed
            out.append(b"\xff" * 6 + b"\x02" * 6 + b"\x08\x06" + rnd.randbytes(28))
            continue
        v6 = kind == 2
        src = f"fd00::{rnd.randrange(1, 65535):x}" if v6 else f"10.{rnd.randrange(256)}.{rnd.randrange(256)}.9"
        dst = f"fd00::{rnd.randrange(1, 65535):x}" if v6 else "10.0.0.1"
        f = flow_frame(src, dst, rnd.choice((6, 17, 47)), rnd.randrange(65536), rnd.randrange(65536),
                       payload=i.to_bytes(4, "big"), fragment=kind == 3 and rnd.random() < 0.5)
        if kind == 1 and rnd.random() < 0.3:
            f = f[:12] + b"\x81\x00\x00\x07" + f[12:]  # one 802.1Q tag
        out.append(f)
    return out


@pytest.mark.parametrize("types", RSS_TYPES)
def test_c_hash_equals_the_python_hosts(types: int) -> None:
    ffi, lib = fastpath._simhost.ffi, fastpath._simhost.lib
    rnd = random.Random(types)
    for f in some_frames(rnd, 200):
        key = rnd.randbytes(40)
        out = ffi.new("uint32_t *")
        htype = int(lib.hvu_sim_rss_hash(key, types, f, len(f), out))
        want = rss.RssState(key, (0,), types).hash(f)
        assert (int(out[0]), htype) == want if want is not None else htype == 0, f.hex()


def test_pump_keeps_queue_0_and_steers_the_rest_with_their_queue() -> None:
    for rig in make_rig(sections=64):
        _steers(rig)


def _steers(rig: Rig) -> None:
    rnd = random.Random(3)
    key = rnd.randbytes(40)
    table = tuple(rnd.randrange(4) for _ in range(128))
    rig.pump.set_rss(rss.RssState(key, table, 0x1701), 3)  # entries of 3 name no granted queue: 0
    frames = some_frames(rnd, 40)
    want = {f: expected_queue(f, key, table, 0x1701, 3) for f in frames}
    assert set(want.values()) == {0, 1, 2}
    got: dict[bytes, int] = {}
    for f in frames:
        rig.net.send(f)
    for _ in range(20):
        result = rig.pump.run()
        for queue, data in rig.pump.take_steered():
            got[data] = queue
        for pkt in inbound(rig):
            assert pkt.type == w.PKT_XFER_PAGES
            for i in range(struct.unpack_from("<I", pkt.header, 4)[0]):
                length, offset = struct.unpack_from("<II", pkt.header, 8 + 8 * i)
                doff, dlen = struct.unpack_from("<II", rig.recv, offset + 8)
                got[bytes(rig.recv[offset + 8 + doff:offset + 8 + doff + dlen])] = 0
        if len(got) == len(frames):
            break
    assert got == want
    assert rig.pump.counters()["rx_steered"] == sum(1 for q in want.values() if q)
    assert result in (PumpResult.STEER, PumpResult.SIGNAL, PumpResult.TIMEOUT)


def test_without_rss_or_with_one_queue_the_pump_keeps_every_frame() -> None:
    for rig in make_rig(sections=64):
        _keeps_all(rig)


def _keeps_all(rig: Rig) -> None:
    rnd = random.Random(4)
    state = rss.RssState(rnd.randbytes(40), (1, 2, 3) * 40, 0x1701)
    frames = some_frames(rnd, 8)
    for setting in ((None, 4), (state, 1)):
        rig.pump.set_rss(*setting)
        for f in frames:
            rig.net.send(f)
        delivered = 0
        for _ in range(10):
            rig.pump.run()
            assert rig.pump.take_steered() == [] and rig.pump.counters()["rx_steered"] == 0
            delivered += sum(struct.unpack_from("<I", p.header, 4)[0] for p in inbound(rig))
        assert delivered == len(frames)


def test_take_sections_gives_back_only_free_ones() -> None:
    for rig in make_rig(sections=64):
        _take_sections(rig)


def _take_sections(rig: Rig) -> None:
    rig.net.send(flow_frame("10.0.0.2", "10.0.0.1"))
    rig.pump.run()
    assert rig.pump.in_flight == 1
    taken = rig.pump.take_sections()
    assert len(taken) == 63 and rig.pump.sections_free == 0 and rig.pump.in_flight == 1
    assert rig.pump.add_sections(taken) == 63 and rig.pump.sections_free == 63
