"""The CLI shell: help works without the C core, errors render as sentence + hint + exit code."""

from __future__ import annotations

import subprocess
import sys

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
