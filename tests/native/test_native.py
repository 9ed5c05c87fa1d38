"""The binding itself: module selection and ABI check, constants vs hvuio.wire, every invalid
argument of the C API, the low-level peek/copy-out/consume and first/next/close calls, the
transfer-page check, and _native/build.py's own logic."""

from __future__ import annotations

import ast
import errno
import importlib.util
import os
import struct
import subprocess
import sys

import pytest

from hvuio import native
from hvuio.errors import RingCorruptError
from hvuio.native import ffi, lib
from hvuio.native.ring import COUNTER_NAMES, PacketType, check_xfer_header
from hvuio.sim.vsp.ring import HostRingWriter
from hvuio.wire import vmbus as w

from support.paths import ROOT

D = 256


def test_module_and_abi() -> None:
    assert native.MODULE_NAME in ("hvuio._native", "hvuio._native_asan")
    assert lib.hvu_abi_version() == native.ABI_VERSION


def test_unknown_native_variant_is_platform_error() -> None:
    env = dict(os.environ, HVUIO_NATIVE="nosuch")
    out = subprocess.run([sys.executable, "-c", "import hvuio.native"], env=env, capture_output=True, text=True)
    assert out.returncode != 0 and "PlatformError" in out.stderr and "nosuch" in out.stderr


def test_constants_match_wire() -> None:
    pairs = [(PacketType.INBAND, w.PacketType.DATA_INBAND),
             (PacketType.XFER_PAGES, w.PacketType.DATA_USING_XFER_PAGES),
             (PacketType.GPA_DIRECT, w.PacketType.DATA_USING_GPA_DIRECT),
             (PacketType.COMP, w.PacketType.COMP)]
    assert all(int(a) == int(b) for a, b in pairs)
    assert lib.HVU_ACCEPT_DEFAULT == sum(1 << t for t in w.ACCEPTED_TYPES)
    assert lib.HVU_PKT_FLAG_COMPLETION_REQUESTED == w.PacketFlag.COMPLETION_REQUESTED
    assert lib.HVU_XFER_PAGESET_ID_NETVSC == w.XFER_PAGESET_ID_NETVSC
    assert (lib.HVU_DESC_SIZE, lib.HVU_TRAILER_SIZE) == (w.DESC_SIZE, w.TRAILER_SIZE)



def test_sizes_the_c_core_exports() -> None:
    """The sizes Python reads from lib agree with the wire layouts and the device layer's own copy
    of the monitor-page geometry (the device layer does not load the C core)."""
    from hvuio.device import sysfs, uio

    assert (native.DESC_SIZE, native.TRAILER_SIZE, native.HV_PAGE_SIZE) == (w.DESC_SIZE, w.TRAILER_SIZE,
                                                                            w.HV_PAGE_SIZE)
    assert native.MAX_LEN8 == 0xFFFF  # a u16 (VMBUS.md §3.3)
    assert (native.MONITOR_MAX_ID, lib.HVU_MONITOR_PENDING_OFFSET) == (sysfs.MONITOR_IDS, uio.MONITOR_PENDING_OFFSET)


def test_stub_names_exactly_what_lib_exports() -> None:
    """hvuio/_native.pyi declares every function and constant of the compiled module, and no more."""
    stub = ast.parse((ROOT / "hvuio" / "_native.pyi").read_text())
    [lib_class] = [n for n in stub.body if isinstance(n, ast.ClassDef) and n.name == "Lib"]
    declared = {n.target.id for n in lib_class.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}
    declared |= {n.name for n in lib_class.body if isinstance(n, ast.FunctionDef)}
    exported = {name for name in dir(lib) if not name.startswith("_")}
    assert sorted(exported - declared) == [] and sorted(declared - exported) == []

def test_reason_and_counter_names() -> None:
    names = [ffi.string(lib.hvu_reason_name(i)).decode() for i in range(lib.HVU_REASON_COUNT)]
    assert names[lib.HVU_BAD_LEN8] == "len8" and names[lib.HVU_BAD_READ_INDEX] == "read_index"
    assert len(set(names)) == len(names)
    assert ffi.string(lib.hvu_reason_name(-1)) == b"unknown"
    assert ffi.string(lib.hvu_reason_name(lib.HVU_REASON_COUNT)) == b"unknown"
    assert len(set(COUNTER_NAMES)) == lib.hvu_counter_count() == len(COUNTER_NAMES)
    assert {"ring_full", "ring_signals", "tx_packets", "rx_packets"} <= set(COUNTER_NAMES)
    assert lib.hvu_counter_name(lib.hvu_counter_count()) == ffi.NULL
    assert lib.hvu_counter_name(-1) == ffi.NULL


