"""The emulator's C host data path serving several channels of one NIC (hvu_sim_pump_add_chan via
`HostPump.add_channel`): the guest's RSS table puts frames on their channel in C, data sends and
completions are served on the channel they came on, receive sections are one pool, and a control
packet on a subchannel is handed to Python unread with its channel named.

The guest is played with the Python ring classes of hvuio.sim.vsp.ring, the tap with a
non-blocking AF_UNIX seqpacket pair. No root needed.
"""

from __future__ import annotations

import random
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from support.toeplitz import expected_queue, flow_frame

from hvuio.sim.host import rss
from hvuio.sim.host import wire as w
from hvuio.sim.vsp import fastpath
from hvuio.sim.vsp.fastpath import HostPump, PumpConfig, PumpResult
from hvuio.sim.vsp.ring import HostRingReader, HostRingWriter, RingPacket

pytestmark = pytest.mark.skipif(not fastpath.available(), reason="hvuio.sim._simhost not built")

HDR = 4096
RING = HDR + 64 * 1024
SEC = 1806
SECTIONS = 64
SEND_SEC = 6144
PAD = 40
HASH_TYPES = 0x1701  # IPv4/IPv6 and their TCP/UDP


@dataclass
class Chan:
    mem: bytearray
    guest_out: HostRingWriter  # the guest writing this channel's outbound ring
    guest_in: HostRingReader  # the guest reading this channel's inbound ring


@dataclass
class Nic:
    pump: HostPump
    chans: list[Chan]
    recv: bytearray
    send: bytearray
    monitor: bytearray
    net: socket.socket


def ring_mem() -> bytearray:
    mem = bytearray(2 * RING)
    for off in (0, RING):
        struct.pack_into("<I", mem, off + 64, 1)  # feature bit pending_send_sz
    return mem


def chan(mem: bytearray) -> Chan:
    view = memoryview(mem)
    return Chan(mem, HostRingWriter(view, offset=0, size=RING), HostRingReader(view, offset=RING, size=RING))


@pytest.fixture
def nic() -> Iterator[Nic]:
    """A NIC of two channels served by one pump (a third, queue 2, has no ring yet)."""
    recv, send, monitor = bytearray(SEC * SECTIONS), bytearray(SEND_SEC * 16), bytearray(4096)
    tap, net = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    tap.setblocking(False)
    net.setblocking(False)
    cfg = PumpConfig(ring_size=RING, header_size=HDR, recv_section=SEC, recv_count=SECTIONS,
                     send_section=SEND_SEC, max_frame=1514, nvsp_pad=PAD, tap_fd=tap.fileno(),
                     monitor_id=37, rx_batch=4)
    chans = [chan(ring_mem()), chan(ring_mem())]
    pump = HostPump(cfg, chans[0].mem, recv, send, monitor)
    pump.add_channel(1, chans[1].mem, monitor, monitor_id=38)
    pump.add_sections(range(SECTIONS))
    pump.rx_enabled = True
    try:
        yield Nic(pump, chans, recv, send, monitor, net)
    finally:
        pump.close()
        tap.close()
        net.close()


def inbound(c: Chan) -> list[RingPacket]:
    out = []
    while (pkt := c.guest_in.read_packet()) is not None:
        out.append(pkt)
    c.guest_in.commit()
    return out


def xfer_frames(nic: Nic, pkt: RingPacket) -> list[bytes]:
    """The frames of one transfer-page packet (openvmm layout: the RNDIS message at the range)."""
    assert pkt.type == w.PKT_XFER_PAGES
    out = []
    for i in range(struct.unpack_from("<I", pkt.header, 4)[0]):
        _length, offset = struct.unpack_from("<II", pkt.header, 8 + 8 * i)
        doff, dlen = struct.unpack_from("<II", nic.recv, offset + 8)
        out.append(bytes(nic.recv[offset + 8 + doff:offset + 8 + doff + dlen]))
    return out


def flows(rnd: random.Random, n: int) -> list[bytes]:
    return [flow_frame(f"10.0.{rnd.randrange(256)}.{rnd.randrange(1, 255)}", "10.0.0.1", rnd.choice((6, 17)),
                       rnd.randrange(65536), rnd.randrange(65536), payload=i.to_bytes(4, "big")) for i in range(n)]


def steer_setup(nic: Nic, seed: int, queues: int) -> tuple[bytes, tuple[int, ...]]:
    rnd = random.Random(seed)
    key = rnd.randbytes(40)
    table = tuple(rnd.randrange(queues) for _ in range(128))
    nic.pump.set_rss(rss.RssState(key, table, HASH_TYPES), queues)
    return key, table


def deliver(nic: Nic, frames: list[bytes]) -> tuple[dict[bytes, int], list[list[RingPacket]], list[tuple[int, bytes]]]:
    """Send frames from the network; run until each arrived: (frame -> channel it came on, the
    packets per channel, the steered records)."""
    for f in frames:
        nic.net.send(f)
    got: dict[bytes, int] = {}
    packets: list[list[RingPacket]] = [[], []]
    steered: list[tuple[int, bytes]] = []
    for _ in range(40):
        nic.pump.run()
        steered += nic.pump.take_steered()
        for index, c in enumerate(nic.chans):
            for pkt in inbound(c):
                packets[index].append(pkt)
                got.update(dict.fromkeys(xfer_frames(nic, pkt), index))
        if len(got) + len(steered) == len(frames):
            break
    return got, packets, steered


