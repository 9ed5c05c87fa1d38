"""GPA-direct (type 9) data sends in the emulator's C fast path (_native/simhost/simhost_gpa.c).

The pump is given a guest-memory file mapped as the session maps it (GuestMemoryFile); the guest is
played with hvuio.sim.vsp.ring's writer/reader on in-memory rings, the tap with an AF_UNIX
seqpacket pair (as tests/sim/test_sim_fastpath.py). The same sends go through Python's HostNvsp
where the fast path must hand over, and the bytes on the "network" are compared exactly.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hvuio.sim.host import offload as ho
from hvuio.sim.host import wire as w
from hvuio.sim.vsp import fastpath
from hvuio.sim.vsp.fastpath import HostPump, PumpConfig, PumpResult, Reason
from hvuio.sim.vsp.guestmem import GUEST_PFN_BASE, GuestMemoryFile
from hvuio.sim.vsp.ring import HostRingReader, HostRingWriter, RingPacket

from support.gpa import GPA, gpa_header, make_guest_memory, rndis_data
from support.sim_offload import PPI_LSO, lso_info, payload, ppi, segments, tcp4
from support.simhost import r_packet

pytestmark = pytest.mark.skipif(not fastpath.available(), reason="hvuio.sim._simhost not built")

HDR = 4096
RING = HDR + 256 * 1024
SEC = 1806
PAD = 40
NO_SECTION = 0xFFFFFFFF


@dataclass
class GpaRig:
    mem: bytearray
    pump: HostPump
    image: Any
    guest_out: HostRingWriter
    guest_in: HostRingReader
    net: socket.socket


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[GpaRig]:
    mem = bytearray(2 * RING)
    for off in (0, RING):
        struct.pack_into("<I", mem, off + 64, 1)
    recv, send, monitor = bytearray(SEC * 8), bytearray(6144 * 16), bytearray(4096)
    tap, net = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    net.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    tap.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    tap.setblocking(False)
    net.setblocking(False)
    image = make_guest_memory(tmp_path, 1 << 20)
    gm = GuestMemoryFile(image.path)
    cfg = PumpConfig(ring_size=RING, header_size=HDR, recv_section=SEC, recv_count=8, send_section=6144,
                     max_frame=1514, nvsp_pad=PAD, tap_fd=tap.fileno(), monitor_id=37, guest_memory=gm)
    pump = HostPump(cfg, mem, recv, send, monitor)
    view = memoryview(mem)
    rig = GpaRig(mem, pump, image, HostRingWriter(view, offset=0, size=RING),
                 HostRingReader(view, offset=RING, size=RING), net)
    try:
        yield rig
    finally:
        pump.close()
        gm.close()
        image.close()
        tap.close()
        net.close()


def frame(n: int, fill: int = 0xAB) -> bytes:
    return bytes.fromhex("020000000001" "00155d000001" "0800") + bytes((fill + i) & 0xFF for i in range(n - 14))


def send(rig: GpaRig, ranges: list[tuple[int, int, list[int]]], tid: int, *, chan_type: int = 0,
         section: int = NO_SECTION, flags: int = 1) -> None:
    payload = w.nvsp(w.NVSP_SEND_RNDIS_PKT, chan_type, section, 0, pad_to=PAD)
    rig.guest_out.write(GPA, payload, flags=flags, trans_id=tid, header=gpa_header(ranges))


def inbound(rig: GpaRig) -> list[RingPacket]:
    out = []
    while (pkt := rig.guest_in.read_packet()) is not None:
        out.append(pkt)
    rig.guest_in.commit()
    return out


def status_of(pkt: RingPacket) -> int:
    return struct.unpack_from("<2I", pkt.payload)[1]


def test_gpa_send_across_pages_reaches_the_tap_byte_exact(rig: GpaRig) -> None:
    f = frame(9000)
    msg = rndis_data(f)
    a = rig.image.write(5, 3000, msg[:5000])  # two pages, offset 3000
    b = rig.image.write(40, 0, msg[5000:])  # a second range elsewhere
    send(rig, [(5000, 3000, a), (len(msg) - 5000, 0, b)], tid=9)
    rig.pump.run()
    assert rig.net.recv(65536) == f
    (comp,) = inbound(rig)
    assert (comp.type, comp.trans_id, status_of(comp)) == (w.PKT_COMPLETION, 9, w.NVSP_STAT_SUCCESS)
    c = rig.pump.counters()
    assert (c["tx_gpa"], c["tx_frames"], c["handoffs"]) == (1, 1, 0)


def test_page_outside_guest_memory_completes_failed_and_the_channel_goes_on(rig: GpaRig) -> None:
    msg = rndis_data(frame(100))
    for tid, pfn in ((1, GUEST_PFN_BASE - 1), (2, GUEST_PFN_BASE + 256)):
        send(rig, [(len(msg), 0, [pfn])], tid=tid)
    send(rig, [(len(msg), 0, rig.image.write(0, 0, msg))], tid=3)
    rig.pump.run()
    got = [(p.trans_id, status_of(p)) for p in inbound(rig)]
    assert got == [(1, w.NVSP_STAT_FAIL), (2, w.NVSP_STAT_FAIL), (3, w.NVSP_STAT_SUCCESS)]
    assert rig.net.recv(4096) == frame(100)
    c = rig.pump.counters()
    assert (c["tx_gpa_rejected"], c["tx_gpa"]) == (2, 1)


def test_lso_frame_of_60_kib_is_segmented_byte_exact(rig: GpaRig) -> None:
    rig.pump.set_offloads(ho.OFF_TCP4 | ho.OFF_LSO4, 0)
    data = payload(60000)  # an LSO frame of 60054 bytes: far past a send section and 9216
    msg = r_packet(tcp4(data, lso=True, flags=0x19), ppi=ppi(PPI_LSO, lso_info(1448, 34)))
    send(rig, [(len(msg), 0x10, rig.image.write(100, 0x10, msg))], tid=4)
    rig.pump.run()
    (comp,) = inbound(rig)
    assert status_of(comp) == w.NVSP_STAT_SUCCESS
    out = []
    while True:
        try:
            out.append(rig.net.recv(65536))
        except BlockingIOError:
            break
    assert out == segments(tcp4, data, 1448, flags=0x19)
    c = rig.pump.counters()
    assert (c["tx_gpa"], c["tx_segments"], c["handoffs"]) == (1, len(out), 0)


@pytest.mark.parametrize(("case", "reason"), [
    ("header spills", Reason.RNDIS_HDR_RANGE),
    ("control", Reason.CONTROL),
    ("mixed", Reason.GPA_PYTHON),
    ("zero count", Reason.GPA_HEADER),
    ("offset 0x1000", Reason.GPA_HEADER),
    ("pfn list short", Reason.GPA_HEADER),
])
def test_what_the_fast_path_does_not_serve_is_handed_over_unread(rig: GpaRig, case: str, reason: Reason) -> None:
    msg = rndis_data(frame(200))
    pages = rig.image.write(0, 0, msg)
    ranges = {"header spills": [(20, 0, pages[:1]), (len(msg) - 20, 20, pages[:1])],
              "zero count": [(0, 0, pages)], "offset 0x1000": [(8, 0x1000, pages)],
              "pfn list short": [(len(msg), 4000, pages[:1])]}.get(case, [(len(msg), 0, pages)])
    send(rig, ranges, tid=7, chan_type=1 if case == "control" else 0, section=1 if case == "mixed" else NO_SECTION)
    assert rig.pump.run() == PumpResult.CONTROL
    assert rig.pump.reason == reason
    assert inbound(rig) == [] and rig.pump.counters()["handoffs"] == 1
    pkt = HostRingReader(memoryview(rig.mem), offset=0, size=RING).read_packet()
    assert pkt is not None and pkt.type == GPA and pkt.trans_id == 7  # left in the ring, unread


def test_without_guest_memory_type_9_goes_to_python(tmp_path: Path) -> None:
    mem = bytearray(2 * RING)
    tap, net = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        cfg = PumpConfig(ring_size=RING, header_size=HDR, recv_section=SEC, recv_count=2, send_section=6144,
                         max_frame=1514, nvsp_pad=PAD, tap_fd=tap.fileno())
        pump = HostPump(cfg, mem, bytearray(SEC * 2), bytearray(6144 * 4))
        writer = HostRingWriter(memoryview(mem), offset=0, size=RING)
        writer.write(GPA, w.nvsp(w.NVSP_SEND_RNDIS_PKT, 0, NO_SECTION, 0, pad_to=PAD), flags=1, trans_id=3,
                     header=gpa_header([(64, 0, [GUEST_PFN_BASE])]))
        assert pump.run() == PumpResult.CONTROL and pump.reason == Reason.GPA_PYTHON
        pump.close()
    finally:
        tap.close()
        net.close()
