"""One TCP connection between two namespaces that the test feeds step by step.

`SteppedStream(src_ns, dst_ns, dst_ip, port)` starts a receiver in `dst_ns` (hashing what arrives,
the demo's receiver) and a sender in `src_ns` that connects once and then, for every
`send(nbytes)`, writes that many more seeded random bytes on the same connection (answering
"sent N" when they are in the socket); `finish()` closes the connection and returns both sides'
byte counts and sha256 digests. So a test can move the path under one open connection (a VF taken
away mid-transfer) and check that it survived byte for byte. Waits are bounded.
"""

from __future__ import annotations

import select
from typing import Any

from hvuio.demo import _TCP_RECEIVER, _expect_line, _finish
from hvuio.netdev import netns

_SENDER = r"""
import hashlib, json, random, socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3]))
h = hashlib.sha256(); total = 0; rng = random.Random(7)
print("connected", flush=True)
for line in sys.stdin:
    if line.strip() == "end":
        break
    data = rng.randbytes(int(line)); c.sendall(data); h.update(data); total += len(data)
    print(f"sent {total}", flush=True)
c.shutdown(socket.SHUT_WR); c.recv(1); c.close()
print(json.dumps({"bytes": total, "sha256": h.hexdigest()}), flush=True)
"""


class SteppedStream:
    """See the module docstring."""

    def __init__(self, src_ns: str, dst_ns: str, dst_ip: str, port: int = 5301, timeout: float = 60.0) -> None:
        self.timeout = timeout
        self.total = 0
        self.receiver = netns.popen(dst_ns, netns.python_argv("-c", _TCP_RECEIVER, dst_ip, str(port), str(timeout)))
        _expect_line(self.receiver, "listening", 10.0)
        self.sender = netns.popen(src_ns, netns.python_argv("-c", _SENDER, dst_ip, str(port), str(timeout)))
        _expect_line(self.sender, "connected", 10.0)

    def send(self, nbytes: int) -> None:
        """Queue `nbytes` more (returns at once; `wait_sent` waits for them to be written)."""
        assert self.sender.stdin is not None
        self.total += nbytes
        self.sender.stdin.write(f"{nbytes}\n")
        self.sender.stdin.flush()

    def wait_sent(self) -> None:
        """Until everything queued is in the sender's socket."""
        out = self.sender.stdout
        assert out is not None
        while True:
            ready, _, _ = select.select([out], [], [], self.timeout)
            line = out.readline() if ready else ""
            if not line.startswith("sent "):
                raise AssertionError(f"sender stopped: {line!r}")
            if int(line.split()[1]) >= self.total:
                return

    def finish(self) -> dict[str, Any]:
        """Close the connection; {"sent": ..., "received": ..., "exact": bool}."""
        assert self.sender.stdin is not None
        self.sender.stdin.write("end\n")
        self.sender.stdin.flush()  # communicate() closes it
        sent = _finish(self.sender, self.timeout)
        got = _finish(self.receiver, self.timeout)
        return {"sent": sent, "received": got, "exact": sent == {k: got[k] for k in ("bytes", "sha256")}}

    def close(self) -> None:
        for proc in (self.sender, self.receiver):
            if proc.poll() is None:
                proc.kill()
            proc.wait()
