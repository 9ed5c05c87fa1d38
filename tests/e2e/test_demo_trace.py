"""`hvuio demo --trace FILE` (root): the pcapng `hvuio up` wrote holds the frames both ways as
ordinary Ethernet packets (tcpdump -r reads it when tcpdump is installed; the pcapng reader
always) and the control messages `hvuio trace` decodes (NVSP init, RNDIS initialize); with a small
--trace-max-mb the file stops at the cap and says how much it left out."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from support.cli import hvuio_module
from support.namespaces import require_netns as _need_root

from hvuio.trace.pcapng import INBOUND, OUTBOUND, is_control, read_trace

DEMO = [sys.executable, "-c", "from hvuio.cli import main; main()", "demo"]


def _demo(*args: str) -> dict[str, Any]:
    proc = subprocess.run([*DEMO, "--json", *args], capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_demo_trace_holds_frames_both_ways_and_the_control_messages(tmp_path: Path) -> None:
    _need_root()
    path = tmp_path / "demo.pcapng"
    result = _demo("--tcp-mib", "2", "--trace", str(path))
    tr, dp = result["trace"], result["datapath_counters"]
    assert tr["file"] == str(path) and tr["trace_bytes"] == path.stat().st_size
    assert tr["trace_frames_capped"] == tr["trace_control_capped"] == tr["trace_write_errors"] == 0
    recs = list(read_trace(path.read_bytes()))
    frames = [r for r in recs if not is_control(r)]
    assert len(frames) == tr["trace_frames"] and len(recs) - len(frames) == tr["trace_control"]
    inbound = [f for f in frames if f.direction == INBOUND]
    assert len(inbound) == dp["rx_packets"] + dp.get("rx_tap_drop", 0)  # every frame the pump wrote to the tap
    assert any(f.direction == OUTBOUND for f in frames)
    icmp = [(f.direction, f.data[14 + 20]) for f in frames if f.data[12:14] == b"\x08\x00" and f.data[23] == 1]
    assert (OUTBOUND, 8) in icmp and (INBOUND, 0) in icmp  # the demo's ping: echo request out, reply in

    proc = hvuio_module("trace", str(path), "--control-only")
    assert proc.returncode == 0, proc.stderr
    assert "-> host NVSP INIT v6.1" in proc.stdout and "| RNDIS INITIALIZE req 1 " in proc.stdout
    tcpdump = shutil.which("tcpdump") or shutil.which("tcpdump", path="/usr/sbin:/usr/bin")
    if tcpdump:  # scripts/setup-machine.sh installs it
        seen = subprocess.run([tcpdump, "-nn", "-r", str(path), "not ether proto 0x88b5"],
                              capture_output=True, text=True, timeout=60, check=True)
        assert len(seen.stdout.splitlines()) == len(frames)


def test_demo_trace_stops_at_the_cap_and_counts_what_it_left_out(tmp_path: Path) -> None:
    _need_root()
    path = tmp_path / "capped.pcapng"
    result = _demo("--tcp-mib", "8", "--trace", str(path), "--trace-max-mb", "1")
    tr = result["trace"]
    assert path.stat().st_size == tr["trace_bytes"] <= 1 << 20
    assert tr["trace_frames_capped"] > 0
    assert len(list(read_trace(path.read_bytes()))) == tr["trace_frames"] + tr["trace_control"]


def test_demo_text_names_the_trace_and_how_to_read_it(tmp_path: Path) -> None:
    _need_root()
    path = tmp_path / "text.pcapng"
    proc = subprocess.run([*DEMO, "--tcp-mib", "1", "--trace", str(path)], capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    found = re.search(rf"Trace {re.escape(str(path))}: (\d+) frames, (\d+) control messages, (\d+) bytes "
                      rf"\('hvuio trace {re.escape(str(path))}'\)\.", proc.stdout)
    assert found, proc.stdout
    assert int(found.group(3)) == path.stat().st_size
