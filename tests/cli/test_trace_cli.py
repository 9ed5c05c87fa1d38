"""`hvuio trace FILE` and `hvuio up --trace FILE`: the trace of a NIC brought up on the emulator
(no root) decodes into lines and JSON objects; a file that is missing, foreign or truncated is one
sentence and a hint (after the records read before a truncation), never a traceback; a symbolic
link in the trace's place is refused."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from hvuio.sim.vsp.host import SimEnvironment
from hvuio.trace.pcapng import IF_FRAMES, OUTBOUND, enhanced_packet, file_header
from support.bound_sim import bound_sim
from support.cli import assert_user_error, hvuio_module, run_main


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[SimEnvironment]:
    with bound_sim(tmp_path / "sys") as env:
        yield env


@pytest.fixture
def traced(sim: SimEnvironment, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """The trace of `hvuio up --once --json --trace FILE`, with the Down event's trace counters checked."""
    path = tmp_path / "up.pcapng"
    code, out, err = run_main(capsys, "--sysroot", str(sim.sysroot), "up", sim.nics[0].guid, "--once", "--json",
                              "--trace", str(path))
    assert code == 0, err
    down = [json.loads(line) for line in out.splitlines() if '"down"' in line][0]
    assert down["counters"]["trace_control"] > 10 and down["counters"]["trace_bytes"] == path.stat().st_size
    return path


def test_up_trace_decodes_into_readable_lines(traced: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main(capsys, "trace", str(traced))
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].endswith("-> host NVSP INIT v6.1")
    assert any(" | RNDIS INITIALIZE req 1 v1.0 max_xfer " in line for line in lines)
    assert any("RNDIS QUERY_COMPLETE req " in line and "OID_802_3_PERMANENT_ADDRESS -> 00:15:5d:" in line
               for line in lines)
    assert lines[-1].endswith("NVSP REVOKE_SEND_BUF id 0x0")


def test_trace_json_is_one_object_per_record(traced: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main(capsys, "trace", str(traced), "--json")
    assert code == 0, err
    objs = [json.loads(line) for line in out.splitlines()]
    assert objs[0]["nvsp"] == {"type": "INIT", "ver_min": "v6.1", "ver_max": "v6.1"}
    assert {o["kind"] for o in objs} == {"control"} and all(o["direction"] in ("in", "out") for o in objs)


def test_control_only_leaves_the_frames_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "frames.pcapng"
    path.write_bytes(file_header() + enhanced_packet(IF_FRAMES, 5, OUTBOUND, bytes(60)))
    assert run_main(capsys, "trace", str(path))[1].count("\n") == 1
    assert run_main(capsys, "trace", str(path), "--control-only")[1] == ""


def test_a_truncated_trace_shows_what_it_holds_then_one_sentence(traced: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.pcapng"
    cut.write_bytes(traced.read_bytes()[:-30])
    proc = hvuio_module("trace", str(cut))
    assert_user_error(proc)
    assert "NVSP INIT v6.1" in proc.stdout and "is truncated" in proc.stderr


@pytest.mark.parametrize("content", [None, b"", b"\x7fELF" + bytes(100), "dir"])
def test_missing_empty_foreign_files_are_one_sentence(tmp_path: Path, content: bytes | str | None) -> None:
    path = tmp_path / "t.pcapng"
    if content == "dir":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    proc = hvuio_module("trace", str(path))
    assert_user_error(proc)
    assert proc.stdout == ""


def test_up_refuses_a_symbolic_link_in_the_traces_place(sim: SimEnvironment, tmp_path: Path) -> None:
    target = tmp_path / "precious"
    target.write_text("keep me")
    (tmp_path / "link.pcapng").symlink_to(target)
    proc = hvuio_module("--sysroot", str(sim.sysroot), "up", sim.nics[0].guid, "--once",
                        "--trace", str(tmp_path / "link.pcapng"))
    assert_user_error(proc)
    assert "symbolic link" in proc.stderr and target.read_text() == "keep me"
