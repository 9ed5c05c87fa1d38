"""The emulator's command line when things go wrong: `sim stop` after the daemon died (killed -9,
or killed while `sim stop` signalled it) says so and removes what it left, so `sim start` works
again; every hint that names a command carries the --sysroot it needs; a permission problem is
reported as one, not as an emulator to start; `sim start --wire` names its namespace and the
address to reach."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from hvuio.netdev import netns
from hvuio.sim.daemon import pid_path
from hvuio.sim.kernel.bus import SimKernel
from hvuio.sim.kernel.memory import MIB
from hvuio.sim.kernel.shm import MARKER
from hvuio.sim.kernel.tree import SimTree
from hvuio.sim.net import DEFAULT_HOST_ADDRESS

from support.cli import assert_user_error, hvuio_main
from support.namespaces import netns_skip_reason
from support.waiting import wait_until

NOBODY = 65534

# Holds the daemon lock of a sysroot as the daemon does, and dies of SIGTERM without removing
# anything: a daemon that was being killed (-9) as `sim stop` signalled it.
_DYING_DAEMON = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, f"{os.getpid()}\\n".encode())
print("locked", flush=True)
time.sleep(600)
"""


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return True


def _tree_left(root: Path) -> list[str]:
    return [name for name in (MARKER, "sys", "dev", "run/hvuio-sim") if os.path.lexists(root / name)]


def test_stop_after_kill_9_says_so_and_start_works_again(tmp_path: Path) -> None:
    root = tmp_path / "root"
    start = hvuio_main("--sysroot", str(root), "sim", "start", "--no-host", "--guest-memory", "0")
    assert start.returncode == 0, start.stderr
    pid = int(pid_path(root).read_text())
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: _gone(pid), f"killed sim kernel pid {pid} to exit")
    stop = hvuio_main("--sysroot", str(root), "sim", "stop")
    assert stop.returncode == 0 and "had died" in stop.stdout and "removed what it left" in stop.stdout, stop
    assert "stopped" not in stop.stdout and _tree_left(root) == []
    again = hvuio_main("--sysroot", str(root), "sim", "start", "--no-host", "--guest-memory", "0")
    assert again.returncode == 0, again.stderr
    assert hvuio_main("--sysroot", str(root), "sim", "stop").returncode == 0


