"""Running the `hvuio` command line from tests, and the contract of its user errors.

In-process: `run_main(capsys, *args)` calls hvuio.cli.main and returns (exit code, stdout,
stderr). As a child process: `hvuio_main(*args)` runs main(sys.argv[1:]) in `python -c`,
`hvuio_module(*args)` runs `python -m hvuio`; both start the same Python as the tests (the
installed hvuio) and never raise on a non-zero exit; `nic_guid(sysroot)` is the instance GUID of
the first NIC `hvuio list --json` shows there. `child_env()` is this environment without
the variables that change how hvuio reports (HVUIO_DEBUG) or where it looks (HVUIO_SYSROOT).
`assert_user_error(proc)` checks what every refusal must look like: one "Error:" sentence, a
"Hint:", a non-zero exit that is not the internal-error code, no traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

INTERNAL = 70  # cli.main's exit code for an exception it did not expect


def child_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("HVUIO_DEBUG", "HVUIO_SYSROOT")}


def run_main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    from hvuio.cli import main

    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def hvuio_main(*args: str) -> subprocess.CompletedProcess[str]:
    code = "import sys; from hvuio.cli import main; main(sys.argv[1:])"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60)


def hvuio_module(*args: str, env: dict[str, str] | None = None,
                 timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hvuio", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, check=False)


def nic_guid(sysroot: str | os.PathLike[str]) -> str:
    from hvuio.device.classes import NIC_CLASS

    listed = hvuio_main("--sysroot", str(sysroot), "list", "--json")
    assert listed.returncode == 0, listed.stderr
    return str(next(d["device_id"] for d in json.loads(listed.stdout)["devices"] if d["class_id"] == NIC_CLASS))


def assert_user_error(proc: subprocess.CompletedProcess[str], exit_code: int | None = None) -> None:
    """One 'Error:' sentence, a 'Hint:', a non-zero code that is not the internal-error code."""
    err = proc.stderr
    assert proc.returncode != 0, err
    assert proc.returncode != INTERNAL, err
    assert "Traceback" not in err and "internal error" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("Error: ")]
    hints = [line for line in err.splitlines() if line.startswith("Hint: ") and len(line) > len("Hint: ")]
    assert len(errors) == 1 and hints, err
    if exit_code is not None:
        assert proc.returncode == exit_code, err
