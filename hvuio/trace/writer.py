"""The trace a running NIC writes (`hvuio up --trace FILE`): one pcapng file, capped in size.

What lives here: `Trace` — creates the file (a symlink in its place is refused, an existing file
is truncated), writes the section header and the two interface descriptions (pcapng.py), and
hands the rest to the C writer (hvuio.native.trace): `control()` appends one control record
(VMBus packet type, channel, transaction id, the NVSP message and the RNDIS bytes it carried),
and `sink` is what the data path records its frames in, from its own thread. The cap: once the
file holds `max_bytes`, nothing more is written (no rotation); what was kept out is counted
(`trace_frames_capped`, `trace_control_capped` in `counters()`), so a capped trace says so.

What must not live here: the block layout and the record format (pcapng.py), decoding
(decode.py), where the hooks sit (hvuio/channel.py for control packets, the C data path for
frames), printing.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Final

from hvuio.errors import TraceFileError
from hvuio.native.trace import IF_CONTROL, TraceSink
from hvuio.trace.pcapng import control_record, file_header

#: the default cap of `--trace-max-mb`
DEFAULT_MAX_MB: Final = 64
_FLAGS: Final = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC


class Trace:
    """An open trace file (see the module docstring); close() it when the NIC is down."""

    def __init__(self, path: Path | str, max_bytes: int = DEFAULT_MAX_MB << 20) -> None:
        self.path = Path(path)
        header = file_header()
        if max_bytes < len(header):
            raise TraceFileError(f"a trace cap of {max_bytes} bytes cannot hold the file's {len(header)}-byte header",
                                 "Give --trace-max-mb 1 or more.")
        try:
            self._fd = os.open(self.path, _FLAGS, 0o640)
        except OSError as err:
            why = "it is a symbolic link" if err.errno == errno.ELOOP else (err.strerror or str(err)).lower()
            raise TraceFileError(f"cannot write the trace file {self.path}: {why}",
                                 "Give --trace a path in a directory you can write, not a symbolic link.") from None
        try:
            os.write(self._fd, header)
            self.sink: TraceSink = TraceSink(self._fd, max_bytes, len(header))
        except BaseException:
            os.close(self._fd)
            raise
        self.max_bytes = max_bytes
        self._final: dict[str, int] | None = None

    def control(self, direction: int, relid: int, ptype: int, trans_id: int, nvsp: bytes, rndis: bytes = b"") -> None:
        """Record one VMBus packet of the control path (inbound or outbound)."""
        if self._final is None:
            self.sink.write(IF_CONTROL, direction, control_record(direction, relid, ptype, trans_id, nvsp, rndis))

    def counters(self) -> dict[str, int]:
        """Blocks written, blocks the cap kept out, failed writes, the file's size."""
        return dict(self._final) if self._final is not None else self.sink.counters()

    @property
    def closed(self) -> bool:
        return self._final is not None

    def close(self) -> None:
        """Close the file (the data path must have let go of `sink` first)."""
        if self._final is None:
            self._final = self.sink.counters()
            os.close(self._fd)

    def __enter__(self) -> Trace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
