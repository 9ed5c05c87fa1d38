"""The status record a running `hvuio up` keeps (hvuio/status.py): written atomically, read back
while its process lives, skipped once it is gone (reading removes nothing), removed at exit; the
records of processes no longer running are swept (and said whose they were); a service manager
($NOTIFY_SOCKET) is told when `up` is ready or stopping."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from hvuio.status import STATUS_DIR, StatusFile, notify_service, read_status, sweep_stale


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
    assert len(list(d.glob("*.json"))) == 4  # reading is read-only


def _dead_pid() -> int:
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True).stdout)


def test_records_of_processes_no_longer_running_are_swept(tmp_path: Path) -> None:
    dead = _dead_pid()
    d = tmp_path / STATUS_DIR
    d.mkdir(parents=True)
    (d / "dead.json").write_text(json.dumps({"pid": dead, "device": "guid-dead"}))
    (d / "nodevice.json").write_text(json.dumps({"pid": dead}))
    (d / "junk.json").write_text("{not json")
    (d / "nopid.json").write_text(json.dumps({"device": "guid-x"}))
    live = StatusFile(tmp_path, "guid-live")
    live.write(counters={})
    try:
        swept = sweep_stale(tmp_path)
        assert [(r.path.name, r.pid, r.device) for r in swept] == [("dead.json", dead, "guid-dead"),
                                                                  ("nodevice.json", dead, None)]
        assert swept[0].message == f"removed the stale record of hvuio up pid {dead} (not running) of device guid-dead"
        assert sorted(p.name for p in d.glob("*.json")) == ["guid-live.json", "junk.json", "nopid.json"]
        assert [r["device"] for r in read_status(tmp_path)] == ["guid-live"]
        assert sweep_stale(tmp_path) == []
    finally:
        live.remove()
    assert sweep_stale(tmp_path / "nothing-here") == []


def _notify_socket(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    return sock


def test_notify_service_sends_ready_and_status_to_the_socket_systemd_names(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = str(tmp_path / "notify")
    with _notify_socket(path) as sock:
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        assert notify_service(ready=True, status="data path running\non tap hvu-1")
        lines = sock.recv(4096).decode().split("\n")
    assert lines == [f"MAINPID={os.getpid()}", "READY=1", "STATUS=data path running on tap hvu-1"]


def test_notify_service_reaches_an_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"hvuio-test-notify-{os.getpid()}"
    with _notify_socket("\0" + name) as sock:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert notify_service(stopping=True)
        assert sock.recv(4096).decode().split("\n") == [f"MAINPID={os.getpid()}", "STOPPING=1"]


def test_notify_service_without_a_service_manager_or_a_listener_sends_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert not notify_service(ready=True)
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens"))
    assert not notify_service(ready=True)  # best effort: no exception
    with _notify_socket(str(tmp_path / "notify")):
        monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
        assert not notify_service()  # nothing to say
