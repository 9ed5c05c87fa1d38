"""The status record of a running `hvuio up`: written by the bring-up (hvuio/up.py), read by
`hvuio status`.

What lives here: the record's fields (`StatusRecord`), `StatusFile`, which keeps one record at
`<sysroot>/run/hvuio/up/<guid>.json` (replaced atomically on every write, about twice a second
while `up` runs, removed at exit), `read_status`, which returns the records of the `up`
processes still alive (read-only), and `sweep_stale`, which removes the records of `up` processes
that are no longer running (killed: nobody removed them) and says whose they were (used by
`hvuio status` and by `up` at start), and `notify_service`, which tells a service manager (systemd's
`Type=notify`, through $NOTIFY_SOCKET; systemd/hvuio@.service) that `up` is ready, what it is doing,
or that it is stopping. Writing is best effort: a read-only /run or a gone service manager never
stops the NIC.

What must not live here: click or printing (hvuio/cli/net.py renders the records), the bring-up
itself (hvuio/up.py, hvuio/nic.py).
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Final, TypedDict, Unpack, cast

from hvuio.errors import UnsafePathError
from hvuio.safefs import unlink, write_file

STATUS_DIR: Final = "run/hvuio/up"


class StatusRecord(TypedDict, total=False):
    """One `<guid>.json`. Readers get what a file holds: fields may be missing or malformed."""

    pid: int                    # the `hvuio up` process
    device: str                 # instance GUID
    started: float              # time.time() when the file was created
    updated: float              # time.time() of the last write
    nic: dict[str, Any]         # the negotiated values, as NicInfo.to_dict gives them
    counters: dict[str, int]    # control-plane and data-path counters
    queues: list[dict[str, int]]  # each queue's data-path counters, queue 0 (the primary) first
    tap: str | None             # the data path's tap, once it runs
    netns: str | None           # the namespace the tap was moved into
    lifecycle: dict[str, Any]   # hvuio/lifecycle.py Lifecycle.status(): state, persist, reinits, mtu


class StatusFile:
    """`<sysroot>/run/hvuio/up/<guid>.json`, replaced atomically on every write."""

    def __init__(self, sysroot: Path, guid: str) -> None:
        self.path = Path(sysroot) / STATUS_DIR / f"{guid}.json"
        self.record: StatusRecord = {"pid": os.getpid(), "device": guid, "started": time.time()}

    def write(self, **fields: Unpack[StatusRecord]) -> None:
        self.record.update(fields)
        self.record["updated"] = time.time()
        try:
            write_file(self.path, (json.dumps(self.record, sort_keys=True) + "\n").encode(), 0o644,
                       create_dirs=0o755)
        except (OSError, UnsafePathError):
            pass  # status is best effort: a read-only /run must not stop the NIC

    def remove(self) -> None:
        try:
            unlink(self.path)
        except (OSError, UnsafePathError):
            pass


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_status(sysroot: Path) -> list[StatusRecord]:
    """Records of running `hvuio up` instances (stale files of dead processes are skipped)."""
    out = []
    for path in sorted((Path(sysroot) / STATUS_DIR).glob("*.json")):
        try:
            rec = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(rec, dict) and isinstance(rec.get("device"), str) and _alive(rec.get("pid")):
            out.append(cast(StatusRecord, rec))
    return out


@dataclass(frozen=True)
class StaleRecord:
    """A record `sweep_stale` removed: its file, the pid of the `up` that is no longer running
    and the device it named (None when the record names none)."""

    path: Path
    pid: int
    device: str | None

    @property
    def message(self) -> str:
        of = f" of device {self.device}" if self.device else ""
        return f"removed the stale record of hvuio up pid {self.pid} (not running){of}"


def sweep_stale(sysroot: Path) -> list[StaleRecord]:
    """Remove the records whose `up` process is no longer running; what was removed. Files that
    are not records (junk, no pid) are left alone; a record replaced since it was read (an `up`
    that just started for the device) is kept."""
    removed = []
    for path in sorted((Path(sysroot) / STATUS_DIR).glob("*.json")):
        try:
            with path.open("rb") as f:
                seen = os.fstat(f.fileno())
                rec = json.loads(f.read())
        except (OSError, ValueError):
            continue
        pid = rec.get("pid") if isinstance(rec, dict) else None
        if not isinstance(pid, int) or pid <= 0 or _alive(pid):
            continue
        try:
            now = os.stat(path, follow_symlinks=False)
            if (now.st_dev, now.st_ino) != (seen.st_dev, seen.st_ino):
                continue
            unlink(path)
        except (OSError, UnsafePathError):
            continue
        device = rec.get("device")
        removed.append(StaleRecord(path, pid, device if isinstance(device, str) else None))
    return removed


def notify_service(ready: bool = False, stopping: bool = False, status: str | None = None) -> bool:
    """Tell the service manager that started this process (systemd `Type=notify`: the datagram
    socket named by $NOTIFY_SOCKET, a path or, with a leading '@', an abstract name) that `up` is
    ready (READY=1), is stopping (STOPPING=1), and/or what it is doing (STATUS=, one line). True
    when a message went out; False without a service manager or when sending failed (best effort:
    the NIC runs either way)."""
    target = os.environ.get("NOTIFY_SOCKET", "")
    lines = [f"MAINPID={os.getpid()}"]
    if ready:
        lines.append("READY=1")
    if stopping:
        lines.append("STOPPING=1")
    if status is not None:
        lines.append("STATUS=" + " ".join(status.split()))
    if not target or len(lines) == 1:
        return False
    address = "\0" + target[1:] if target.startswith("@") else target
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto("\n".join(lines).encode(), address)
    except OSError:
        return False
    return True
