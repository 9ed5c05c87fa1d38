"""The trace file format: pcapng blocks, the control record, and a reader that trusts nothing.

What lives here: the bytes of the blocks a trace starts with (section header, the two interface
descriptions: 0 = the frames, 1 = the control records, both LINKTYPE_ETHERNET because libpcap,
and so tcpdump, refuses a file whose interfaces differ in link type), an Enhanced Packet Block
builder (the C writer, _native/trace.c, writes the same layout), the control record (an Ethernet
header with the IEEE local experimental EtherType 0x88B5 and fixed addresses naming guest and
host, a 24-byte header — version, direction, VMBus packet type, channel relid, transaction id,
NVSP and RNDIS lengths — then the NVSP message, then the RNDIS bytes it carried) and `read_trace()`, which
turns the bytes of a file into `Record`s or raises TraceFileError with one sentence saying what
is wrong and where. The layout is documented in docs/TRACE.md for other dissectors.

What must not live here: I/O (the caller reads the file), the decoding of NVSP and RNDIS
(decode.py), the capture itself (writer.py, the C writer).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from hvuio.errors import TraceFileError

SHB_TYPE: Final = 0x0A0D0D0A
IDB_TYPE: Final = 1
SPB_TYPE: Final = 3
EPB_TYPE: Final = 6
BYTE_ORDER_MAGIC: Final = 0x1A2B3C4D
LINKTYPE_ETHERNET: Final = 1
#: EtherType of a control record: IEEE 802 "Local Experimental Ethertype 1"
CONTROL_ETHERTYPE: Final = 0x88B5
#: the addresses a control record is sent between (locally administered, "vmb" + 1 or 2)
GUEST_ADDRESS: Final = bytes.fromhex("02766d620001")
HOST_ADDRESS: Final = bytes.fromhex("02766d620002")
#: interfaces of an hvuio trace, in the order of their description blocks
IF_FRAMES: Final = 0
IF_CONTROL: Final = 1
#: epb_flags bits 0-1 (pcapng "inbound/outbound"): inbound = host -> guest, outbound = guest -> host
INBOUND: Final = 1
OUTBOUND: Final = 2
OPT_ENDOFOPT: Final = 0
OPT_COMMENT: Final = 1
OPT_EPB_FLAGS: Final = 2
OPT_SHB_USERAPPL: Final = 4
OPT_IF_NAME: Final = 2
#: the control record's header: version, direction, VMBus packet type, relid, trans_id, NVSP and
#: RNDIS byte counts (little-endian, 24 bytes)
CONTROL_HEADER: Final = struct.Struct("<BBHIQII")
CONTROL_VERSION: Final = 1
#: a block longer than this is not one we write (the C writer's limit plus its headers)
MAX_BLOCK: Final = 1 << 20
APPLICATION: Final = "hvuio"


def _pad(data: bytes) -> bytes:
    return data + bytes(-len(data) % 4)


def _option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + _pad(value)


def _block(btype: int, body: bytes) -> bytes:
    total = 12 + len(body)
    return struct.pack("<II", btype, total) + body + struct.pack("<I", total)


def section_header() -> bytes:
    """Section Header Block: little-endian, version 1.0, length unknown, shb_userappl hvuio."""
    body = struct.pack("<IHHq", BYTE_ORDER_MAGIC, 1, 0, -1)
    body += _option(OPT_SHB_USERAPPL, APPLICATION.encode()) + _option(OPT_ENDOFOPT, b"")
    return _block(SHB_TYPE, body)


def interface(linktype: int, name: str) -> bytes:
    """Interface Description Block: snaplen 0 (no limit), if_name, microsecond time stamps (the default)."""
    body = struct.pack("<HHI", linktype, 0, 0) + _option(OPT_IF_NAME, name.encode()) + _option(OPT_ENDOFOPT, b"")
    return _block(IDB_TYPE, body)


def file_header() -> bytes:
    """What every hvuio trace starts with: the section header and interfaces 0 (frames) and 1 (control)."""
    return section_header() + interface(LINKTYPE_ETHERNET, "frames") + interface(LINKTYPE_ETHERNET, "vmbus-control")


def enhanced_packet(iface: int, ts_us: int, direction: int, data: bytes) -> bytes:
    """The block the C writer appends: time stamp in microseconds, epb_flags with the direction."""
    body = struct.pack("<IIIII", iface, ts_us >> 32, ts_us & 0xFFFFFFFF, len(data), len(data)) + _pad(data)
    body += _option(OPT_EPB_FLAGS, struct.pack("<I", direction & 3)) + _option(OPT_ENDOFOPT, b"")
    return _block(EPB_TYPE, body)


def control_record(direction: int, relid: int, ptype: int, trans_id: int, nvsp: bytes, rndis: bytes = b"") -> bytes:
    """Packet data of a control block: the Ethernet header, the record header, the NVSP message,
    the RNDIS bytes it carried."""
    src, dst = (HOST_ADDRESS, GUEST_ADDRESS) if direction == INBOUND else (GUEST_ADDRESS, HOST_ADDRESS)
    return dst + src + struct.pack(">H", CONTROL_ETHERTYPE) + CONTROL_HEADER.pack(CONTROL_VERSION, direction, ptype, relid, trans_id, len(nvsp), len(rndis)) + nvsp + rndis


@dataclass(frozen=True)
class Record:
    """One packet block of a trace: its interface's link type, time (µs), direction (None: not
    recorded), the captured bytes and the length on the wire."""

    linktype: int
    iface: int
    ts_us: int
    direction: int | None
    data: bytes
    orig_len: int


@dataclass(frozen=True)
class Control:
    """A control record's fields (parse_control)."""

    direction: int
    relid: int
    ptype: int
    trans_id: int
    nvsp: bytes
    rndis: bytes


