"""The README's emulator walk-through, run as written (as root): the emulator with its wire, a
bound NIC, `hvuio up` with its tap in a namespace, and a ping that crosses guest, emulated host
and wire. Only the sysroot and the guest namespace's name are replaced, so parallel runs never
meet. Needs root, /dev/net/tun and iproute2 (skipped with the reason otherwise)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from hvuio.netdev import netns

from support.cli import child_env, hvuio_main
from support.namespaces import NetnsFactory

README = Path(__file__).resolve().parents[2] / "README.md"


def walkthrough() -> str:
    """The first shell block of the README's "The emulator" section."""
    text = README.read_text()
    section = text[text.index("\n## The emulator\n"):]
    match = re.search(r"```sh\n(.*?)```", section, re.S)
    assert match is not None, "README: no shell block in 'The emulator'"
    return match.group(1)


def test_readme_block_ends_with_traffic_crossing() -> None:
    script = walkthrough()
    assert "--wire" in script and re.search(r"ping -c \d+ 198\.18\.0\.1", script), script


def test_readme_emulator_walkthrough_runs_as_written(tmp_path: Path, netns_factory: NetnsFactory) -> None:
    root = tmp_path / "hvsim"
    guest = netns.random_name("rdme")
    netns_factory.defer(f"netns {guest}", lambda: netns.delete(guest))
    script = walkthrough().replace("/run/hvsim", str(root)).replace("hvguest", guest)
    env = child_env()
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    log = tmp_path / "walkthrough.out"
    with open(log, "w") as sink:   # a file, not a pipe: a background `up` left running cannot hold it
        proc = subprocess.Popen(["bash", "-e", "-c", script], stdout=sink, stderr=subprocess.STDOUT,
                                env=env, cwd="/", start_new_session=True)
    try:
        proc.wait(timeout=180)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)   # the script's session: `up`, if a step failed
        proc.wait()
        if (root / "sys").exists():
            hvuio_main("--sysroot", str(root), "sim", "stop")
    out = log.read_text()
    assert proc.returncode == 0, out
    assert re.search(r"wire: network namespace hvu-net-\S+, tap \S+ with 198\.18\.0\.1/24", out), out
    assert "bytes from 198.18.0.1" in out, out
    assert "stopped; tree under" in out and not netns.exists(guest), out
