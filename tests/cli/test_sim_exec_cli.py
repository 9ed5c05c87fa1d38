"""`hvuio sim exec` refusals: each is one sentence + hint, before anything is mounted.

No command, a sysroot that is not an emulator's tree (or is /), a command that does not exist,
and a caller that is not root. None of them needs a running emulator: the checks come first.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from hvuio.errors import NotRootError
from hvuio.sim.exec import check_request

from support.cli import assert_user_error, hvuio_main, run_main

MARKER = ".hvuio-sim"


def fake_tree(tmp_path: Path) -> Path:
    """A directory carrying the emulator's marker: enough for every check before the mounts."""
    root = tmp_path / "sim"
    root.mkdir(mode=0o700)
    (root / MARKER).write_text("{}\n")
    return root


@pytest.fixture
def as_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("the checks after the root check need root")


def test_no_command(tmp_path: Path) -> None:
    proc = hvuio_main("--sysroot", str(fake_tree(tmp_path)), "sim", "exec")
    assert_user_error(proc, exit_code=2)
    assert "needs a command" in proc.stderr and "--" in proc.stderr


@pytest.mark.usefixtures("as_root")
def test_not_an_emulator_tree(tmp_path: Path) -> None:
    proc = hvuio_main("--sysroot", str(tmp_path), "sim", "exec", "--", "true")
    assert_user_error(proc, exit_code=2)
    assert "not a tree of the emulator" in proc.stderr and "sim start" in proc.stderr


def test_root_is_refused_as_sysroot() -> None:
    assert_user_error(hvuio_main("--sysroot", "/", "sim", "exec", "--", "true"), exit_code=2)


@pytest.mark.usefixtures("as_root")
def test_unknown_command(tmp_path: Path) -> None:
    proc = hvuio_main("--sysroot", str(fake_tree(tmp_path)), "sim", "exec", "--", "no-such-command-hvuio")
    assert_user_error(proc, exit_code=2)
    assert "no-such-command-hvuio" in proc.stderr


def test_not_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(NotRootError):
        check_request(fake_tree(tmp_path), ["true"], euid=1000)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    code, out, err = run_main(capsys, "--sysroot", str(tmp_path / "sim"), "sim", "exec", "--", "true")
    assert_user_error(subprocess.CompletedProcess([], code, out, err), exit_code=NotRootError.exit_code)
    assert "needs root" in err and "sudo" in err
