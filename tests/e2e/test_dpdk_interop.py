"""DPDK 22.11's netvsc PMD (Debian 12's packages) as a foreign guest of the emulator: the echo
program of tests/support/dpdk_echo.c, built against the installed runtime and libdpdk-dev's
headers, and how it reports a start it cannot make (one reason line, its exit status).

Needs the DPDK runtime plus the headers that scripts/setup-machine.sh provides (skipped, saying
so, where apt could not get them).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from support import dpdk

pytestmark = pytest.mark.skipif(dpdk.skip_reason() is not None, reason=str(dpdk.skip_reason()))

ABSENT_GUID = "00000000-0000-4000-8000-000000000000"


@pytest.fixture(scope="module")
def echo_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return dpdk.build_echo(tmp_path_factory.mktemp("dpdk"))


def _run_echo(binary: Path, *app_args: str) -> subprocess.CompletedProcess[str]:
    """The echo program outside the emulator: with no VMBus device, EAL finds no port."""
    argv = [str(binary), *dpdk.eal_args(ABSENT_GUID), "--", *app_args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def test_echo_without_a_device_exits_with_one_reason(echo_binary: Path) -> None:
    proc = _run_echo(echo_binary, "--ip", dpdk.GUEST_IP)
    assert proc.returncode == 2 and proc.stdout == "", proc.stdout + proc.stderr
    reasons = [line for line in proc.stderr.splitlines() if line.startswith("dpdk_echo: ")]
    assert len(reasons) == 1 and "no ethdev port" in reasons[0], proc.stderr


@pytest.mark.parametrize("args", [("--queues", "2"), ("--ip", "198.18.0.300"), ("--ip", dpdk.GUEST_IP, "--queues", "0"),
                                  ("--ip", dpdk.GUEST_IP, "--bogus")])
def test_echo_refuses_bad_arguments(echo_binary: Path, args: tuple[str, ...]) -> None:
    proc = _run_echo(echo_binary, *args)
    assert proc.returncode == 64 and proc.stdout == "", proc.stdout + proc.stderr
    assert sum(line.startswith("dpdk_echo: ") for line in proc.stderr.splitlines()) == 1, proc.stderr
