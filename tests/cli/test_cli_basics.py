"""The CLI shell: help works without the C core, errors render as sentence + hint + exit code."""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

from hvuio.cli import cli


def test_help_lists_group() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    assert "--sysroot" in result.output


def test_console_script_version() -> None:
    out = subprocess.run([sys.executable, "-m", "hvuio", "--version"], capture_output=True, text=True)
    assert out.returncode == 0
    assert "hvuio" in out.stdout


def test_unknown_command_is_usage_error() -> None:
    out = subprocess.run([sys.executable, "-m", "hvuio", "no-such-command"], capture_output=True, text=True)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr


def test_permission_denied_is_a_user_error(monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """An EACCES from sysfs or /dev that no layer turned into an HvuioError still reads as one
    sentence and the not-root hint, with the not-root exit code (not the internal-error 70)."""
    from hvuio.cli import main
    from hvuio.device import sysfs
    from hvuio.errors import NotRootError

    def denied(*_a: object, **_k: object) -> None:
        raise PermissionError(13, "Permission denied", "/sys/bus/vmbus/devices/x")

    monkeypatch.setattr(sysfs.VmbusDevice, "all", denied)
    with pytest.raises(SystemExit) as exc:
        main(["list"])
    err = capsys.readouterr().err
    assert exc.value.code == NotRootError.exit_code
    assert err.splitlines() == ["Error: permission denied on /sys/bus/vmbus/devices/x.",
                                f"Hint: {NotRootError.default_hint}"]


@pytest.mark.parametrize("args", [["sim", "stop"], ["sim", "status"], ["sim", "start", "--no-host"],
                                  ["sim", "link", "hveth0", "down"], ["sim", "rescind", "hveth0"]])
def test_sim_commands_refuse_slash_as_sysroot(args: list[str], monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """The emulator's tree needs its own directory: the global --sysroot (default /) is refused."""
    from hvuio.cli import main
    from hvuio.errors import UsageError

    monkeypatch.delenv("HVUIO_SYSROOT", raising=False)
    monkeypatch.delenv("HVUIO_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == UsageError.exit_code
    assert capsys.readouterr().err.splitlines() == [
        "Error: the emulator needs its own --sysroot directory, not /",
        "Hint: Pass e.g. --sysroot /run/hvsim (it is created, mode 0700, if missing)."]


def test_sysroot_is_only_a_global_option() -> None:
    """One --sysroot: the group's (or HVUIO_SYSROOT); no command declares its own."""
    import click

    todo: list[click.Command] = [cli]
    while todo:
        cmd = todo.pop()
        if isinstance(cmd, click.Group):
            todo += cmd.commands.values()
        if cmd is not cli:
            assert not any("--sysroot" in p.opts for p in cmd.params), cmd.name