class CRing:
    """A ring attached straight through lib, for the argument checks."""

    def __init__(self, direction: int, data: int = D) -> None:
        self.mem = ffi.new("uint64_t[]", (4096 + data) // 8)
        self.base = ffi.cast("uint8_t *", self.mem)
        self.owner = ffi.new("uint64_t[]", lib.hvu_ring_sizeof() // 8 + 1)  # cast() does not keep it alive
        self.r = ffi.cast("struct hvu_ring *", self.owner)
        assert lib.hvu_ring_attach(self.r, self.base, 4096 + data, 4096, direction) == 0


def test_attach_invalid_arguments() -> None:
    owner = ffi.new("uint64_t[]", lib.hvu_ring_sizeof() // 8 + 1)
    ring = ffi.cast("struct hvu_ring *", owner)
    mem = ffi.new("uint64_t[]", 1024)
    base = ffi.cast("uint8_t *", mem)
    einval = -errno.EINVAL
    assert lib.hvu_ring_attach(ffi.NULL, base, 8192, 4096, 0) == einval
    assert lib.hvu_ring_attach(ring, ffi.NULL, 8192, 4096, 0) == einval
    assert lib.hvu_ring_attach(ring, base + 4, 8192 - 8, 4096, 0) == einval  # misaligned
    assert lib.hvu_ring_attach(ring, base, 8192, 4096, 2) == einval  # no such direction
    assert lib.hvu_ring_attach(ring, base, 4096, 4096, 0) == einval  # no data area
    assert lib.hvu_ring_attach(ring, base, 8192, 2048, 0) == einval  # header below 4 KiB
    assert lib.hvu_ring_attach(ring, base, 4096 + 4096 + 4, 4096, 0) == einval  # D not 8-aligned
    assert lib.hvu_ring_attach(ring, base, 8192, 4096, 0) == 0
    assert lib.hvu_ring_attach(ring, base, 8192, 100, 0) == einval  # failed re-attach ...
    assert lib.hvu_ring_bytes_free(ring) == einval  # ... leaves the ring unusable


def test_writer_invalid_arguments() -> None:
    c = CRing(lib.HVU_RING_TX)
    sig = ffi.new("int *")
    segs = ffi.new("struct hvu_seg[]", 2)
    assert lib.hvu_ring_write(c.r, ffi.NULL, 1, sig) == -errno.EINVAL
    segs[0].ptr, segs[0].len = ffi.NULL, 16
    assert lib.hvu_ring_write(c.r, segs, 1, sig) == -errno.EINVAL
    data = ffi.new("uint8_t[]", 8)
    segs[0].ptr, segs[0].len = data, 8
    assert lib.hvu_ring_write(c.r, segs, 1, sig) == -errno.EINVAL  # shorter than a descriptor
    assert lib.hvu_ring_send_hdr(c.r, 6, 0, 0, data, 4, ffi.NULL, 0, sig) == -errno.EINVAL  # hdr not 8n
    assert lib.hvu_ring_send_hdr(c.r, 6, 0, 0, ffi.NULL, 8, ffi.NULL, 0, sig) == -errno.EINVAL
    assert lib.hvu_ring_send(c.r, 6, 0, 0, ffi.NULL, 1, sig) == -errno.EMSGSIZE
    big = ffi.new("uint8_t[]", 0x10000 * 8)
    segs[0].ptr, segs[0].len = big, 0x10000 * 8
    large = CRing(lib.HVU_RING_TX, 1 << 20)
    assert lib.hvu_ring_send(large.r, 6, 0, 0, segs, 1, sig) == -errno.EMSGSIZE
    huge = ffi.new("struct hvu_seg[]", 2)  # lengths whose sum wraps 64 bits must not slip through
    huge[0].ptr, huge[0].len = data, 16
    huge[1].ptr, huge[1].len = data, 2**64 - 8
    assert lib.hvu_ring_write(c.r, huge, 2, sig) == -errno.EMSGSIZE
    assert lib.hvu_ring_send(c.r, 6, 0, 0, ffi.addressof(huge, 1), 1, sig) == -errno.EMSGSIZE
    assert lib.hvu_ring_set_pending_send_sz(c.r, 12) == -errno.EINVAL
    assert lib.hvu_ring_peek(c.r, ffi.NULL) == -errno.EPERM
    segs[0].ptr, segs[0].len = data, 8
    assert lib.hvu_ring_send(c.r, 6, 0, 0, segs, 1, ffi.NULL) == 0  # NULL signal pointer is allowed


def test_reader_low_level_calls_and_invalid_arguments() -> None:
    c = CRing(lib.HVU_RING_RX)
    mem = ffi.buffer(c.base, 4096 + D)
    host = HostRingWriter(mem)
    host.write(6, b"one", trans_id=1)
    host.write(11, b"two", trans_id=2)
    desc = ffi.new("struct hvu_pkt_desc *")
    buf = ffi.new("uint8_t[]", 64)
    assert lib.hvu_ring_consume(c.r) == -errno.EINVAL  # nothing peeked
    assert lib.hvu_ring_copyout(c.r, ffi.NULL, 64, desc) == -errno.EINVAL
    assert lib.hvu_ring_first(c.r, desc) == 0 and desc.trans_id == 1
    assert lib.hvu_ring_copyout(c.r, buf, 64, desc) == 24
    assert lib.hvu_ring_next(c.r, desc) == 0 and desc.type == 11
    assert lib.hvu_ring_next(c.r, desc) == -errno.EAGAIN
    assert lib.hvu_ring_close(c.r) == 0
    assert struct.unpack_from("<I", mem, 4)[0] == 64  # read_index published once at close
    descs, offs, sig = ffi.new("struct hvu_pkt_desc[]", 4), ffi.new("uint32_t[]", 4), ffi.new("int *")
    assert lib.hvu_ring_read_batch(c.r, ffi.NULL, 64, 64, descs, offs, 4, sig) == -errno.EINVAL
    assert lib.hvu_ring_read_batch(c.r, buf, 64, 128, descs, offs, 4, sig) == -errno.EINVAL
    assert lib.hvu_ring_send(c.r, 6, 0, 0, ffi.NULL, 0, sig) == -errno.EPERM


def test_read_batch_stops_when_caller_buffer_is_full() -> None:
    c = CRing(lib.HVU_RING_RX)
    host = HostRingWriter(ffi.buffer(c.base, 4096 + D))
    for i in range(3):
        host.write(6, bytes(16), trans_id=i)  # 32-byte packets
    descs, offs, sig = ffi.new("struct hvu_pkt_desc[]", 4), ffi.new("uint32_t[]", 4), ffi.new("int *")
    buf = ffi.new("uint8_t[]", 80)
    assert lib.hvu_ring_read_batch(c.r, buf, 80, 32, descs, offs, 4, sig) == 2
    assert list(offs[0:2]) == [0, 32]
    assert lib.hvu_ring_read_batch(c.r, buf, 80, 32, descs, offs, 4, sig) == 1 and descs[0].trans_id == 2


def test_copy_keeps_validated_descriptor_when_host_rewrites() -> None:
    """TOCTOU (VMBUS.md §4.4, 4.7): the host rewrites the descriptor after the peek validated it; the
    copy carries the validated len8/offset8/type/flags and only len8*8 bytes are copied."""
    c = CRing(lib.HVU_RING_RX)
    mem = ffi.buffer(c.base, 4096 + D)
    HostRingWriter(mem).write(6, bytes(8), trans_id=5)
    desc = ffi.new("struct hvu_pkt_desc *")
    assert lib.hvu_ring_peek(c.r, desc) == 0
    struct.pack_into("<HHHH", mem, 4096, 0x1F, 0xFFFF, 0xFFFF, 0xFFFF)  # hostile rewrite
    buf = ffi.new("uint8_t[]", 40)
    assert lib.hvu_ring_copyout(c.r, buf, 32, desc) == 24
    assert struct.unpack_from("<HHHHQ", ffi.buffer(buf, 16)) == (6, 2, 3, 0, 5)
    assert bytes(ffi.buffer(buf, 40)[24:]) == bytes(16)  # nothing beyond the validated length
    assert lib.hvu_ring_consume(c.r) == 0 and lib.hvu_ring_close(c.r) == 0


def test_copy_fixes_len8_offset8_in_the_copy() -> None:
    c = CRing(lib.HVU_RING_RX)
    mem = ffi.buffer(c.base, 4096 + D)
    HostRingWriter(mem).write(6, bytes(8), trans_id=5, header=bytes(8))
    buf = ffi.new("uint8_t[]", 64)
    desc = ffi.new("struct hvu_pkt_desc *")
    assert lib.hvu_ring_copyout(c.r, buf, 64, desc) == 32
    assert struct.unpack_from("<HHHHQ", ffi.buffer(buf, 16)) == (6, 3, 4, 0, 5)


def xfer_packet(ranges: list[tuple[int, int]], *, pageset: int = 0xCAFE, offset8: int | None = None,
                count: int | None = None) -> bytes:
    hdr = struct.pack("<HBBI", pageset, 0, 0, len(ranges) if count is None else count)
    body = hdr + b"".join(struct.pack("<II", n, o) for n, o in ranges)
    o8 = (16 + len(body)) // 8 if offset8 is None else offset8
    return struct.pack("<HHHHQ", 7, o8, o8 + 1, 0, 9) + body + bytes(8)


@pytest.mark.parametrize("pkt,field,value", [
    (xfer_packet([(100, 0)], offset8=2), "offset8", 2),
    (xfer_packet([(100, 0)], pageset=0xBEEF), "xfer_pageset_id", 0xBEEF),
    (xfer_packet([], count=0), "range_cnt", 0),
    (xfer_packet([(100, 0)], count=2), "range_cnt", 2),
    (xfer_packet([(100, 4097)]), "range", 4097),
    (xfer_packet([(4000, 200)]), "range", 4000),
    (xfer_packet([(0, 0)]), "range", 0),
    (xfer_packet([(2000, 0)]), "range", 2000),  # over the 1024-byte section
    (xfer_packet([(0xFFFFFFFF, 8)]), "range", 0xFFFFFFFF),  # would overflow offset + count
])
def test_xfer_header_check_rejects(pkt: bytes, field: str, value: int) -> None:
    with pytest.raises(RingCorruptError) as info:
        check_xfer_header(pkt, pageset_id=0xCAFE, recv_buf_size=4096, section_size=1024)
    assert (info.value.field, info.value.value) == (field, value)


def test_xfer_header_check_accepts() -> None:
    check_xfer_header(xfer_packet([(1024, 0), (10, 4086)]), pageset_id=0xCAFE, recv_buf_size=4096,
                             section_size=1024)


def load_build_module() -> object:
    spec = importlib.util.spec_from_file_location("hvuio_build_under_test", ROOT / "_native" / "build.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_build_py_variants() -> None:
    build = load_build_module()
    assert "_native/ring.c" in build.SOURCES  # type: ignore[attr-defined]
    plain = build.make_builder(sanitize=False)  # type: ignore[attr-defined]
    asan = build.make_builder(sanitize=True)  # type: ignore[attr-defined]
    assert plain._assigned_source[0] == "hvuio._native"
    assert asan._assigned_source[0] == "hvuio._native_asan"
    flags = asan._assigned_source[3]["extra_compile_args"]
    assert "-fsanitize=address,undefined" in flags and "-O2" not in flags


def test_monitor_bell_sets_only_its_trigger_bit() -> None:
    """Spec 3.12: bit id % 32 of trigger_group[id / 32].pending (offset 8 + 8 * group), OR'ed."""
    import struct as _struct

    from hvuio.native.ring import MonitorBell

    page = bytearray(4096)
    _struct.pack_into("<I", page, 8 + 8 * 1, 0x1)  # another channel's pending bit in group 1
    bell = MonitorBell(page, 37)                   # group 1, bit 5
    bell.ring()
    bell.ring()
    bell.close()
    assert _struct.unpack_from("<I", page, 16)[0] == 0x1 | (1 << 5)
    assert page[:16] == bytes(16) and page[20:] == bytes(len(page) - 20)


@pytest.mark.parametrize("monitor_id", [-1, 128, 1000])
def test_monitor_bell_refuses_ids_without_a_trigger_bit(monitor_id: int) -> None:
    from hvuio.errors import LocalProtocolError
    from hvuio.native.ring import MonitorBell

    with pytest.raises(LocalProtocolError, match="monitor id"):
        MonitorBell(bytearray(4096), monitor_id)