def test_stop_of_a_daemon_that_dies_without_cleaning_up_removes_its_tree(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir(mode=0o700)
    SimTree(root).create("6.17", [], 2 * MIB)
    holder = subprocess.Popen([sys.executable, "-c", _DYING_DAEMON, str(pid_path(root))],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        stop = hvuio_main("--sysroot", str(root), "sim", "stop")
        assert stop.returncode == 0, stop.stderr
        assert "ended without removing its tree" in stop.stdout and "removed what it left" in stop.stdout, stop
        assert _tree_left(root) == []
    finally:
        holder.kill()
        holder.wait()
    again = hvuio_main("--sysroot", str(root), "sim", "start", "--no-host", "--guest-memory", "0")
    assert again.returncode == 0, again.stderr
    assert hvuio_main("--sysroot", str(root), "sim", "stop").returncode == 0


def test_hints_name_the_sysroot(tmp_path: Path) -> None:
    root = tmp_path / "root"
    nothing = hvuio_main("--sysroot", str(root), "sim", "stop")
    assert_user_error(nothing, 2)
    assert f"'hvuio --sysroot {root} sim start'" in nothing.stderr, nothing.stderr
    status = hvuio_main("--sysroot", str(root), "sim", "status")
    assert_user_error(status, 2)
    assert f"'hvuio --sysroot {root} sim start'" in status.stderr, status.stderr
    root.mkdir(mode=0o700)
    kernel = SimKernel(root, "6.17", nics=1)     # a tree whose kernel is gone, as a dead daemon leaves it
    kernel.start()
    kernel.stop(remove_tree=False)
    refused = hvuio_main("--sysroot", str(root), "sim", "start", "--no-host")
    assert_user_error(refused, 2)
    assert f"'hvuio --sysroot {root} sim stop'" in refused.stderr, refused.stderr
    bind = hvuio_main("--sysroot", str(root), "bind", "hveth0")
    assert_user_error(bind)
    assert "nobody reads" in bind.stderr and f"'hvuio --sysroot {root} sim start'" in bind.stderr, bind.stderr
    missing = hvuio_main(f"--sysroot={root}", "bind", "hveth7")
    assert_user_error(missing)
    assert f"Run 'hvuio --sysroot {root} list'" in missing.stderr, missing.stderr
    assert hvuio_main("--sysroot", str(root), "sim", "stop").returncode == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a command as another user")
def test_permission_problem_is_not_an_emulator_to_start() -> None:
    """Another user's `sim status` of a running emulator whose tree it may enter but whose control
    socket is root's: permission denied, not 'start it'."""
    as_nobody = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", sys.executable, "-P", "-c"]
    probe = subprocess.run([*as_nobody, "import hvuio.cli"], capture_output=True, text=True, timeout=60, cwd="/")
    if probe.returncode != 0:
        pytest.skip(f"user {NOBODY} cannot run this Python's hvuio (an install under a private directory): "
                    f"{probe.stderr.strip().splitlines()[-1:]}")
    with tempfile.TemporaryDirectory(dir="/tmp") as base:   # a path the other user can walk
        os.chmod(base, 0o755)
        root = Path(base) / "root"
        start = hvuio_main("--sysroot", str(root), "sim", "start", "--nics", "1", "--guest-memory", "0")
        assert start.returncode == 0, start.stderr
        try:
            os.chmod(root, 0o755)
            code = "import sys; from hvuio.cli import main; main(sys.argv[1:])"
            proc = subprocess.run([*as_nobody, code, "--sysroot", str(root), "sim", "status"],
                                  capture_output=True, text=True, timeout=60, cwd="/")
        finally:
            stop = hvuio_main("--sysroot", str(root), "sim", "stop")
        assert stop.returncode == 0, stop.stderr
    assert_user_error(proc, 2)
    assert "permission denied on the emulated host's control socket" in proc.stderr, proc.stderr
    assert "sim start" not in proc.stderr, proc.stderr


def test_start_wire_names_its_namespace_and_peer(tmp_path: Path) -> None:
    reason = netns_skip_reason()
    if reason is not None:
        pytest.skip(reason)
    root = tmp_path / "root"
    start = hvuio_main("--sysroot", str(root), "sim", "start", "--wire", "--guest-memory", "0")
    try:
        assert start.returncode == 0, start.stderr
        wire = [line for line in start.stdout.splitlines() if line.startswith("wire: ")]
        assert len(wire) == 1, start.stdout
        name = wire[0].split("network namespace ")[1].split(",")[0]
        assert name.startswith(netns.PREFIX) and netns.exists(name), wire
        assert f"with {DEFAULT_HOST_ADDRESS}" in wire[0] and "ping 198.18.0.1" in wire[0], wire
        assert "198.18.0.1/24" in netns.run(name, ["ip", "-4", "-o", "addr", "show"]).stdout
    finally:
        stop = hvuio_main("--sysroot", str(root), "sim", "stop")
    assert stop.returncode == 0 and "stopped" in stop.stdout, stop
    assert not netns.exists(name)


def _listed(root: Path) -> dict[str, Any]:
    """`hvuio list --json` of the emulated tree: NIC name -> its entry, plus "vpci" -> the
    pass-through devices' entries (a list)."""
    res = hvuio_main("--sysroot", str(root), "list", "--json")
    assert res.returncode == 0, res.stderr
    devices = json.loads(res.stdout)["devices"]
    out: dict[str, Any] = {d["netdevs"][0]["name"]: d for d in devices if d["class"] == "nic"}
    out["vpci"] = [d for d in devices if d["class"] == "vpci"]
    return out


def test_start_vf_pairs_each_nic_with_its_veth_and_vf_remove_add_takes_both_away_and_back(tmp_path: Path) -> None:
    """`sim start --wire --vf`: per NIC one VF, seen by `hvuio list` as the NIC's pass-through
    device whose VF netdev is the veth that carries the frames (same name, same MAC)."""
    reason = netns_skip_reason()
    if reason is not None:
        pytest.skip(reason)
    root = tmp_path / "root"
    start = hvuio_main("--sysroot", str(root), "sim", "start", "--wire", "--vf", "--nics", "2", "--guest-memory", "0")
    try:
        assert start.returncode == 0, start.stderr
        listed = _listed(root)
        assert sorted(k for k in listed if k != "vpci") == ["hveth0", "hveth1"]
        for serial, name in ((1, "hveth0"), (2, "hveth1")):
            vf = listed[name]["vf"]
            assert vf is not None and vf["name"] == f"hvvf{serial}", vf
            shown = netns.ip("-br", "link", "show", vf["name"]).stdout.split()  # the real veth end
            assert shown[0].split("@")[0] == vf["name"] and shown[2] == vf["mac"] == listed[name]["netdevs"][0]["mac"], shown
        assert len(listed["vpci"]) == 2

        removed = hvuio_main("--sysroot", str(root), "sim", "vf", "remove", "hveth0")
        assert removed.returncode == 0, removed.stderr
        listed = _listed(root)
        assert listed["hveth0"]["vf"] is None and listed["hveth1"]["vf"]["name"] == "hvvf2"
        assert [d["vf"]["name"] for d in listed["vpci"]] == ["hvvf2"]  # hveth0's pass-through device is gone
        assert netns.ip("link", "show", "hvvf1", check=False).returncode != 0  # and its veth

        added = hvuio_main("--sysroot", str(root), "sim", "vf", "add", "hveth0")
        assert added.returncode == 0, added.stderr
        listed = _listed(root)
        assert listed["hveth0"]["vf"]["name"] == "hvvf1" and len(listed["vpci"]) == 2
        assert netns.ip("link", "show", "hvvf1", check=False).returncode == 0
    finally:
        stop = hvuio_main("--sysroot", str(root), "sim", "stop")
    assert stop.returncode == 0, stop.stderr
    assert netns.ip("link", "show", "hvvf1", check=False).returncode != 0  # the stop deletes the veths
