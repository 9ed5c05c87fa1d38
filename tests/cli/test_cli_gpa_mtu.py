"""`hvuio up` / `hvuio demo`: --no-gpa and --mtu as a user meets them.

An MTU outside 68..65521 is one "Error:" sentence, a hint and exit 2, before any device is touched
(no host silently answering with 1500). `up --no-gpa` against the emulator (in-process, no root)
reports the TX path it used; the text form shows it with the MTU.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from hvuio.errors import UsageError
from hvuio.sim.vsp.host import SimEnvironment

from support.bound_sim import bound_sim
from support.cli import run_main


@pytest.mark.parametrize("mtu, words", [(50, "is below 68"), (67, "is below 68"), (0, "is below 68"),
                                        (-1, "is below 68"), (65522, "is above 65521")])
def test_up_mtu_outside_the_protocol_range_is_a_usage_error(capsys: pytest.CaptureFixture[str], mtu: int,
                                                            words: str) -> None:
    code, out, err = run_main(capsys, "--sysroot", "/nonexistent-hvuio-root", "up", "hveth0", "--mtu", str(mtu))
    assert code == UsageError.exit_code == 2
    assert out == ""
    lines = err.splitlines()
    assert lines[0].startswith(f"Error: --mtu {mtu} {words}")
    assert lines[1] == "Hint: Use --mtu 68 to 65521."
    assert "Traceback" not in err


def test_up_mtu_50_names_the_silent_1500_it_prevents(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main(capsys, "up", "hveth0", "--mtu", "50")
    assert code == 2
    assert err.splitlines()[0] == ("Error: --mtu 50 is below 68, the smallest MTU IPv4 and the protocol allow "
                                   "(a host would silently use its default of 1500 instead)")


def test_demo_mtu_50_is_refused_before_it_needs_root(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main(capsys, "demo", "--mtu", "50")
    assert code == 2
    assert err.startswith("Error: --mtu 50 is below 68")
    assert "root" not in err


def test_help_shows_the_gpa_switches(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("up", "demo"):
        code, out, _ = run_main(capsys, command, "--help")
        assert code == 0 and "--gpa / --no-gpa" in out


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[SimEnvironment]:
    with bound_sim(tmp_path) as env:
        yield env


def test_up_no_gpa_reports_the_send_buffer_path(sim: SimEnvironment, capsys: pytest.CaptureFixture[str],
                                                caplog: pytest.LogCaptureFixture) -> None:
    guid = sim.nics[0].guid
    code, out, err = run_main(capsys, "--sysroot", str(sim.sysroot), "up", guid, "--once", "--json", "--no-gpa")
    assert code == 0, err
    ready = json.loads(out.splitlines()[0])
    assert ready["event"] == "ready"
    assert ready["nic"]["tx_path"] == "send buffer (GPA-direct turned off: --no-gpa)"
    assert ready["nic"]["mtu"] == ready["nic"]["mtu_asked"] == 1500
    assert sim.host.wait_for(lambda: not sim.host.status()[guid]["open"])
    code, out, err = run_main(capsys, "--sysroot", str(sim.sysroot), "up", guid, "--once", "--no-gpa",
                              "--mtu", "9000")
    assert code == 0, err
    assert "TX path  send buffer (GPA-direct turned off: --no-gpa)" in out
    assert "MTU      6086 (asked 9000; without GPA-direct a send section carries at most 6086)" in out
    assert "MTU 6086 instead of the 9000 asked: without GPA-direct a send section carries at most 6086" in [
        r.getMessage() for r in caplog.records if r.levelname == "WARNING"]


def test_status_shows_the_tx_path_and_why_the_mtu_is_lower(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    from hvuio.nicinfo import NicInfo
    from hvuio.status import StatusFile

    info = NicInfo(device="guid-1", uio="uio0", relid=14, monitored=True, ring_size=0x40000,
                   nvsp_version=0x60001, ndis_version=0x6001E, rndis_version=(1, 0), mtu=1500,
                   mac=bytes(6), permanent_mac=bytes(6), recv_section_size=1806, recv_section_count=10,
                   send_section_size=6144, send_section_count=2730, control_sections=16, link_up=True,
                   tx_path="gpa-direct (hugetlb 2 MiB pages)", mtu_asked=9000, host_max_frame=1500,
                   mtu_limited_by="the host allows at most 1500")
    state = StatusFile(tmp_path, "guid-1")
    state.write(nic=info.to_dict(), counters={})
    try:
        code, out, err = run_main(capsys, "--sysroot", str(tmp_path), "status")
    finally:
        state.remove()
    assert code == 0, err
    assert "TX path  gpa-direct (hugetlb 2 MiB pages)" in out
    assert "MTU      1500 (asked 9000; the host allows at most 1500)" in out
