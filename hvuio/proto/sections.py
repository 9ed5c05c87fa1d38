"""Where RNDIS control messages travel: control pages (GPA-direct) or send-buffer sections, sans-IO.

What lives here: `SectionPool`, a tiny allocator over a contiguous range of indices of
equal-sized places (send-buffer sections, or the control pages of a guest-memory pool);
`split_send_sections`, the one rule that decides which send-buffer indices the C data path gets
and which stay with the control path; and `ControlSections`, the placement NetvscGuest
(proto/netvsc.py) keeps: each RNDIS control message gets a free control page when the NIC has a
guest-memory pool (one message per 4 KiB page, never crossing it; a message larger than a page
takes a section) or else a free control section (a `Send` that says which), waits in a bounded
queue when none is free, and gives its place back when the host completes the send.
`fall_back()` is the one state change from pages to sections (the host did not take GPA-direct
control messages, proto/netvsc.py decides when).

Control pages: pages [0, limits.CONTROL_PAGES) of the NIC's pool (hvuio/nic.py owns the memory);
page i is byte offset i * 4096 of that area, its page number the channel looks up
(hvuio/channel.py). Linux (hv_netvsc netvsc_send_pkt) and DPDK (hn_nvs_send_rndis_ctrl) send
control messages GPA-direct; DPDK refuses one that would cross a page, as this placement never
lets one.

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
#: requests in flight; the halt may add one; 16 leaves room for all of
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
    """Control placement: RNDIS control messages -> `Send`s naming a control page or section.

    `place()` gives each message with RNDIS bytes a free control page (`pages`, when the NIC has
    them and the message fits one) or else a free control section of `pool`; messages without
    RNDIS bytes pass through. When no place is free the message waits, in order (a message never
    overtakes one that waits), at most `limit` of them (a host that never completes our sends is
    a HostProtocolError, not unbounded growth). `release(trans_id)` frees the place of a
    completed send and places what waited. `name` prefixes error messages.
    """

    def __init__(self, pool: SectionPool, *, pages: SectionPool | None = None,
                 limit: int = limits.MAX_QUEUED_CONTROL, name: str = "send buffer") -> None:
        if pages is not None and pages.size > limits.CONTROL_PAGE_SIZE:
            raise LocalProtocolError(f"control pages of {pages.size} bytes: a GPA-direct control message may "
                                     f"not cross a {limits.CONTROL_PAGE_SIZE}-byte page")
        self.pool = pool
        #: the control pages (GPA-direct) while they are used; None: send sections only
        self.pages = pages
        self.limit = limit
        self.name = name
        #: messages that had to wait for a place (a counter; `waiting` is how many wait now)
        self.queued = 0
        #: messages placed in a control page / in a send section (counters)
        self.sent_gpa = 0
        self.sent_section = 0
        self._inflight: dict[int, tuple[SectionPool, int]] = {}  # trans_id -> (pool, index)
        self._waiting: deque[Outbound] = deque()

    @property
    def gpa_direct(self) -> bool:
        """Control messages go to control pages (GPA-direct) now."""
        return self.pages is not None

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def in_flight(self) -> int:
        return len(self._inflight)

    def is_gpa_direct(self, trans_id: int) -> bool:
        """Send `trans_id` is in flight in a control page."""
        entry = self._inflight.get(trans_id)
        return entry is not None and entry[0] is not self.pool

    def fall_back(self) -> None:
        """From now on control messages go to send sections only. Pages in flight are never used
        again (a late completion still frees its entry); messages that waited are dropped: they
        belonged to the RNDIS machine the caller replaces."""
        self.pages = None
        self._waiting.clear()

    def place(self, msgs: Iterable[Outbound]) -> list[Send]:
        """`Send`s for the messages that can go now, in order; the others wait."""
        out: list[Send] = []
        for msg in msgs:
            if msg.rndis is None:
                out.append(Send(msg))
                continue
            send = None if self._waiting else self._try(msg)
            if send is None:
                self._wait(msg)
            else:
                out.append(send)
        return out

    def release(self, trans_id: int) -> list[Send]:
        """The host completed RNDIS send `trans_id`: free its place; what waited goes out now."""
        entry = self._inflight.pop(trans_id, None)
        if entry is None:
            return []
        pool, index = entry
        pool.free(index)
        out: list[Send] = []
        while self._waiting:
            send = self._try(self._waiting[0])
            if send is None:
                break
            self._waiting.popleft()
            out.append(send)
        return out

    def _try(self, msg: Outbound) -> Send | None:
        """A place for `msg` now, or None when the one it needs is busy."""
        assert msg.rndis is not None
        size = len(msg.rndis)
        pages = self.pages
        if pages is not None and size <= pages.size:
            index = pages.alloc()
            if index is None:
                return None
            self._inflight[msg.trans_id] = (pages, index)
            self.sent_gpa += 1
            return Send(msg, offset=pages.offset(index) - pages.offset(pages.first), page=index)
        if size > self.pool.size:
            # the section size is the host's choice (NVSP send-buffer reply); the machines'
            # messages are bounded by limits.MAX_RNDIS_CONTROL_MESSAGE
            raise HostProtocolError(f"{self.name}: RNDIS message of {size} bytes does not fit the "
                                    f"host's send section_size {self.pool.size} (control messages travel "
                                    "in send sections)")
        index = self.pool.alloc()
        if index is None:
            return None
        self._inflight[msg.trans_id] = (self.pool, index)
        self.sent_section += 1
        return Send(msg, index, self.pool.offset(index))

    def _wait(self, msg: Outbound) -> None:
        if len(self._waiting) >= self.limit:
            where = (f"{self.pages.count} control pages and {self.pool.count} send sections"
                     if self.pages is not None else f"{self.pool.count} send sections")
            raise HostProtocolError(f"{self.name}: {len(self._waiting)} control messages wait for one of "
                                    f"{where} the host never completed (limit {self.limit})")
        self.queued += 1
        self._waiting.append(msg)
