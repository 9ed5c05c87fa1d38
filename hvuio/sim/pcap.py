"""Classic pcap files for the emulator's network: a writer, a strict reader, and a network made of them.

What lives here: `PcapSink` (Ethernet frames to a classic pcap file, microsecond timestamps,
little-endian), `PcapSource` (a strict reader of classic pcap: either byte order, micro- or
nanosecond timestamps; malformed input is a UsageError naming the field, the value and the rule)
with its `PcapRecord`s, and `PcapNetwork`, a `FrameNetwork` (net.py) for machines without network
namespaces: frames the guest sends are written to a pcap file, frames of a pcap file are injected.
A GsoFrame the guest sent is segmented in software before it is written (net.write_segments), so a
capture shows what the wire carries.

What must not live here: taps, namespaces, sockets (net.py: `HostNetwork`, `VethVf`), NVSP/RNDIS
(hvuio.sim.host), the pcapng trace of the guest (hvuio.trace).
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import BinaryIO

from hvuio.errors import UsageError
from hvuio.sim.host import offload as ho
from hvuio.sim.host.offload import ETH_HLEN
from hvuio.sim.net import DEFAULT_BATCH, NetCounters, write_segments

PCAP_MAGIC_USEC = 0xA1B2C3D4
PCAP_MAGIC_NSEC = 0xA1B23C4D
PCAP_VERSION = (2, 4)
LINKTYPE_ETHERNET = 1
PCAP_SNAPLEN = 65535
PCAP_MAX_RECORD = 262144  # the largest snaplen tcpdump/libpcap accept; anything bigger is corrupt
_GLOBAL_HDR = struct.Struct("IHHiIII")  # byte order prefixed when used
_RECORD_HDR = struct.Struct("IIII")


@dataclass(frozen=True, slots=True)
class PcapRecord:
    timestamp_ns: int
    data: bytes
    orig_len: int


class PcapSink:
    """Writes Ethernet frames to a classic pcap file (microsecond timestamps, little-endian)."""

    def __init__(self, path: str | os.PathLike[str], snaplen: int = PCAP_SNAPLEN) -> None:
        if not 1 <= snaplen <= PCAP_MAX_RECORD:
            raise UsageError(f"pcap snaplen {snaplen} outside 1..{PCAP_MAX_RECORD}")
        self._snaplen = snaplen
        try:
            self._file: BinaryIO = open(path, "wb")  # noqa: SIM115 - closed in close()
        except OSError as exc:
            raise UsageError(f"cannot write pcap file {os.fspath(path)!r}: {exc.strerror}") from exc
        self._file.write(struct.pack("<IHHiIII", PCAP_MAGIC_USEC, *PCAP_VERSION, 0, 0, snaplen, LINKTYPE_ETHERNET))

    def write(self, frame: bytes, timestamp_ns: int | None = None) -> None:
        """Append one record; frames longer than snaplen are truncated (orig_len keeps the size)."""
        ts = time.time_ns() if timestamp_ns is None else timestamp_ns
        if ts < 0:
            raise UsageError(f"pcap timestamp {ts} is negative")
        data = frame[: self._snaplen]
        sec, usec = divmod(ts // 1000, 1_000_000)
        self._file.write(struct.pack("<IIII", sec & 0xFFFFFFFF, usec, len(data), len(frame)))
        self._file.write(data)

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> PcapSink:
        return self

    def __exit__(self, t: type[BaseException] | None, v: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


class PcapSource:
    """Reads a classic pcap file of Ethernet frames; malformed input raises UsageError naming
    the field, the value and the rule. Accepts both byte orders and both timestamp resolutions."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = str(path)
        try:
            with open(path, "rb") as f:
                self._data = f.read()
        except OSError as exc:
            raise UsageError(f"cannot read pcap file {self._path!r}: {exc.strerror}") from exc
        if len(self._data) < _GLOBAL_HDR.size:
            self._bad("global header", len(self._data), f"file shorter than the {_GLOBAL_HDR.size}-byte header")
        (magic,) = struct.unpack_from("<I", self._data)
        if magic in (PCAP_MAGIC_USEC, PCAP_MAGIC_NSEC):
            self._order = "<"
        else:
            (swapped,) = struct.unpack_from(">I", self._data)
            if swapped not in (PCAP_MAGIC_USEC, PCAP_MAGIC_NSEC):
                self._bad("magic (read little-endian)", magic, "must be 0xa1b2c3d4 or 0xa1b23c4d in either byte order")
            magic = swapped
            self._order = ">"
        self._nsec = magic == PCAP_MAGIC_NSEC
        _, major, minor, _, _, snaplen, linktype = struct.unpack_from(self._order + "IHHiIII", self._data)
        if major != 2:
            self._bad("version_major", major, "must be 2")
        if linktype != LINKTYPE_ETHERNET:
            self._bad("linktype", linktype, "must be 1 (Ethernet)")
        self.snaplen = snaplen
        self.version = (major, minor)

    def _bad(self, field: str, value: int, rule: str) -> None:
        raise UsageError(f"pcap {self._path}: {field} = {value:#x} ({rule})")

    def __iter__(self) -> Iterator[PcapRecord]:
        fmt = self._order + "IIII"
        off = _GLOBAL_HDR.size
        limit = min(max(self.snaplen, 1), PCAP_MAX_RECORD)
        while off < len(self._data):
            if off + _RECORD_HDR.size > len(self._data):
                self._bad("record header", off, "truncated: file ends inside a record header")
            sec, frac, incl, orig = struct.unpack_from(fmt, self._data, off)
            off += _RECORD_HDR.size
            if incl > limit:
                self._bad("incl_len", incl, f"exceeds snaplen/limit {limit}")
            if orig < incl:
                self._bad("orig_len", orig, f"smaller than incl_len {incl}")
            if not self._nsec and frac >= 1_000_000:
                self._bad("ts_usec", frac, "must be below 1000000")
            if self._nsec and frac >= 1_000_000_000:
                self._bad("ts_nsec", frac, "must be below 1000000000")
            if off + incl > len(self._data):
                self._bad("incl_len", incl, f"record data runs past end of file ({len(self._data) - off} bytes left)")
            ts = sec * 1_000_000_000 + (frac if self._nsec else frac * 1000)
            yield PcapRecord(ts, self._data[off : off + incl], orig)
            off += incl


