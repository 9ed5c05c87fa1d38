"""The status record a running `hvuio up` keeps (hvuio/status.py): written atomically, read back
while its process lives, skipped once it is gone, removed at exit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from hvuio.status import STATUS_DIR, StatusFile, read_status


def test_written_record_is_read_back_and_removed(tmp_path: Path) -> None:
    state = StatusFile(tmp_path, "guid-1")
    state.write(nic={"device": "guid-1"}, counters={"keepalives": 2})
    state.write(tap="hvu-x", netns=None)
    (rec,) = read_status(tmp_path)
    assert rec["pid"] == os.getpid() and rec["device"] == "guid-1"
    assert rec["counters"] == {"keepalives": 2} and rec["tap"] == "hvu-x" and rec["netns"] is None
    assert rec["updated"] >= rec["started"]
    assert (tmp_path / STATUS_DIR / "guid-1.json").stat().st_mode & 0o777 == 0o644
    state.remove()
    assert read_status(tmp_path) == []
    state.remove()  # already gone: fine


def test_records_of_dead_processes_and_junk_are_skipped(tmp_path: Path) -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    d = tmp_path / STATUS_DIR
    d.mkdir(parents=True)
    (d / "dead.json").write_text(json.dumps({"pid": int(gone.stdout), "device": "dead"}))
    (d / "junk.json").write_text("{not json")
    (d / "list.json").write_text("[1, 2]")
    (d / "nodevice.json").write_text(json.dumps({"pid": os.getpid()}))
    assert read_status(tmp_path) == []
