"""`FakeNetwork`: a FrameNetwork in memory for emulator tests that need frames both ways.

`inject` queues frames for the guest (the host's network thread reads them through `fileno` /
`read_frames`), `sent` collects what the guest sent. Used by tests/sim/test_sim_lifecycle.py.
"""

from __future__ import annotations

import os
from collections import deque

from hvuio.sim.net import NetCounters


class FakeNetwork:
    """A FrameNetwork in memory: `inject` queues frames for the guest, `sent` collects the guest's."""

    def __init__(self) -> None:
        self.counters = NetCounters()
        self.sent: list[bytes] = []
        self._pending: deque[bytes] = deque()
        self._efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.closed = False

    def inject(self, *frames: bytes) -> None:
        self._pending.extend(frames)
        os.eventfd_write(self._efd, 1)

    def fileno(self) -> int:
        return self._efd

    def read_frames(self, max_frames: int = 64) -> list[bytes]:
        try:
            os.eventfd_read(self._efd)
        except BlockingIOError:
            pass
        out = [self._pending.popleft() for _ in range(min(max_frames, len(self._pending)))]
        if self._pending:
            os.eventfd_write(self._efd, 1)
        return out

    def write_frame(self, frame: bytes) -> bool:
        self.sent.append(frame)
        return True

    def close(self) -> None:
        os.close(self._efd)
        self.closed = True
