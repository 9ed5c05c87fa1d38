"""C data path, mixed transfer-page packets: ranges holding RNDIS control messages and data
messages together. Linux (netvsc_receive -> rndis_filter_receive) and DPDK (hn_nvs_handle_rxbuf ->
hn_rndis_receive) dispatch each range on its own type; the pump leaves such a packet whole to
Python, whose reader hands each data message back through `DataPath.deliver_data` and completes
the packet itself (datapath.h, "Mixed packets"). Here the test is that reader; the Channel doing it
is tested in tests/nic/test_channel.py."""

from __future__ import annotations

import struct

import pytest

from hvuio.errors import LocalProtocolError
from hvuio.native.datapath import Status
from support.fakehost import RNDIS_INIT_CMPLT, RNDIS_PACKET, FakeHost, frame, pktinfo, rndis_packet
from support.golden import GOLDEN

C = GOLDEN["constants"]
IDF = C["linux:rndis_pktinfo_id_flags"]
PPI_ID = C["linux:ppi_type_words"]["RNDIS_PKTINFO_ID|internal"]
SUB, FIRST, LAST = IDF["RNDIS_PKTINFO_SUBALLOC"], IDF["RNDIS_PKTINFO_1ST_FRAG"], IDF["RNDIS_PKTINFO_LAST_FRAG"]
INIT_CMPLT = struct.pack("<IIII", RNDIS_INIT_CMPLT, 52, 1, 0) + bytes(36)


def fragment(piece: bytes, flags: int) -> bytes:
    """An RSC fragment: rndis_pktinfo_id {ver 1, flag, pkt_id 0} (golden linux:rndis_pktinfo_id)."""
    return rndis_packet(piece, ppi=pktinfo(PPI_ID, bytes([IDF["RNDIS_PKTINFO_ID_V1"], flags, 0, 0])))


def mixed(host: FakeHost, msgs: list[bytes], trans_id: int) -> None:
    host.send_xfer([host.place(i, m) for i, m in enumerate(msgs)], trans_id=trans_id)


def read_as_control_path(host: FakeHost) -> tuple[list[bytes], list[bool]]:
    """What Python's reader does with the packet the pump left (one RNDIS message per range here):
    control messages kept, data messages handed back. Returns (control messages, hand-back results)."""
    pkt = host.dp.read_control()
    assert pkt.type == 0x7
    count = struct.unpack_from("<I", pkt.header, 4)[0]
    control, results = [], []
    for i in range(count):
        length, offset = struct.unpack_from("<II", pkt.header, 8 + 8 * i)
        msg = bytes(host.recv[offset:offset + length])
        if struct.unpack_from("<I", msg)[0] == RNDIS_PACKET:
            results.append(host.dp.deliver_data(msg))
        else:
            control.append(msg)
    return control, results


def ranges_accounted(host: FakeHost, open_fragments: int = 0) -> None:
    c = host.dp.counters()
    assert c["rx_ranges"] == c["rx_ranges_written"] + c["rx_range_drops"] + open_fragments


def test_data_control_data_frames_reach_the_tap_and_the_control_message_python(host: FakeHost) -> None:
    a, b = frame(60, 1), frame(1514, 2)
    mixed(host, [rndis_packet(a), INIT_CMPLT, rndis_packet(b)], trans_id=0x44)
    assert host.dp.rx() is Status.CONTROL
    assert host.tap_frames() == [] and host.drain() == []       # the pump took nothing of it
    control, results = read_as_control_path(host)
    assert control == [INIT_CMPLT] and results == [True, True]
    assert host.tap_frames() == [a, b]
    assert host.drain() == []                                   # the reader completes it, not the pump
    c = host.dp.counters()
    assert c["rx_ctl_data"] == 2 and c["rx_packets"] == 2 and c["rx_bytes"] == 60 + 1514
    assert c["rx_xfer"] == 0 and c["rx_comp_sent"] == 0 and c["rx_control"] == 1
    ranges_accounted(host)
    assert host.rx_ring.bytes_to_read() == 0


def test_a_later_data_packet_still_goes_through_the_pump(host: FakeHost) -> None:
    mixed(host, [INIT_CMPLT, rndis_packet(frame(64, 1))], trans_id=1)
    host.send_frames([frame(64, 2)], trans_id=2, first_section=4)
    assert host.dp.rx() is Status.CONTROL
    read_as_control_path(host)
    assert host.dp.rx() is Status.IDLE
    assert host.tap_frames() == [frame(64, 1), frame(64, 2)]    # in the host's order
    assert [p.trans_id for p in host.drain()] == [2]


def test_a_bad_data_message_handed_back_is_dropped_and_counted(host: FakeHost) -> None:
    bad = rndis_packet(frame(64), data_offset=8)                # data_offset below 36
    over = rndis_packet(frame(1600))                            # longer than mtu + 18
    mixed(host, [bad, INIT_CMPLT, over, rndis_packet(frame(64, 3))], trans_id=5)
    assert host.dp.rx() is Status.CONTROL
    control, results = read_as_control_path(host)
    assert control == [INIT_CMPLT] and results == [False, False, True]
    assert host.tap_frames() == [frame(64, 3)]
    c = host.dp.counters()
    assert c["rx_bad_rndis"] == 1 and c["rx_oversize"] == 1 and c["rx_range_drops"] == 2
    assert host.dp.drop_counts() == {"rndis_data_offset": 1, "rx_oversize": 1}
    ranges_accounted(host)


def test_rsc_sequence_spans_a_control_message_and_the_pump(host: FakeHost) -> None:
    """A control message between fragments leaves the sequence open (Linux touches the RSC state
    only for data messages); the pump's next packet finishes it."""
    whole = frame(1200, 9)
    mixed(host, [fragment(whole[:400], SUB | FIRST), INIT_CMPLT, fragment(whole[400:800], SUB)], trans_id=7)
    assert host.dp.rx() is Status.CONTROL
    control, results = read_as_control_path(host)
    assert control == [INIT_CMPLT] and results == [True, True]
    assert host.tap_frames() == []
    ranges_accounted(host, open_fragments=2)
    host.send_xfer([host.place(5, fragment(whole[800:], SUB | LAST))], trans_id=8)
    assert host.dp.rx() is Status.IDLE
    assert host.tap_frames() == [whole]
    c = host.dp.counters()
    assert c["rx_rsc_frames"] == 1 and c["rx_rsc_frags"] == 3 and c["rx_rsc_drop"] == 0
    ranges_accounted(host)


def test_a_message_longer_than_a_receive_section_is_refused(host: FakeHost) -> None:
    with pytest.raises(LocalProtocolError, match="rx_data"):
        host.dp.deliver_data(rndis_packet(frame(host.recv_section)))
    assert host.dp.counters()["rx_ranges"] == 0
