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


def test_status_shows_the_current_link_speed_and_its_changes(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    from hvuio.nicinfo import NicInfo

    nic = NicInfo(device="guid-live", uio="uio0", relid=14, monitored=True, ring_size=1 << 20,
                  nvsp_version=0x60001, ndis_version=0x6001E, rndis_version=(1, 0), link_up=True,
                  link_speed_bps=2_500_000_000)  # as `up` rewrites it after a host's speed indication
    live = StatusFile(tmp_path, "guid-live")
    live.write(nic=nic.to_dict(), counters={"link_speed_changes": 1, "link_speed_mbps": 2500})
    try:
        code, out, err = run_main(capsys, "--sysroot", str(tmp_path), "status")
    finally:
        live.remove()
    assert code == 0, err
    assert "Link     up, 2.5 Gbit/s" in out
    assert any(line.split() == ["link_speed_changes", "1"] for line in out.splitlines())


def test_status_shows_where_the_nic_is_in_its_life(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    live = StatusFile(tmp_path, "guid-live")
    live.write(tap="hvu-x", lifecycle={"state": "waiting for the device", "persist": True, "reinits": 2, "mtu": 1500},
               counters={"reinits": 2, "reinits_rescind": 1, "reinits_mtu": 1, "rescinds": 1})
    try:
        code, out, err = run_main(capsys, "--sysroot", str(tmp_path), "status")
    finally:
        live.remove()
    assert code == 0, err
    assert "state: waiting for the device, re-initialised 2 times (--persist)" in out
    assert "reinits_rescind" in out and "rescinds" in out
