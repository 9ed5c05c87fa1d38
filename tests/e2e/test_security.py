"""Root's hvuio must not be steerable by other local users: each attack shown against earlier
versions, replayed with a real unprivileged user (setpriv to nobody) doing the attacker's part
with plain shell commands, then root running hvuio. hvuio must refuse with one clear sentence,
and nothing outside the sysroot may change.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.cli import child_env
from support.namespaces import netns_skip_reason

from hvuio.netdev import netns
from hvuio.errors import UnsafePathError, UsageError

NOBODY = 65534
pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                                reason="needs root and setpriv to act as another local user")


def as_nobody(script: str) -> None:
    subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "sh", "-ec", script],
                   check=True, cwd="/", timeout=30)


def hvuio(*args: str, env: dict[str, str] | None = None, umask: int | None = None,
          timeout: float = 60) -> subprocess.CompletedProcess[str]:
    base = child_env()
    return subprocess.run(netns.python_argv("-m", "hvuio", *args), capture_output=True, text=True,
                          env={**base, **(env or {})}, cwd=netns.CHILD_CWD, timeout=timeout, check=False,
                          preexec_fn=None if umask is None else (lambda: os.umask(umask)))  # noqa: PLW1509


def refused(proc: subprocess.CompletedProcess[str], code: int, words: str) -> None:
    err = proc.stderr
    assert proc.returncode == code, err
    assert "Traceback" not in err and err.startswith("Error: ") and "\nHint: " in err, err
    assert words in err, err


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A directory like /tmp (root's, sticky, writable by everyone) for the attacker to squat in."""
    d = Path(tempfile.mkdtemp(prefix="hvuio-sec-", dir="/tmp"))
    os.chmod(d, 0o1777)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def victims(tmp_path: Path) -> dict[Path, tuple[bytes, int]]:
    """Root-only files the attacker points symlinks at; their content and mtime must not change."""
    out = {}
    for name in ("shadow", "config", "log"):
        p = tmp_path / name
        p.write_bytes(f"root's {name}\n".encode())
        os.chmod(p, 0o600)
        out[p] = (p.read_bytes(), p.stat().st_mtime_ns)
    return out


def unchanged(victims: dict[Path, tuple[bytes, int]]) -> None:
    for p, (data, mtime) in victims.items():
        assert (p.read_bytes(), p.stat().st_mtime_ns) == (data, mtime), p


def test_squatted_sysroot_is_refused_by_every_command(shared_tmp: Path, victims: dict[Path, tuple[bytes, int]]
                                                      ) -> None:
    root = shared_tmp / "hvsim"
    shadow, config, log = victims
    as_nobody(f"""mkdir -p {root}/run/hvuio-sim {root}/run/hvuio/bind {root}/run/hvuio/lock {root}/run/hvuio/up
                  ln -s {shadow} {root}/run/hvuio-sim/int_page
                  ln -s {log} {root}/sim-kernel.log
                  ln -s {config} {root}/run/hvuio/bind/x.json
                  echo 1 > {root}/run/hvuio-sim/kernel.pid""")
    refused(hvuio("--sysroot", str(root), "sim", "start"), UnsafePathError.exit_code, f"owned by uid {NOBODY}")
    refused(hvuio("--sysroot", str(root), "sim", "stop"), UnsafePathError.exit_code, f"owned by uid {NOBODY}")
    for args in (("list",), ("bind", "hveth0", "--force"), ("up", "hveth0", "--once"), ("unbind", "hveth0")):
        refused(hvuio("--sysroot", str(root), *args), UnsafePathError.exit_code, str(root))
        refused(hvuio(*args, env={"HVUIO_SYSROOT": str(root)}), UnsafePathError.exit_code, str(root))
    unchanged(victims)
    assert sorted(p.name for p in root.iterdir()) == ["run", "sim-kernel.log"]   # root created nothing


def test_symlinked_sysroot_is_refused_not_followed(shared_tmp: Path, tmp_path: Path) -> None:
    target = tmp_path / "target"
    (target / "dev").mkdir(parents=True)
    (target / "run" / "hvuio").mkdir(parents=True)
    (target / "dev" / "keep").write_text("keep\n")
    before = sorted(str(p.relative_to(target)) for p in target.rglob("*"))
    link = shared_tmp / "hvsim"
    as_nobody(f"ln -s {target} {link}")
    refused(hvuio("--sysroot", str(link), "sim", "start"), UnsafePathError.exit_code, "symlink")
    refused(hvuio("--sysroot", str(link), "sim", "stop"), UnsafePathError.exit_code, "symlink")
    assert sorted(str(p.relative_to(target)) for p in target.rglob("*")) == before


def test_group_or_world_writable_sysroot_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "hvsim"
    root.mkdir()
    os.chmod(root, 0o777)
    refused(hvuio("--sysroot", str(root), "sim", "start"), UnsafePathError.exit_code, "writable by")
    assert list(root.iterdir()) == []


