"""The emulated VM's guest-physical memory file: made at start with the map files' mode, sized by
`sim start --guest-memory`, removed at stop and by the leftovers clean-up."""

from __future__ import annotations

import os
import signal
import stat
from pathlib import Path

import pytest

from hvuio.sim.daemon import remove_leftovers
from hvuio.sim.kernel.bus import SimKernel
from hvuio.sim.kernel.memory import CHUNK_SIZE, GUEST_PFN_BASE, MIB, check_size_mib, guest_memory_path, pfn_offset
from hvuio.sim.kernel.tree import SimTree

from support.cli import assert_user_error, hvuio_main
from support.waiting import process_gone, wait_until


def test_the_kernel_makes_a_private_sparse_file_and_removes_it(tmp_path: Path) -> None:
    with SimKernel(tmp_path, "6.17", nics=0) as k:
        path = k.guest_memory_path()
        assert path == guest_memory_path(tmp_path) == tmp_path / "run/hvuio-sim/guest-memory"
        st = path.stat()
        assert st.st_size == 64 * MIB and stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == os.geteuid()
        assert st.st_blocks * 512 < 64 * MIB   # sparse: no memory until the guest writes
    assert not path.exists()


def test_guest_memory_zero_is_no_file_and_odd_sizes_are_refused(tmp_path: Path) -> None:
    with SimKernel(tmp_path, "6.17", nics=0, guest_memory=0) as k:
        assert k.guest_memory_path() is None and not guest_memory_path(tmp_path).exists()
    with pytest.raises(ValueError, match="multiple"):
        SimKernel(tmp_path, "6.17", nics=0, guest_memory=3 * MIB).start()
    assert check_size_mib(64) is None and check_size_mib(0) is None
    assert "multiple of 2 MiB" in (check_size_mib(3) or "") and "negative" in (check_size_mib(-2) or "")


def test_pfn_offset_checks_every_page_against_the_file() -> None:
    size = 2 * CHUNK_SIZE
    assert pfn_offset(GUEST_PFN_BASE, size) == 0
    assert pfn_offset(GUEST_PFN_BASE + 1023, size) == 1023 * 4096
    for bad in (0, GUEST_PFN_BASE - 1, GUEST_PFN_BASE + 1024, 1 << 63):
        assert pfn_offset(bad, size) is None


def test_leftovers_of_a_dead_kernel_include_its_guest_memory(tmp_path: Path) -> None:
    SimTree(tmp_path).create("6.17", [], 4 * MIB)      # as a killed daemon leaves it
    assert guest_memory_path(tmp_path).exists()
    removed = remove_leftovers(tmp_path)
    assert "run/hvuio-sim/guest-memory" in removed and not guest_memory_path(tmp_path).exists()


@pytest.mark.parametrize("mib,why", [("3", "not a multiple of 2 MiB"), ("-2", "negative"),
                                     ("many", "not a valid integer")])
def test_sim_start_refuses_guest_memory_that_is_not_whole_huge_pages(tmp_path: Path, mib: str, why: str) -> None:
    root = tmp_path / "root"
    proc = hvuio_main("--sysroot", str(root), "sim", "start", "--no-host", "--guest-memory", mib)
    assert proc.returncode == 2 and why in proc.stderr, proc.stderr
    if mib != "many":                                  # click's own refusal has no hint line
        assert_user_error(proc, 2)
    assert not (root / "sys").exists()


def test_sim_start_sizes_the_file_and_stop_removes_it(tmp_path: Path) -> None:
    root = tmp_path / "root"
    start = hvuio_main("--sysroot", str(root), "sim", "start", "--no-host", "--guest-memory", "8")
    try:
        assert start.returncode == 0, start.stderr
        assert guest_memory_path(root).stat().st_size == 8 * MIB
    finally:
        stop = hvuio_main("--sysroot", str(root), "sim", "stop")
    assert stop.returncode == 0, stop.stderr
    assert not guest_memory_path(root).exists()
    start = hvuio_main("--sysroot", str(root), "sim", "start", "--no-host", "--guest-memory", "0")
    try:
        assert start.returncode == 0, start.stderr
        assert not guest_memory_path(root).exists() and (root / "sys").is_dir()
    finally:
        assert hvuio_main("--sysroot", str(root), "sim", "stop").returncode == 0


def test_sim_stop_after_a_kill_removes_the_guest_memory(tmp_path: Path) -> None:
    root = tmp_path / "root"
    start = hvuio_main("--sysroot", str(root), "sim", "start", "--no-host")
    assert start.returncode == 0, start.stderr
    pid = int((root / "run/hvuio-sim/kernel.pid").read_text())
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: process_gone(pid), f"killed sim kernel pid {pid} to exit")
    assert guest_memory_path(root).exists()
    stop = hvuio_main("--sysroot", str(root), "sim", "stop")
    assert stop.returncode == 0 and "guest-memory" in stop.stdout, stop.stderr
    assert not guest_memory_path(root).exists()
