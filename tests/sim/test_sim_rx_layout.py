"""Where the emulated host puts a received frame in its receive section (HostProfile.rx_layout),
on the Python host; the C pump's twin checks are in tests/sim/test_sim_fastpath.py.

openvmm (the default) is OpenVMM's netvsp (vm/devices/net/netvsp/src/buffers.rs
BufferPool::write_header, lib.rs process_endpoint_rx): the range and message_length are the whole
sub-allocation, the frame at byte 256, checksum info always the first per-packet info (0 when the
host did not check), the rest of the section not written. compact: the frame right after the
header, the range as long as the message. Numbers here are literal (golden offsets), not the
host's constants.
"""

from __future__ import annotations

import struct

import pytest
from support.sim_offload import BITS, PPI_CSUM, RX_IP_OK, udp4
from support.simhost import OID, RXBUF, Env, c, r_set

from hvuio.errors import UsageError
from hvuio.sim.host.profile import HostProfile

RX_UDP_OK = c(BITS, "NDIS_RXCSUM_INFO_UDPCS_OK")
STALE = 0xEE
FRAME = bytes.fromhex("ffffffffffff00155d0000020806") + bytes(range(46))  # 60 bytes


def _env(layout: str) -> Env:
    env = Env(HostProfile(rx_layout=layout))  # type: ignore[arg-type]
    env.bring_up()
    env.recv[:] = bytes([STALE]) * len(env.recv)  # what the guest's sections held before
    return env


def _ranges(env: Env, frames: list[bytes]) -> list[tuple[int, int]]:
    (pkt,) = [p for p in env.host.deliver_batch(frames).packets if p.type == RXBUF]
    return list(pkt.ranges)


def test_openvmm_layout_fills_the_whole_section() -> None:
    env = _env("openvmm")
    section = env.host.recv[2]  # type: ignore[index]
    assert section == 256 + 1514 + 36  # OpenVMM sub_allocation_size_for_mtu(1514)
    frames = [FRAME, FRAME[:14], bytes(range(256)) * 5 + bytes(234)]  # 60, 14 and 1514 bytes
    ranges = _ranges(env, frames)
    for (count, offset), frame in zip(ranges, frames, strict=True):
        sec = bytes(env.recv[offset:offset + section])
        assert count == section and offset % section == 0
        # type, message_length, data_offset (from byte 8), data_length, OOB x3, PPI offset/length
        assert struct.unpack_from("<9I", sec) == (1, section, 248, len(frame), 0, 0, 0, 36, 16)
        assert struct.unpack_from("<4I", sec, 44) == (16, PPI_CSUM, 12, 0)  # checksum info, not checked
        assert sec[256:256 + len(frame)] == frame
        assert set(sec[60:256]) == {STALE} and set(sec[256 + len(frame):]) <= {STALE}  # not written


def test_openvmm_layout_checksum_info_leads_when_marked() -> None:
    env = _env("openvmm")
    params = bytearray(28)  # NDIS_OFFLOAD_PARAMETERS rev 3: every checksum offload on (rx and tx)
    struct.pack_into("<BBH", params, 0, 0x80, 3, 28)
    params[4:9] = bytes([4] * 5)
    env.ack_all(env.send_rndis(r_set(80, c(OID, "OID_TCP_OFFLOAD_PARAMETERS"), bytes(params))))
    frame = udp4(b"x" * 100)
    ((count, offset),) = _ranges(env, [frame])
    sec = bytes(env.recv[offset:offset + count])
    assert struct.unpack_from("<9I", sec)[7:] == (36, 16)  # still the only per-packet info
    assert struct.unpack_from("<4I", sec, 44) == (16, PPI_CSUM, 12, RX_UDP_OK | RX_IP_OK)
    assert sec[256:256 + len(frame)] == frame


def test_compact_layout_is_the_message_alone() -> None:
    env = _env("compact")
    ((count, offset),) = _ranges(env, [FRAME])
    sec = bytes(env.recv[offset:offset + count])
    assert count == 44 + len(FRAME)
    assert struct.unpack_from("<9I", sec) == (1, 44 + len(FRAME), 36, len(FRAME), 0, 0, 0, 0, 0)
    assert sec[44:] == FRAME
    assert set(env.recv[offset + count:offset + env.host.recv[2]]) == {STALE}  # type: ignore[index]


@pytest.mark.parametrize("layout", ["openvmm", "compact"])
def test_control_replies_keep_the_message_length(layout: str) -> None:
    # [OV] send_rndis_control_message: a control reply's range is as long as its message.
    env = _env(layout)
    step = env.send_rndis(r_set(81, c(OID, "OID_GEN_CURRENT_PACKET_FILTER"), struct.pack("<I", 0xD)))
    (pkt,) = [p for p in step.packets if p.type == RXBUF]
    ((count, offset),) = pkt.ranges
    assert count == struct.unpack_from("<I", env.recv, offset + 4)[0] < env.host.recv[2]  # type: ignore[index]


@pytest.mark.parametrize("layout, dropped", [("openvmm", True), ("compact", False)])
def test_a_frame_into_the_footer_is_a_counted_drop(layout: str, dropped: bool) -> None:
    # [OV] capacity() = the MTU: the last 36 bytes of a sub-allocation are never written.
    env = Env(HostProfile(rx_layout=layout, recv_section_size=1700))  # type: ignore[arg-type]
    env.bring_up()
    frame = FRAME[:14] + bytes(1700 - 256 - 36 + 1 - 14)  # one byte into the footer (openvmm)
    step = env.host.deliver_batch([frame])
    assert env.host.counters["rx_dropped_too_big"] == int(dropped)
    assert len(step.packets) == int(not dropped)


def test_an_unknown_layout_is_refused() -> None:
    with pytest.raises(UsageError, match="rx_layout 'dense' must be one of openvmm, compact"):
        HostProfile(rx_layout="dense")  # type: ignore[arg-type]
