"""Send-buffer sections reserved for RNDIS control messages (the data path owns the rest), sans-IO.

What lives here: `SectionPool`, a tiny allocator over a contiguous range of send-buffer section
indices; `split_send_sections`, the one rule that decides which indices the C data path gets
and which stay with the control path; and `ControlSections`, the accounting of the control
range NetvscGuest (proto/netvsc.py) keeps: each RNDIS control message gets a free section (a
`Send` that says where), waits in a bounded queue when every section is in flight, and gives its
section back when the host completes the send.

Why a split: RNDIS control messages travel in send-buffer sections (hvuio/proto/rndis.py
explains why), and so do data frames (`_native/tx.c` tracks its sections in a bitmap that starts
at index 0). Both use the same NVSP type-107 message and the same buffer, so the two allocators
must never hand out the same index: the data path gets sections [0, n - reserve) and the control
path [n - reserve, n). Section indices in the NVSP message are absolute, so both sides address
the buffer the same way.

What must not live here: ring access, copying bytes into the buffer (hvuio/channel.py), protocol
parsing, I/O.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Final

from hvuio.errors import HostProtocolError, LocalProtocolError
from hvuio.proto import limits
from hvuio.proto.events import Outbound, Send

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


class ControlSections:
    """The control range of the send buffer: RNDIS control messages -> `Send`s naming a section.

    `place()` gives each message with RNDIS bytes a free section (messages without them pass
    through); when none is free the message waits, at most `limit` of them (a host that never
    completes our sends is a HostProtocolError, not unbounded growth). `release(trans_id)` frees
    the section of a completed send and places what waited. `name` prefixes error messages.
    """

    def __init__(self, pool: SectionPool, *, limit: int = limits.MAX_QUEUED_CONTROL,
                 name: str = "send buffer") -> None:
        self.pool = pool
        self.limit = limit
        self.name = name
        #: messages that had to wait for a section (a counter; `waiting` is how many wait now)
        self.queued = 0
        self._inflight: dict[int, int] = {}  # trans_id -> section index
        self._waiting: deque[Outbound] = deque()

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def in_flight(self) -> int:
        return len(self._inflight)

    def place(self, msgs: Iterable[Outbound]) -> list[Send]:
        """`Send`s for the messages that can go now, in order; the others wait."""
        out: list[Send] = []
        for msg in msgs:
            if msg.rndis is None:
                out.append(Send(msg))
                continue
            if len(msg.rndis) > self.pool.size:
                # the section size is the host's choice (NVSP send-buffer reply); the machines'
                # messages are bounded by limits.MAX_RNDIS_CONTROL_MESSAGE
                raise HostProtocolError(f"{self.name}: RNDIS message of {len(msg.rndis)} bytes does not fit the "
                                        f"host's send section_size {self.pool.size} (control messages travel "
                                        "in send sections)")
            index = self.pool.alloc()
            if index is None:
                if len(self._waiting) >= self.limit:
                    raise HostProtocolError(f"{self.name}: {len(self._waiting)} control messages wait for one of "
                                            f"{self.pool.count} send sections the host never completed "
                                            f"(limit {self.limit})")
                self.queued += 1
                self._waiting.append(msg)
                continue
            self._inflight[msg.trans_id] = index
            out.append(Send(msg, index, self.pool.offset(index)))
        return out

    def release(self, trans_id: int) -> list[Send]:
        """The host completed RNDIS send `trans_id`: free its section; what waited goes out now."""
        index = self._inflight.pop(trans_id, None)
        if index is None:
            return []
        self.pool.free(index)
        out: list[Send] = []
        while self._waiting and self.pool.available:
            out += self.place([self._waiting.popleft()])
        return out
