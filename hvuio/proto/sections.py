"""Send-buffer sections reserved for RNDIS control messages (the data path owns the rest).

What lives here: `SectionPool`, a tiny allocator over a contiguous range of send-buffer section
indices, and `split_send_sections`, the one rule that decides which indices the C data path gets
and which stay with the control path.

Why a split: RNDIS control messages travel in send-buffer sections (hvuio/proto/rndis.py
explains why), and so do data frames (`_native/tx.c` tracks its sections in a bitmap that starts
at index 0). Both use the same NVSP type-107 message and the same buffer, so the two allocators
must never hand out the same index: the data path gets sections [0, n - reserve) and the control
path [n - reserve, n). Section indices in the NVSP message are absolute, so both sides address
the buffer the same way.

What must not live here: ring access, protocol parsing, I/O.
"""

from __future__ import annotations

from collections import deque
from typing import Final

from hvuio.errors import HostProtocolError, LocalProtocolError

#: Sections kept for control messages. RNDIS allows at most limits.MAX_OUTSTANDING_RNDIS (8)
#: requests in flight; keep-alive answers and the halt may add a few; 16 leaves room for all of
#: them without queueing (and is 0.6 % of the 2730 sections a 16 MiB buffer has at 6144 bytes).
CONTROL_SECTIONS: Final = 16


def split_send_sections(count: int, reserve: int = CONTROL_SECTIONS) -> tuple[int, int]:
    """(data sections, first control index) for a send buffer of `count` sections.

    The control path keeps min(reserve, count // 2) sections at the end; the data path gets the
    sections before them. A buffer of one section cannot be shared: HostProtocolError.
    """
    if count < 2:
        raise HostProtocolError(
            f"send buffer: {count} section(s) cannot be shared by the control and data paths "
            "(need at least 2)")
    ctl = max(1, min(reserve, count // 2))
    return count - ctl, count - ctl


class SectionPool:
    """Indices [first, first + count) of `size` bytes each; alloc() -> index or None."""

    def __init__(self, first: int, count: int, size: int) -> None:
        if first < 0 or count < 1 or size < 1:
            raise LocalProtocolError(f"section pool first {first} count {count} size {size} is empty or negative")
        self.first = first
        self.count = count
        self.size = size
        self._free: deque[int] = deque(range(first, first + count))
        self._used: set[int] = set()

    def alloc(self) -> int | None:
        """A free index, or None when every section is in flight."""
        if not self._free:
            return None
        index = self._free.popleft()
        self._used.add(index)
        return index

    def free(self, index: int) -> None:
        """Give `index` back; freeing an index that is not in use is a bug (LocalProtocolError)."""
        if index not in self._used:
            raise LocalProtocolError(f"send section {index} freed but not in use")
        self._used.remove(index)
        self._free.append(index)

    def offset(self, index: int) -> int:
        """Byte offset of section `index` in the send buffer."""
        if not self.first <= index < self.first + self.count:
            raise LocalProtocolError(f"send section {index} outside [{self.first}, {self.first + self.count})")
        return index * self.size

    @property
    def in_use(self) -> int:
        return len(self._used)

    @property
    def available(self) -> int:
        return len(self._free)
