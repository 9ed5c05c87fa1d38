"""The C trace writer (_native/trace.c) behind a typed wrapper.

What lives here: `TraceSink`, the `struct hvu_trace` over a pcapng file the caller opened with
O_APPEND and started (section header, interface descriptions): `write()` appends one Enhanced
Packet Block (a control record, or a frame in tests) within the byte cap; `counters()` reads
what was written and what the cap kept out. The data path takes a sink with
`DataPath.set_trace()` and records its frames there from its own thread.

What must not live here: the file's header blocks, the control record's layout and its decoding
(hvuio/trace/), opening or closing the file (the caller owns the fd).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from hvuio.errors import LocalProtocolError
from hvuio.native import Buffer, ffi, lib

if TYPE_CHECKING:
    from hvuio._native import TracePtr

IF_FRAMES: Final = int(lib.HVU_TRACE_IF_FRAMES)
IF_CONTROL: Final = int(lib.HVU_TRACE_IF_CONTROL)
#: epb_flags direction values: inbound (host -> guest), outbound (guest -> host)
INBOUND: Final = int(lib.HVU_TRACE_IN)
OUTBOUND: Final = int(lib.HVU_TRACE_OUT)
#: bytes a block adds to its packet data (header, epb_flags option, end of options, trailer)
BLOCK_OVERHEAD: Final = int(lib.HVU_TRACE_EPB_OVERHEAD)
MAX_DATA: Final = int(lib.HVU_TRACE_MAX_DATA)

_COUNTERS: Final = {
    "trace_frames": lib.HVU_TRACE_FRAMES,
    "trace_frames_capped": lib.HVU_TRACE_FRAMES_CAPPED,
    "trace_control": lib.HVU_TRACE_CONTROL,
    "trace_control_capped": lib.HVU_TRACE_CONTROL_CAPPED,
    "trace_write_errors": lib.HVU_TRACE_WRITE_ERRORS,
    "trace_bytes": lib.HVU_TRACE_BYTES,
}


class TraceSink:
    """Blocks appended to `fd` (O_APPEND, `used` bytes in it already) until it holds `max_bytes`."""

    def __init__(self, fd: int, max_bytes: int, used: int) -> None:
        self._mem = ffi.new("uint64_t[]", (lib.hvu_trace_sizeof() + 7) // 8)
        self.cptr: TracePtr = ffi.cast("struct hvu_trace *", self._mem)
        if lib.hvu_trace_init(self.cptr, fd, max_bytes, used) < 0:
            raise LocalProtocolError(f"trace writer refused fd {fd} with cap {max_bytes} ({used} bytes used)")

    def write(self, iface: int, direction: int, data: Buffer) -> bool:
        """One block; False when the cap kept it out or the write failed (both counted)."""
        buf = ffi.from_buffer(data)
        return lib.hvu_trace_block(self.cptr, iface, direction, buf, len(buf)) > 0

    def counters(self) -> dict[str, int]:
        return {name: int(lib.hvu_trace_counter(self.cptr, idx)) for name, idx in _COUNTERS.items()}