def test_frames_for_queue_1_are_delivered_in_c_on_the_subchannel(nic: Nic) -> None:
    key, table = steer_setup(nic, 5, 2)
    frames = flows(random.Random(6), 40)
    want = {f: expected_queue(f, key, table, HASH_TYPES, 2) for f in frames}
    assert set(want.values()) == {0, 1}
    got, packets, steered = deliver(nic, frames)
    assert got == want and steered == []
    counters = nic.pump.counters()
    assert counters["rx_steered"] == 0 and counters["rx_frames"] == len(frames)
    for index in (0, 1):
        n = sum(1 for q in want.values() if q == index)
        assert nic.pump.channel_counters(index)["rx_frames"] == n
        assert nic.pump.channel_counters(index)["rx_packets"] == len(packets[index])


def test_completions_on_each_channel_free_that_channels_sections(nic: Nic) -> None:
    steer_setup(nic, 5, 2)
    frames = flows(random.Random(6), 40)
    _got, packets, _steered = deliver(nic, frames)
    assert nic.pump.in_flight == len(frames)

    def sections(pkt: RingPacket) -> set[int]:
        count = struct.unpack_from("<I", pkt.header, 4)[0]
        return {struct.unpack_from("<I", pkt.header, 12 + 8 * i)[0] // SEC for i in range(count)}

    ch1 = set().union(*(sections(p) for p in packets[1]))
    for pkt in packets[1]:  # the guest completes the subchannel's packets on the subchannel
        nic.chans[1].guest_out.write(w.PKT_COMPLETION, w.nvsp(w.NVSP_SEND_RNDIS_PKT_COMPLETE, w.NVSP_STAT_SUCCESS),
                                     trans_id=pkt.trans_id)
    nic.pump.run()
    assert nic.pump.in_flight == len(frames) - len(ch1)
    assert nic.pump.counters()["rx_completions"] == len(packets[1])
    assert nic.pump.counters()["completions_unknown"] == 0
    free = set(nic.pump.take_sections())
    assert ch1 <= free and not free & set().union(*(sections(p) for p in packets[0]))
    nic.pump.add_sections(free)
    for pkt in packets[0]:
        nic.chans[0].guest_out.write(w.PKT_COMPLETION, w.nvsp(w.NVSP_SEND_RNDIS_PKT_COMPLETE, w.NVSP_STAT_SUCCESS),
                                     trans_id=pkt.trans_id)
    nic.pump.run()
    assert nic.pump.in_flight == 0 and nic.pump.sections_free == SECTIONS


def test_a_repeated_completion_on_the_other_channel_frees_nothing(nic: Nic) -> None:
    steer_setup(nic, 5, 2)
    _got, packets, _steered = deliver(nic, flows(random.Random(6), 12))
    pkt = packets[1][0]
    for c in (nic.chans[1], nic.chans[0]):
        c.guest_out.write(w.PKT_COMPLETION, w.nvsp(w.NVSP_SEND_RNDIS_PKT_COMPLETE, w.NVSP_STAT_SUCCESS),
                          trans_id=pkt.trans_id)
        nic.pump.run()
    assert nic.pump.counters()["rx_completions"] == 1 and nic.pump.counters()["completions_unknown"] == 1


def test_frames_for_a_channel_without_ring_go_to_python(nic: Nic) -> None:
    key, table = steer_setup(nic, 7, 3)
    frames = flows(random.Random(8), 40)
    want = {f: expected_queue(f, key, table, HASH_TYPES, 3) for f in frames}
    assert set(want.values()) == {0, 1, 2}
    got, _packets, steered = deliver(nic, frames)
    assert got == {f: q for f, q in want.items() if q != 2}
    assert sorted(steered) == sorted((2, f) for f, q in want.items() if q == 2)
    assert nic.pump.counters()["rx_steered"] == len(steered)


def test_a_data_send_on_the_subchannel_is_completed_on_the_subchannel(nic: Nic) -> None:
    f = flow_frame("10.0.0.1", "10.0.0.2", 17, 1, 2, payload=b"sub")
    nic.send[2 * SEND_SEC:2 * SEND_SEC + len(f) + 44] = w.rndis_packet(f)
    payload = w.nvsp(w.NVSP_SEND_RNDIS_PKT, 0, 2, len(w.rndis_packet(f)), pad_to=PAD)
    nic.chans[1].guest_out.write(w.PKT_INBAND, payload, flags=1, trans_id=91)
    assert nic.pump.run() == PumpResult.SIGNAL
    assert nic.pump.signal_channels == [1]
    assert nic.net.recv(4096) == f
    assert inbound(nic.chans[0]) == []
    (comp,) = inbound(nic.chans[1])
    assert (comp.type, comp.trans_id) == (w.PKT_COMPLETION, 91)
    assert nic.pump.channel_counters(1)["tx_frames"] == 1 and nic.pump.channel_counters(0)["tx_frames"] == 0


def test_a_control_packet_on_the_subchannel_is_handed_over_unread(nic: Nic) -> None:
    nic.chans[1].guest_out.write(w.PKT_INBAND, w.nvsp(w.NVSP_SUBCHANNEL, 1, 2, pad_to=PAD),
                                 flags=1, trans_id=5)
    assert nic.pump.run() == PumpResult.CONTROL
    assert nic.pump.last_channel == 1
    view = memoryview(nic.chans[1].mem)
    host_out = HostRingReader(view, offset=0, size=RING)
    pkt = host_out.read_packet()
    assert pkt is not None and pkt.trans_id == 5


def test_a_channel_is_added_once_and_within_range(nic: Nic) -> None:
    with pytest.raises(Exception, match="cannot join"):
        nic.pump.add_channel(1, ring_mem())
    with pytest.raises(Exception, match="cannot join"):
        nic.pump.add_channel(64, ring_mem())
    with pytest.raises(Exception, match="the primary's ring size"):
        nic.pump.add_channel(2, bytearray(4 * RING))
    assert nic.pump.channels == [0, 1]
