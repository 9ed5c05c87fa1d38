"""Conventions every `hvuio` command follows: help text on every option, -v/-q before or after the
command, log records on one line with their level (a priority prefix for the journal), progress
lines on stderr only, the exit-code table in `hvuio --help`, shell completion, and the VM smoke
script failing when it tested nothing."""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from hvuio.cli import cli
from hvuio.cli.logs import PROGRESS_LOGGER, OneLineFormatter, configure
from hvuio.device.bind import bind_device
from hvuio.errors import EXIT_CODES
from hvuio.sim.kernel.bus import SimKernel
from hvuio.sim.vsp.host import SimEnvironment

from support.cli import child_env, hvuio_module, run_main
from support.paths import ROOT


def _commands(command: click.Command, path: tuple[str, ...] = ("hvuio",)) -> Iterator[tuple[str, click.Command]]:
    yield " ".join(path), command
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from _commands(sub, (*path, name))


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    yield
    configure(0, 0, False)   # the next test starts from the default levels, on a live stderr


def test_every_option_of_every_command_has_help() -> None:
    seen = 0
    for name, command in _commands(cli):
        assert command.help and command.help.strip(), name
        for param in command.params:
            if isinstance(param, click.Option):
                seen += 1
                assert param.help and param.help.strip(), f"{name} {'/'.join(param.opts)}"
    assert seen > 40


def test_every_command_takes_v_and_q() -> None:
    for name, command in _commands(cli):
        opts = {o for p in command.params for o in getattr(p, "opts", [])}
        assert {"-v", "--verbose", "-q", "--quiet"} <= opts, name


@pytest.mark.parametrize("args,level", [
    ([], logging.WARNING),
    (["-v"], logging.INFO), (["list", "-v"], logging.INFO),
    (["-vv"], logging.DEBUG), (["-v", "list", "-v"], logging.DEBUG),
    (["-q"], logging.ERROR), (["list", "--quiet"], logging.ERROR),
    (["-v", "list", "-q"], logging.WARNING),
])
def test_v_and_q_count_before_and_after_the_command(tmp_path: Path, args: list[str], level: int) -> None:
    argv = ["--sysroot", str(tmp_path), *args] + ([] if "list" in args else ["list"])
    res = CliRunner().invoke(cli, argv)
    assert res.exit_code == 0, res.output
    assert logging.getLogger().level == level


def test_log_records_are_one_line_with_the_level_name_and_no_colour() -> None:
    fmt = OneLineFormatter(timestamps=False, journal=False)
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        record = logging.LogRecord("hvuio.nic", logging.WARNING, __file__, 1, "first\nsecond", None, sys.exc_info())
    text = fmt.format(record)
    assert "\n" not in text and "\x1b" not in text
    assert text.startswith("WARNING hvuio.nic: first | second | Traceback") and "ValueError: bad | value" in text


def test_the_journal_gets_a_priority_prefix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with open(tmp_path / "journal", "w") as stream:
        st = os.fstat(stream.fileno())
        monkeypatch.setattr(sys, "stderr", stream)
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        configure(0, 0, False)
        logging.getLogger("hvuio.test").error("lost\nit")
        logging.getLogger("hvuio.test").info("not shown")
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino + 1}")   # another stream
        configure(0, 0, False)
        logging.getLogger("hvuio.test").warning("plain")
        configure(0, 0, False)
    assert (tmp_path / "journal").read_text() == "<3>ERROR hvuio.test: lost | it\nWARNING hvuio.test: plain\n"


