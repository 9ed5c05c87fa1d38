"""Stopping a running NIC from the outside: SIGINT, SIGTERM and SIGHUP as a readable pipe.

What lives here: `StopPipe`, a non-blocking pipe whose read end becomes readable when one of the
three signals arrives (or `stop()` is called), so the loops of hvuio/nic.py, hvuio/engine.py and
hvuio/up.py can wait on it with select() next to their other fds, and `install()` / `close()` of
the handlers (restoring the previous ones). Children forked without exec inherit the handler; a
signal meant for them ends the child, never the parent's run.

What must not live here: what stopping means (teardown is hvuio/nic.py's and hvuio/engine.py's),
the protocol, the tap.
"""

from __future__ import annotations

import os
import select
import signal
import threading
from types import FrameType
from typing import Any

__all__ = ["StopPipe"]


class StopPipe:
    """A pipe that SIGINT/SIGTERM/SIGHUP (or `stop()`) make readable; install() / restore() the handlers."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.signal: int | None = None
        self._old: dict[int, Any] = {}
        self._pid = os.getpid()

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        # Children forked without exec (pyroute2 forks to open sockets in a netns) inherit this
        # handler and the pipe; a signal meant for them must not stop us.
        if os.getpid() != self._pid:
            os._exit(128 + signum)
        self.signal = signum
        self.stop()

    def stop(self) -> None:
        try:
            os.write(self.write_fd, b"s")
        except (BlockingIOError, OSError):
            pass

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):   # HUP: the terminal went away
            self._old[sig] = signal.signal(sig, self._handler)

    @property
    def stopped(self) -> bool:
        return bool(select.select([self.read_fd], [], [], 0)[0])

    def close(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()
        for fd in (self.read_fd, self.write_fd):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> StopPipe:
        self.install()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