def is_control(rec: Record) -> bool:
    """A control record: interface 1, Ethernet, EtherType 0x88B5."""
    return (rec.iface == IF_CONTROL and rec.linktype == LINKTYPE_ETHERNET and len(rec.data) >= 14
            and struct.unpack_from(">H", rec.data, 12)[0] == CONTROL_ETHERTYPE)


def parse_control(frame: bytes) -> Control:
    """The fields of a control record (its Ethernet header included); ValueError saying what is
    wrong with it."""
    data = frame[14:]
    if len(data) < CONTROL_HEADER.size:
        raise ValueError(f"control record of {len(data)} bytes is shorter than its {CONTROL_HEADER.size}-byte header")
    version, direction, ptype, relid, trans_id, nlen, rlen = CONTROL_HEADER.unpack_from(data)
    if version != CONTROL_VERSION:
        raise ValueError(f"control record version {version} is not {CONTROL_VERSION}")
    if CONTROL_HEADER.size + nlen + rlen != len(data):
        raise ValueError(f"control record lengths {nlen} + {rlen} do not match its {len(data) - CONTROL_HEADER.size} "
                         "bytes after the header")
    start = CONTROL_HEADER.size
    return Control(direction, relid, ptype, trans_id, data[start:start + nlen], data[start + nlen:])


def read_trace(data: bytes, name: str = "the file") -> Iterator[Record]:
    """The packet blocks of a pcapng file (either byte order); TraceFileError on anything that is
    not pcapng, a block that runs past the end, or a packet on an interface never described."""
    if len(data) < 28:
        raise TraceFileError(f"{name} is {'empty' if not data else f'only {len(data)} bytes'}, too short for a "
                             "pcapng section header")
    if struct.unpack_from("<I", data)[0] != SHB_TYPE:
        raise TraceFileError(f"{name} is not a pcapng file (it does not start with a section header block)")
    pos = 0
    order = "<"
    links: list[tuple[int, int]] = []  # (linktype, time units per second) per interface
    while pos < len(data):
        if len(data) - pos < 12:
            raise TraceFileError(f"{name} is truncated: {len(data) - pos} bytes at offset {pos} are too few for a block")
        btype = struct.unpack_from(order + "I", data, pos)[0]
        if btype == SHB_TYPE:
            magic = data[pos + 8:pos + 12]
            if magic == struct.pack("<I", BYTE_ORDER_MAGIC):
                order = "<"
            elif magic == struct.pack(">I", BYTE_ORDER_MAGIC):
                order = ">"
            else:
                raise TraceFileError(f"{name} has a section header at offset {pos} with an unknown byte-order magic")
            links = []
        total = struct.unpack_from(order + "I", data, pos + 4)[0]
        if total < 12 or total % 4 or total > MAX_BLOCK:
            raise TraceFileError(f"{name} has a block at offset {pos} with length {total} (not a multiple of 4 "
                                 f"within [12, {MAX_BLOCK}])")
        if pos + total > len(data):
            raise TraceFileError(f"{name} is truncated: the block at offset {pos} needs {total} bytes, "
                                 f"{len(data) - pos} are left")
        if struct.unpack_from(order + "I", data, pos + total - 4)[0] != total:
            raise TraceFileError(f"{name} has a block at offset {pos} whose trailing length does not match {total}")
        body = data[pos + 8:pos + total - 4]
        if btype == IDB_TYPE:
            if len(body) < 8:
                raise TraceFileError(f"{name} has an interface description at offset {pos} of {len(body)} bytes")
            links.append((struct.unpack_from(order + "H", body)[0], _ts_units(body[8:], order)))
        elif btype == EPB_TYPE:
            yield _packet(body, order, links, pos, name)
        pos += total


def _ts_units(options: bytes, order: str) -> int:
    """Time-stamp units per second of an interface (if_tsresol, code 9; default microseconds)."""
    for code, value in _options(options, order):
        if code == 9 and value:
            res = value[0]
            return 1 << (res & 0x7F) if res & 0x80 else int(10 ** min(res, 18))
    return 1_000_000


def _options(raw: bytes, order: str) -> Iterator[tuple[int, bytes]]:
    pos = 0
    while pos + 4 <= len(raw):
        code, length = struct.unpack_from(order + "HH", raw, pos)
        if code == OPT_ENDOFOPT or pos + 4 + length > len(raw):
            return
        yield code, raw[pos + 4:pos + 4 + length]
        pos += 4 + length + (-length % 4)


def _packet(body: bytes, order: str, links: list[tuple[int, int]], pos: int, name: str) -> Record:
    if len(body) < 20:
        raise TraceFileError(f"{name} has a packet block at offset {pos} of {len(body)} bytes, fewer than its 20-byte head")
    iface, hi, lo, cap, orig = struct.unpack_from(order + "IIIII", body)
    if iface >= len(links):
        raise TraceFileError(f"{name} has a packet at offset {pos} on interface {iface}, which no block described")
    if 20 + cap > len(body):
        raise TraceFileError(f"{name} has a packet at offset {pos} whose {cap} captured bytes run past its block")
    direction = None
    for code, value in _options(body[20 + cap + (-cap % 4):], order):
        if code == OPT_EPB_FLAGS and len(value) == 4:
            direction = int(struct.unpack(order + "I", value)[0]) & 3 or None
    linktype, units = links[iface]
    ts_us = ((hi << 32) | lo) * 1_000_000 // units
    return Record(linktype, iface, ts_us, direction, bytes(body[20:20 + cap]), orig)