def test_sim_stop_signals_only_the_daemon_holding_the_lock(tmp_path: Path) -> None:
    """A pid written into kernel.pid (by anyone) is never signalled: only the lock's holder is."""
    root = tmp_path / "hvsim"
    (root / "run" / "hvuio-sim").mkdir(parents=True)
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        (root / "run" / "hvuio-sim" / "kernel.pid").write_text(f"{bystander.pid}\n")
        stop = hvuio("--sysroot", str(root), "sim", "stop")
        assert stop.returncode == 0 and "had died" in stop.stdout, stop.stderr   # no lock holder
        time.sleep(0.2)
        assert bystander.poll() is None
        refused(hvuio("--sysroot", str(root), "sim", "stop"), UsageError.exit_code, "no sim kernel runs")
    finally:
        bystander.kill()
        bystander.wait()


def _daemon_pid(root: Path) -> int:
    return int((root / "run" / "hvuio-sim" / "kernel.pid").read_text())


def test_a_killed_daemon_is_cleaned_up_by_sim_stop(tmp_path: Path) -> None:
    root = tmp_path / "hvsim"
    start = hvuio("--sysroot", str(root), "sim", "start", "--no-host")
    assert start.returncode == 0, start.stderr
    pid = _daemon_pid(root)
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    stop = hvuio("--sysroot", str(root), "sim", "stop")
    assert stop.returncode == 0 and "had died" in stop.stdout, stop.stderr
    assert sorted(p.name for p in root.iterdir()) == ["sim-kernel.log"]
    again = hvuio("--sysroot", str(root), "sim", "start", "--no-host")
    assert again.returncode == 0, again.stderr
    assert hvuio("--sysroot", str(root), "sim", "stop").returncode == 0


def _writable_by_others(top: Path) -> list[str]:
    bad = []
    for p in [top, *top.rglob("*")]:
        st = os.lstat(p)
        if not stat.S_ISLNK(st.st_mode) and st.st_mode & 0o022 and not stat.S_ISFIFO(st.st_mode):
            bad.append(f"{p.relative_to(top)} {stat.S_IMODE(st.st_mode):04o}")
    return bad


def test_modes_do_not_follow_the_umask_and_guest_memory_is_private(shared_tmp: Path) -> None:
    """Under umask 000 nothing hvuio makes is writable by others; maps, logs and sockets are 0600,
    and another user, who can reach the directory the sysroot is in, reads none of them."""
    root = shared_tmp / "hvsim"
    start = hvuio("--sysroot", str(root), "sim", "start", umask=0)
    assert start.returncode == 0, start.stderr
    try:
        bind = hvuio("--sysroot", str(root), "bind", "hveth0", "--force", umask=0)
        assert bind.returncode == 0, bind.stderr
        up = hvuio("--sysroot", str(root), "up", "hveth0", "--once", "--no-datapath", umask=0)
        assert up.returncode == 0, up.stderr
        assert stat.S_IMODE(root.stat().st_mode) == 0o700
        assert _writable_by_others(root) == []
        state = root / "run" / "hvuio-sim"
        files = [p for p in state.rglob("*") if p.is_file() and not p.is_symlink()]
        assert any(p.name == "map3" for p in files)           # the receive buffer, guest memory
        for p in files:                                       # another user reads none of it
            as_nobody(f"! cat {p} >/dev/null 2>&1")
        assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in files} == {p.name: 0o600 for p in files}
        assert stat.S_IMODE((root / "sim-kernel.log").stat().st_mode) == 0o600
        for sock in [*(root / "dev").iterdir(), state / "vsp.sock"]:
            assert stat.S_ISSOCK(sock.lstat().st_mode) and stat.S_IMODE(sock.lstat().st_mode) == 0o600, sock
    finally:
        hvuio("--sysroot", str(root), "sim", "stop")


def test_python_children_import_nothing_from_the_working_directory(shared_tmp: Path) -> None:
    """`hvuio demo` runs from wherever root stands: another user's hvuio/ there is never imported."""
    evil = shared_tmp / "work"
    marker = shared_tmp / "work" / "imported"
    as_nobody(f"""mkdir -p {evil}/hvuio && chmod 777 {evil}
                  printf 'open("{marker}", "w").close()\\n' > {evil}/hvuio/__init__.py""")
    for args in (("-m", "hvuio", "--version"), ("-c", "import hvuio")):
        proc = subprocess.run(netns.python_argv(*args), cwd=evil, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
    assert not marker.exists()


def test_commands_in_a_namespace_start_in_the_root_directory() -> None:
    reason = netns_skip_reason()
    if reason is not None:
        pytest.skip(reason)
    with netns.namespace("sec") as ns:
        assert netns.run(ns, ["pwd"]).stdout.strip() == "/"


@pytest.mark.parametrize("name", ["/proc/1/ns/net", "../../proc/1/ns/net", "..", "", "a/b"])
def test_a_namespace_is_a_name_never_a_path(name: str) -> None:
    from hvuio.netdev.tap import check_netns_name

    with pytest.raises(UsageError, match="not a name"):
        check_netns_name(name)


def test_sighup_stops_up_like_sigterm() -> None:
    from hvuio.netdev.signals import StopPipe

    pipe = StopPipe()
    pipe.install()
    try:
        os.kill(os.getpid(), signal.SIGHUP)
        assert pipe.stopped and pipe.signal == signal.SIGHUP
    finally:
        pipe.close()
