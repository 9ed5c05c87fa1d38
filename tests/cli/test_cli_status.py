"""`hvuio status`: the records of `hvuio up` processes that are no longer running are removed, one
line each saying so (on stderr with --json, so stdout stays JSON); the live ones are shown."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hvuio.status import STATUS_DIR, StatusFile

from support.cli import run_main


def _dead_record(sysroot: Path, guid: str) -> tuple[Path, int]:
    pid = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                             text=True, check=True).stdout)
    path = sysroot / STATUS_DIR / f"{guid}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"pid": pid, "device": guid, "counters": {}}))
    return path, pid


def test_status_removes_and_reports_stale_records(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, pid = _dead_record(tmp_path, "guid-dead")
    code, out, err = run_main(capsys, "--sysroot", str(tmp_path), "status")
    assert code == 0, err
    assert f"Removed the stale record of hvuio up pid {pid} (not running) of device guid-dead." in out
    assert "No running 'hvuio up'." in out and not path.exists()
    code, out, err = run_main(capsys, "--sysroot", str(tmp_path), "status")
    assert code == 0 and "stale" not in out + err  # said once: it is gone


def test_status_json_keeps_stdout_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, pid = _dead_record(tmp_path, "guid-dead")
    live = StatusFile(tmp_path, "guid-live")
    live.write(counters={"keepalives": 1})
    try:
        code, out, err = run_main(capsys, "--sysroot", str(tmp_path), "status", "--json")
    finally:
        live.remove()
    assert code == 0, err
    assert [r["device"] for r in json.loads(out)] == ["guid-live"]
    assert f"pid {pid} (not running)" in err and not path.exists()