class PcapNetwork:
    """`FrameNetwork` without namespaces: guest frames go to `sink`, frames from `source` are
    injected (all of them, in file order, as soon as the host reads). `fileno()` is an eventfd
    that is readable while injected frames remain."""

    def __init__(self, sink: str | os.PathLike[str] | None, source: str | os.PathLike[str] | None = None) -> None:
        pending = [r.data for r in PcapSource(source)] if source is not None else []
        self._sink = PcapSink(sink) if sink is not None else None
        self._pending = pending
        self._pos = 0
        self._efd = os.eventfd(1 if pending else 0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.counters = NetCounters()

    def fileno(self) -> int:
        return self._efd

    def read_frames(self, max_frames: int = DEFAULT_BATCH) -> list[bytes]:
        if max_frames < 1:
            raise UsageError(f"max_frames must be at least 1, got {max_frames}")
        frames: list[bytes] = []
        while self._pos < len(self._pending) and len(frames) < max_frames:
            frame = self._pending[self._pos]
            self._pos += 1
            if len(frame) < ETH_HLEN:
                self.counters.from_net_drops += 1
                continue
            self.counters.from_net_frames += 1
            self.counters.from_net_bytes += len(frame)
            frames.append(frame)
        if self._pos >= len(self._pending):
            try:
                os.eventfd_read(self._efd)  # drained: stop being readable
            except BlockingIOError:
                pass
        return frames

    def write_frame(self, frame: bytes) -> bool:
        """A GsoFrame is segmented in software first (a capture shows what the wire carries)."""
        if isinstance(frame, ho.GsoFrame):
            return write_segments(frame, self.write_frame, self.counters)
        if self._sink is None or len(frame) < ETH_HLEN:
            self.counters.to_net_drops += 1
            return False
        self._sink.write(frame)
        self.counters.to_net_frames += 1
        self.counters.to_net_bytes += len(frame)
        return True

    def close(self) -> None:
        if self._efd >= 0:
            os.close(self._efd)
            self._efd = -1
        if self._sink is not None:
            self._sink.close()

    def __enter__(self) -> PcapNetwork:
        return self

    def __exit__(self, t: type[BaseException] | None, v: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