def test_progress_lines_go_to_stderr_with_v_and_nowhere_without(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    with SimKernel(tmp_path, "6.17", nics=2, ifnames=["eth0", "eth1"]) as k:
        code, out, err = run_main(capsys, "--sysroot", str(tmp_path), "bind", "eth0", "--force")
        assert code == 0 and "Binding" not in err, err        # stderr is no terminal here: quiet
        code, out, err = run_main(capsys, "--sysroot", str(tmp_path), "bind", "eth1", "--force", "-v")
        assert code == 0, err
        steps = [line for line in err.splitlines() if line.startswith("Binding")]
        assert steps == [f"Binding {k.device('eth1').guid} (eth1) to uio_hv_generic (driver_override); "
                         "waiting for the kernel..."]
        assert "Binding" not in out
        code, out, err = run_main(capsys, "--sysroot", str(tmp_path), "-v", "unbind", "eth1", "-q")
        assert code == 0 and "Giving" not in err, err           # -q wins over -v for progress


def test_progress_never_reaches_json_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with SimEnvironment(tmp_path, profile="6.17", nics=1) as env:
        bind_device(env.sysroot, env.nics[0].guid, force=True)
        code, out, err = run_main(capsys, "--sysroot", str(env.sysroot), "up", env.nics[0].guid, "--once",
                                  "--json", "-v")
        assert code == 0, err
        assert [json.loads(line)["event"] for line in out.splitlines()] == ["ready", "down"]
        assert f"Bringing up {env.nics[0].guid}: opening it" in err


def test_progress_is_shown_on_a_terminal() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Tty()
    old = sys.stderr
    sys.stderr = stream
    try:
        configure(0, 0, False)
        logging.getLogger(PROGRESS_LOGGER).info("Step one...")
        configure(0, 1, False)
        logging.getLogger(PROGRESS_LOGGER).info("Step two...")
    finally:
        sys.stderr = old
        configure(0, 0, False)
    assert stream.getvalue() == "Step one...\n"


def test_help_shows_the_exit_code_table_and_completion() -> None:
    res = CliRunner().invoke(cli, ["--help"])
    assert res.exit_code == 0
    lines = [line.strip() for line in res.output.splitlines()]
    for code, meaning in EXIT_CODES:
        assert f"{code}  {meaning}" in lines
    assert 'eval "$(_HVUIO_COMPLETE=bash_source hvuio)"' in lines
    assert "_HVUIO_COMPLETE=bash_source hvuio" in (ROOT / "README.md").read_text()


def test_shell_completion_produces_a_script() -> None:
    env = {**child_env(), "_HVUIO_COMPLETE": "bash_source"}
    proc = hvuio_module(env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "_hvuio_completion()" in proc.stdout and "complete -o nosort -F _hvuio_completion hvuio" in proc.stdout
    env = {**child_env(), "_HVUIO_COMPLETE": "bash_complete", "COMP_WORDS": "hvuio doc", "COMP_CWORD": "1"}
    proc = hvuio_module(env=env, timeout=60)
    assert proc.returncode == 0 and "plain,doctor" in proc.stdout, proc.stdout + proc.stderr


def _smoke_tree(tmp_path: Path, test_body: str) -> Path:
    """A copy of the VM smoke script in a tree whose machine set-up does nothing and whose real-VM
    test module holds `test_body`; `id` on PATH says root."""
    root = tmp_path / "repo"
    (root / "scripts").mkdir(parents=True)
    (root / "tests/e2e").mkdir(parents=True)
    shutil.copy(ROOT / "scripts/vm_smoke.sh", root / "scripts/vm_smoke.sh")
    setup = root / "scripts/setup-machine.sh"
    setup.write_text("#!/bin/sh\nexit 0\n")
    (root / "pytest.ini").write_text("[pytest]\nmarkers =\n    real_vm: needs a real VM\n")
    (root / "tests/e2e/test_real_vm.py").write_text("import pytest\n\npytestmark = pytest.mark.real_vm\n\n"
                                                    + test_body)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "id").write_text("#!/bin/sh\necho 0\n")
    (bin_dir / "python3").symlink_to(sys.executable)
    for f in (setup, bin_dir / "id", root / "scripts/vm_smoke.sh"):
        f.chmod(f.stat().st_mode | stat.S_IXUSR)
    return root


def _smoke(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**child_env(), "PATH": f"{root.parent / 'bin'}:{os.environ['PATH']}", "HVUIO_TEST_NIC": "eth1"}
    return subprocess.run(["bash", str(root / "scripts/vm_smoke.sh")], capture_output=True, text=True,
                          env=env, timeout=120, check=False)


def test_vm_smoke_fails_when_every_test_skipped(tmp_path: Path) -> None:
    root = _smoke_tree(tmp_path, "def test_a():\n    pytest.skip('not a Hyper-V VM')\n")
    proc = _smoke(root)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Error: every real-VM test was skipped: nothing was tested." in proc.stderr


def test_vm_smoke_passes_when_a_test_ran(tmp_path: Path) -> None:
    root = _smoke_tree(tmp_path, "def test_a():\n    pytest.skip('x')\n\n\ndef test_b():\n    assert True\n")
    proc = _smoke(root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
