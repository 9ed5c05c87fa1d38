"""Signal decisions (VMBUS.md §3.11, 4.18): the pure C functions as tables, then the same rules seen
end to end between the C guest ring and the Python host ring."""

from __future__ import annotations

import pytest

from hvuio.native.ring import (Direction, Ring, avail_bytes, free_bytes, pending_send_clamp, signal_after_read,
                               signal_after_write)
from hvuio.sim.vsp.ring import HostRingReader, HostRingWriter

D = 256


@pytest.mark.parametrize("w,r,free", [(0, 0, D), (8, 0, D - 8), (0, 8, 8), (248, 0, 8), (96, 32, D - 64),
                                      (32, 96, 64)])
def test_free_and_avail(w: int, r: int, free: int) -> None:
    assert free_bytes(w, r, D) == free
    assert avail_bytes(w, r, D) == D - free


@pytest.mark.parametrize("p,clamped", [(0, 0), (7, 0), (8, 8), (100, 96), (248, 248), (255, 248),
                                       (D, 248), (0xFFFFFFFF, 248)])
def test_pending_send_clamp(p: int, clamped: int) -> None:
    assert pending_send_clamp(p, D) == clamped


@pytest.mark.parametrize("mask,read_index,old_write,expected", [
    (0, 40, 40, True),          # ring was empty before this write: empty -> non-empty
    (0, 32, 40, False),         # host still had data to read: it will see ours
    (1, 40, 40, False),         # host is draining (mask set)
    (0xFFFFFFFF, 40, 40, False),  # any non-zero mask counts as masked (VMBUS.md §4.17)
    (2, 0, 0, False),
])
def test_signal_after_write_table(mask: int, read_index: int, old_write: int, expected: bool) -> None:
    assert signal_after_write(mask, read_index, old_write) is expected


@pytest.mark.parametrize("feat,p,free_now,consumed,expected", [
    (0, 64, 100, 50, False),    # feature bit clear: never
    (2, 64, 100, 50, False),    # only bit 0 counts
    (1, 0, 100, 50, False),     # writer not blocked
    (1, 64, 100, 50, True),     # before 50 <= 64 < 100 after
    (3, 64, 100, 50, True),
    (1, 64, 120, 50, False),    # before 70 > 64: was not blocked
    (1, 64, 64, 10, False),     # after 64 <= 64: still not enough
    (1, 64, 72, 8, True),       # boundary: before == P, after > P
    (1, 63, 64, 16, True),      # P rounds down to 56: 48 <= 56 < 64
    (1, 64, 64, 16, False),     # same numbers without the rounding: after <= P
    (1, 0xFFFFFFFF, 256, 16, True),  # P capped at D - 8 = 248: 240 <= 248 < 256
    (1, 7, 256, 16, False),     # rounds to 0: no request
])
def test_signal_after_read_table(feat: int, p: int, free_now: int, consumed: int, expected: bool) -> None:
    assert signal_after_read(feat, p, D, free_now, consumed) is expected


def test_guest_reader_signals_when_host_writer_unblocks() -> None:
    mem = bytearray(4096 + D)
    host = HostRingWriter(mem)
    host.reset()  # feature bit 0 set, as at channel open
    for i in range(7):
        host.write(6, bytes(8), trans_id=i)  # 32 bytes each
    assert host.bytes_free() == 32
    host.set_pending_send_sz(64)  # host blocked on a 64-byte packet
    rx = Ring(mem, direction=Direction.RX)
    assert rx.read_batch(1).need_signal is False  # free 64: not > 64
    assert rx.read_batch(1).need_signal is True   # free 96, was 64
    assert rx.read_batch(1).need_signal is False  # was already past P
    host.set_pending_send_sz(0)
    assert rx.read_batch().need_signal is False
    assert rx.counters()["ring_signals"] == 1


def test_guest_reader_ignores_pending_without_feature_bit() -> None:
    mem = bytearray(4096 + D)
    host = HostRingWriter(mem)
    for _ in range(7):
        host.write(6, bytes(8))
    host.set_pending_send_sz(64)
    rx = Ring(mem, direction=Direction.RX)
    assert [rx.read_batch(1).need_signal for _ in range(7)] == [False] * 7


def test_guest_writer_and_host_drain_mask() -> None:
    mem = bytearray(4096 + D)
    tx, host = Ring(mem, direction=Direction.TX), HostRingReader(mem)
    assert tx.send(6, b"a") is True
    assert tx.send(6, b"b") is False
    host.begin_drain()
    assert host.read_packet() is not None and host.read_packet() is not None
    host.commit()
    assert tx.send(6, b"c") is False  # empty, but the host is still draining (mask 1)
    assert host.end_drain() is True   # host re-checks after unmasking and finds it
    host.read_batch()
    assert host.interrupt_mask == 0
    assert tx.send(6, b"d") is True


def test_host_reader_signals_guest_pending_send() -> None:
    mem = bytearray(4096 + D)
    tx, host = Ring(mem, direction=Direction.TX), HostRingReader(mem)
    tx.set_feature_bits(1)
    for _ in range(7):
        tx.send(6, bytes(8))
    tx.set_pending_send_sz(64)
    assert host.read_batch(1)[1] is False
    assert host.read_batch(1)[1] is True
    assert host.read_batch(1)[1] is False


def test_host_writer_interrupts_only_empty_to_nonempty_unmasked() -> None:
    mem = bytearray(4096 + D)
    host, rx = HostRingWriter(mem), Ring(mem, direction=Direction.RX)
    assert host.write(6, b"1") is True
    assert host.write(6, b"2") is False
    rx.read_batch()
    rx.set_interrupt_mask(1)  # guest polls: no interrupts wanted
    assert host.write(6, b"3") is False
    rx.read_batch()
    rx.set_interrupt_mask(0)
    assert host.write(6, b"4") is True
