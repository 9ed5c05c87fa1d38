"""Property tests: random write/read sequences across wrap-around.

Three independent parties must agree: the C guest ring (hvuio.native), the Python host ring
(hvuio.sim.vsp.ring, written separately from docs/VMBUS.md) and `RefRing` below, which is nothing but the
index arithmetic of VMBUS.md §3.2/3.8. Invariant: for any sequence, every packet written comes out
byte-exact and in order, full/empty decisions and indices match the model, and a C-written ring
is byte-identical to a Python-written one.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hvuio.errors import LocalProtocolError
from hvuio.native.ring import Direction, Ring
from hvuio.sim.vsp.ring import HostRingReader, HostRingWriter


class RefRing:
    """Spec 3.2 and 3.8 arithmetic only: indices, free space, never completely full."""

    def __init__(self, d: int) -> None:
        self.d, self.w, self.r = d, 0, 0

    def free(self) -> int:
        return self.d - (self.w - self.r) if self.w >= self.r else self.r - self.w

    @staticmethod
    def total(payload: int, header: int) -> int:
        return -(-(16 + header + payload) // 8) * 8 + 8

    def write(self, total: int) -> bool:
        if self.free() <= total:
            return False
        self.w = (self.w + total) % self.d
        return True

    def read(self, total: int) -> None:
        self.r = (self.r + total) % self.d


@dataclass(frozen=True)
class Write:
    ptype: int
    flags: int
    trans_id: int
    header: bytes
    payload: bytes


@dataclass(frozen=True)
class Read:
    max_packets: int


writes = st.builds(Write, st.sampled_from([6, 7, 9, 11]), st.integers(0, 1), st.integers(0, 2**64 - 1),
                   st.sampled_from([b"", bytes(range(8)), bytes(range(100, 116))]), st.binary(max_size=300))
ops = st.lists(st.one_of(writes, st.builds(Read, st.integers(1, 8))), max_size=60)
geometry = st.tuples(st.sampled_from([64, 136, 256, 1000, 4096]), st.sampled_from([4096, 8192, 65536]))


def padded(b: bytes) -> bytes:
    return b + bytes(-len(b) % 8)


@settings(max_examples=150, deadline=None)
@given(geometry, ops)
def test_c_writer_python_host_reader(geo: tuple[int, int], seq: list[Write | Read]) -> None:
    d, hdr = geo
    mem = bytearray(hdr + d)
    tx, host, ref = Ring(mem, direction=Direction.TX, header_size=hdr), HostRingReader(mem, header_size=hdr), RefRing(d)
    pending: collections.deque[tuple[Write, int]] = collections.deque()
    for op in seq:
        if isinstance(op, Write):
            total = ref.total(len(op.payload), len(op.header))
            if total >= d:
                with pytest.raises(LocalProtocolError):
                    tx.send(op.ptype, op.payload, flags=op.flags, trans_id=op.trans_id, header=op.header)
                continue
            was_empty = ref.w == ref.r
            if ref.write(total):
                sig = tx.send(op.ptype, op.payload, flags=op.flags, trans_id=op.trans_id, header=op.header)
                assert sig is was_empty
                pending.append((op, total))
            else:
                with pytest.raises(BlockingIOError):
                    tx.send(op.ptype, op.payload, flags=op.flags, trans_id=op.trans_id, header=op.header)
        else:
            got, _ = host.read_batch(op.max_packets)
            assert len(got) == min(op.max_packets, len(pending))
            for pkt in got:
                want, total = pending.popleft()
                assert (pkt.type, pkt.flags, pkt.trans_id) == (want.ptype, want.flags, want.trans_id)
                assert pkt.header == want.header and pkt.payload == padded(want.payload)
                ref.read(total)
        assert (tx.write_index, host.read_index) == (ref.w, ref.r)
        assert tx.bytes_free() == ref.free()


@settings(max_examples=150, deadline=None)
@given(geometry, ops)
def test_python_host_writer_c_reader(geo: tuple[int, int], seq: list[Write | Read]) -> None:
    d, hdr = geo
    mem = bytearray(hdr + d)
    host, rx, ref = HostRingWriter(mem, header_size=hdr), Ring(mem, direction=Direction.RX, header_size=hdr), RefRing(d)
    pending: collections.deque[tuple[Write, int]] = collections.deque()
    for op in seq:
        if isinstance(op, Write):
            total = ref.total(len(op.payload), len(op.header))
            if total >= d:
                with pytest.raises(ValueError):
                    host.write(op.ptype, op.payload, flags=op.flags, trans_id=op.trans_id, header=op.header)
                continue
            was_empty = ref.w == ref.r
            if ref.write(total):
                assert host.write(op.ptype, op.payload, flags=op.flags, trans_id=op.trans_id,
                                  header=op.header) is was_empty
                pending.append((op, total))
            else:
                with pytest.raises(BlockingIOError):
                    host.write(op.ptype, op.payload, flags=op.flags, trans_id=op.trans_id, header=op.header)
        else:
            assert rx.bytes_to_read() == d - ref.free()
            batch = rx.read_batch(op.max_packets)
            assert batch.need_signal is False  # host never set pending_send_sz
            assert len(batch.packets) == min(op.max_packets, len(pending))
            for pkt in batch.packets:
                want, total = pending.popleft()
                assert (pkt.type, pkt.flags, pkt.trans_id) == (want.ptype, want.flags, want.trans_id)
                assert pkt.header == want.header and pkt.payload == padded(want.payload)
                ref.read(total)
        assert (host.write_index, rx.read_index) == (ref.w, ref.r)
        assert host.bytes_free() == ref.free()


@settings(max_examples=150, deadline=None)
@given(st.sampled_from([64, 256, 1000]), ops)
def test_c_and_python_writers_produce_identical_rings(d: int, seq: list[Write | Read]) -> None:
    """The same sequence through C-writer/Python-reader and Python-writer/C-reader leaves the
    shared memory byte-identical after every step (layout, padding, trailer, indices)."""
    mem_c, mem_py = bytearray(4096 + d), bytearray(4096 + d)
    tx, host_rd = Ring(mem_c, direction=Direction.TX), HostRingReader(mem_c)
    host_wr, rx = HostRingWriter(mem_py), Ring(mem_py, direction=Direction.RX)
    for op in seq:
        if isinstance(op, Write):
            def c_send() -> bool:
                return tx.send(op.ptype, op.payload, flags=op.flags, trans_id=op.trans_id, header=op.header)

            def py_send() -> bool:
                return host_wr.write(op.ptype, op.payload, flags=op.flags, trans_id=op.trans_id, header=op.header)

            outcomes: list[tuple[str, bool | None]] = []
            for write in (c_send, py_send):
                try:
                    outcomes.append(("ok", write()))
                except BlockingIOError:
                    outcomes.append(("full", None))
                except (LocalProtocolError, ValueError):
                    outcomes.append(("too big", None))
            assert outcomes[0] == outcomes[1]
        else:
            a = host_rd.read_batch(op.max_packets)[0]
            b = rx.read_batch(op.max_packets).packets
            assert [(p.type, p.flags, p.trans_id, p.header, p.payload) for p in a] == \
                   [(p.type, p.flags, p.trans_id, p.header, p.payload) for p in b]
        assert mem_c == mem_py
