"""A TCP stream that spans a lifecycle event: opened before it, running through it, checked
byte-exact after it.

`Stream(src_ns, dst_ns, dst_ip)` starts a receiver in `dst_ns` (it hashes everything it gets and
reports its byte count after every MiB) and a sender in `src_ns` that writes a seeded random
stream on one connection until told to stop. `wait_received(n)` waits (bounded) until the
receiver has `n` bytes; `finish()` stops the sender and returns both sides' byte counts and
sha256, and whether they match. `stream_through(src_ns, dst_ns, dst_ip)` is the shape every
lifecycle test has: a Stream that has carried a MiB when the `with` block (the event) starts, must
carry 2 MiB more after it, and ends byte-exact (asserted; its result is `stream.result`).
Traffic stays between the test's namespaces.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from hvuio.netdev import netns

_RECEIVER = r"""
import hashlib, json, socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(1); print("listening", flush=True)
s.settimeout(120); c, _ = s.accept(); c.settimeout(120)
h = hashlib.sha256(); n = 0; mark = 1 << 20; buf = bytearray(1 << 16); view = memoryview(buf)
while True:
    k = c.recv_into(buf)
    if not k: break
    h.update(view[:k]); n += k
    if n >= mark:
        print(json.dumps({"progress": n}), flush=True); mark = n + (1 << 20)
c.sendall(b"x"); c.close()
print(json.dumps({"bytes": n, "sha256": h.hexdigest()}), flush=True)
"""

_SENDER = r"""
import hashlib, json, random, socket, sys, threading, time
rnd = random.Random(int(sys.argv[3])); h = hashlib.sha256(); n = 0; stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
c = socket.socket(); c.settimeout(120); c.connect((sys.argv[1], int(sys.argv[2])))
print("connected", flush=True)
while not stop.is_set():
    chunk = rnd.randbytes(16384)
    c.sendall(chunk); h.update(chunk); n += len(chunk)
    time.sleep(0.001)  # a steady stream, not a flood: it must still run when the event comes
c.shutdown(socket.SHUT_WR); c.recv(1); c.close()
print(json.dumps({"bytes": n, "sha256": h.hexdigest()}), flush=True)
"""


class Stream:
    """See the module docstring."""

    def __init__(self, src_ns: str, dst_ns: str, dst_ip: str, port: int = 5301, seed: int = 11) -> None:
        self.received = 0
        self.result: dict[str, Any] = {}
        self._final: dict[str, Any] | None = None
        self._cond = threading.Condition()
        self.receiver = netns.popen(dst_ns, netns.python_argv("-c", _RECEIVER, dst_ip, str(port)))
        self.sender: subprocess.Popen[str] | None = None
        try:
            assert self.receiver.stdout is not None
            line = self.receiver.stdout.readline().strip()
            assert line == "listening", f"receiver: {line!r} {self._stderr(self.receiver)}"
            self._reader = threading.Thread(target=self._read, daemon=True)
            self._reader.start()
            self.sender = netns.popen(src_ns, netns.python_argv("-c", _SENDER, dst_ip, str(port), str(seed)))
            assert self.sender.stdout is not None
            line = self.sender.stdout.readline().strip()
            assert line == "connected", f"sender: {line!r} {self._stderr(self.sender)}"
        except BaseException:
            self.kill()
            raise

    def _read(self) -> None:
        assert self.receiver.stdout is not None
        for line in self.receiver.stdout:
            if not line.startswith("{"):
                continue
            record = json.loads(line)
            with self._cond:
                if "progress" in record:
                    self.received = record["progress"]
                else:
                    self._final = record
                self._cond.notify_all()

    def wait_received(self, at_least: int, timeout: float = 60.0) -> bool:
        """Wait until the receiver has at least `at_least` bytes (False after `timeout` s)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.received < at_least:
                left = deadline - time.monotonic()
                if left <= 0 or self._final is not None:
                    return False
                self._cond.wait(left)
        return True

    def finish(self, timeout: float = 120.0) -> dict[str, Any]:
        """Stop the sender; both sides' counts and hashes and whether they are equal."""
        assert self.sender is not None and self.sender.stdin is not None
        self.sender.stdin.write("stop\n")
        self.sender.stdin.flush()
        out, err = self.sender.communicate(timeout=timeout)
        sent = json.loads([line for line in out.splitlines() if line.startswith("{")][-1]) if "{" in out else None
        self.receiver.wait(timeout=timeout)
        self._reader.join(timeout)
        got = self._final
        exact = sent is not None and got is not None and sent == got
        return {"sent": sent, "received": got, "exact": exact, "sender_stderr": err[-400:]}

    def kill(self) -> None:
        for p in (self.sender, self.receiver):
            if p is not None and p.poll() is None:
                p.kill()
                p.communicate()

    @staticmethod
    def _stderr(proc: subprocess.Popen[str]) -> str:
        if proc.poll() is None:
            proc.kill()
        return (proc.communicate()[1] or "")[-400:]


MIB = 1 << 20


@contextmanager
def stream_through(src_ns: str, dst_ns: str, dst_ip: str, before: int = MIB, after: int = 2 * MIB) -> Iterator[Stream]:
    """A Stream that has carried `before` bytes when the block starts and must carry `after` more
    once it ended; finished and asserted byte-exact on the way out (`stream.result`)."""
    stream = Stream(src_ns, dst_ns, dst_ip)
    try:
        assert stream.wait_received(before)
        yield stream
        at = stream.received
        assert stream.wait_received(at + after), (at, stream.received)
    finally:
        stream.result = stream.finish()
    assert stream.result["exact"], stream.result
