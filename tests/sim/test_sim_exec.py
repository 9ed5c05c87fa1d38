"""`hvuio sim exec`: the namespace it makes and what an unchanged driver sees in it.

A daemon (`sim start --no-host`) serves the tree; its NIC is bound from outside; then
tests/support/exec_probe.py runs inside `sim exec` and reports what it found at the real paths
(/sys/bus/vmbus, /sys/class/uio, /dev/uioN: open, stat, mmap by offset, bad offsets,
irqcontrol), and its C sibling tests/support/exec_probe.c does the same through the C library
as DPDK's vmbus bus calls it. Outside, the host's /sys and mount table must be as before. Exit
status and signals are the command's; a wheel built from the sources carries the preload
library; a foreign driver (IOVA = VA) sends GPA-direct from its own memory under
`--guest-memory-mode proc`. Needs root and mount namespaces (skipped with the reason otherwise).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from hvuio.device.classes import NIC_CLASS
from hvuio.sim.exec import ENV_SYSROOT, child_env, preload_library
from hvuio.sim.pcap import PcapSource

from support import foreign_guest
from support.cli import child_env as cli_env
from support.cli import hvuio_main as hvuio
from support.cli import nic_guid
from support.sim_exec import C_PROBE, PROBE, exec_skip_reason


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    with running_tree(tmp_path / "sim") as found:
        yield found


@contextlib.contextmanager
def running_tree(root: Path) -> Iterator[tuple[Path, str]]:
    """(root, NIC GUID) of a `sim start --no-host` daemon serving `root`; stopped afterwards."""
    reason = exec_skip_reason()
    if reason is not None:
        pytest.skip(reason)
    started = hvuio("--sysroot", str(root), "sim", "start", "--no-host")
    assert started.returncode == 0, started.stderr
    try:
        guid = nic_guid(root)
        yield root, guid
    finally:
        stopped = hvuio("--sysroot", str(root), "sim", "stop")
        assert stopped.returncode == 0, stopped.stderr


def in_tree(root: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return hvuio("--sysroot", str(root), "sim", "exec", "--", *argv)


def host_view() -> tuple[list[str], list[str], bool, bool, list[str]]:
    mounts = [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if "hvuio" in line]
    return (sorted(os.listdir("/sys/bus")), sorted(os.listdir("/sys/class")),
            os.path.exists("/sys/bus/vmbus/devices"), os.path.exists("/dev/uio0"), mounts)


def test_the_probe_finds_the_emulated_device_at_the_real_paths(tree: tuple[Path, str]) -> None:
    root, guid = tree
    before = host_view()
    bound = hvuio("--sysroot", str(root), "bind", guid, "--force")
    assert bound.returncode == 0, bound.stderr
    ran = in_tree(root, sys.executable, "-P", str(PROBE), str(root), guid)
    assert ran.returncode == 0, ran.stderr
    seen = json.loads(ran.stdout)
    assert seen["uio"] == "uio0" and seen["driver"] == "uio_hv_generic"
    assert seen["class_id"] == "{" + NIC_CLASS + "}"
    assert seen["class_uio_resolves"] and seen["ring_resolves"]
    assert seen["dev_is_chardev"] and seen["dev_rdev"] == seen["dev_file"] and seen["dev_access"]
    assert seen["missing_dev_errno"] == errno.ENOENT
    assert seen["maps_match_backing"] == {str(k): True for k in range(5)}
    assert seen["bad_index_errno"] == errno.EINVAL
    assert seen["too_long_errno"] == errno.EINVAL
    assert seen["dup_maps"] and seen["inherited_maps"] and seen["plain_file_maps"]
    assert seen["sys_bus"] == sorted({*before[0], "vmbus"}) and seen["sys_class"] == sorted({*before[1], "uio"})
    assert seen["class_net_live"]
    assert seen["irqcontrol_write"] == 4
    assert seen["nonblocking_read"] == "EAGAIN"
    for k in range(5):  # what the probe wrote through its mappings is in the tree's files
        token = f"probe map{k}".encode()
        data = (root / "run/hvuio-sim/uio0" / f"map{k}").read_bytes()
        size = int((root / f"sys/class/uio/uio0/maps/map{k}/size").read_text(), 0)
        assert data[size - len(token):size] == token
    assert host_view() == before


def test_a_sysroot_too_long_for_a_socket_address(tmp_path: Path) -> None:
    """S/dev/uio0 longer than sockaddr_un holds: opened through a directory fd, and the fd is
    still recognised by mmap (its peer's address is the emulator's /proc/self/fd/N/uio0)."""
    root = tmp_path / ("d" * 100) / "sim"
    root.parent.mkdir()
    with running_tree(root) as (_, guid):
        assert hvuio("--sysroot", str(root), "bind", guid, "--force").returncode == 0
        ran = in_tree(root, sys.executable, "-P", str(PROBE), str(root), guid)
        assert ran.returncode == 0, ran.stderr
        seen = json.loads(ran.stdout)
        assert seen["maps_match_backing"] == {str(k): True for k in range(5)}
        assert seen["bad_index_errno"] == errno.EINVAL and seen["dup_maps"]


def test_a_foreign_driver_sends_gpa_direct_from_its_own_memory(tmp_path: Path) -> None:
    """`sim start --guest-memory-mode proc` + `sim exec`: a driver that is not hvuio (IOVA = VA,
    as DPDK's netvsc PMD with --iova-mode=va) opens /dev/uio0 at the real path and sends from its
    own memory; the host reads it through the pid of that open and puts the frame on the wire."""
    reason = exec_skip_reason()
    if reason is not None:
        pytest.skip(reason)
    root = tmp_path / "sim"
    started = hvuio("--sysroot", str(root), "sim", "start", "--guest-memory-mode", "proc",
                    "--pcap-out", str(tmp_path / "out.pcap"))
    assert started.returncode == 0, started.stderr
    try:
        guid = nic_guid(root)
        assert hvuio("--sysroot", str(root), "bind", guid, "--force").returncode == 0
        out = foreign_guest.run_checked("/", guid, [sys.executable, "-P", "-m", "hvuio", "--sysroot", str(root),
                                                     "sim", "exec", "--"])
    finally:
        stopped = hvuio("--sysroot", str(root), "sim", "stop")
        assert stopped.returncode == 0, stopped.stderr
    assert [r.data for r in PcapSource(tmp_path / "out.pcap")] == [bytes.fromhex(out["frame"])]


def test_hvuio_bind_and_list_unchanged_inside(tree: tuple[Path, str]) -> None:
    root, guid = tree
    bound = in_tree(root, sys.executable, "-P", "-m", "hvuio", "bind", guid, "--force")
    assert bound.returncode == 0, bound.stderr
    assert "uio0" in bound.stdout
    listed = hvuio("--sysroot", str(root), "list", "--json")   # seen from outside: bound
    device = next(d for d in json.loads(listed.stdout)["devices"] if d["device_id"] == guid)
    assert device["driver"] == "uio_hv_generic" and device["uio"]["name"] == "uio0"
    unbound = in_tree(root, sys.executable, "-P", "-m", "hvuio", "unbind", guid)
    assert unbound.returncode == 0, unbound.stderr
    listed = hvuio("--sysroot", str(root), "list", "--json")
    device = next(d for d in json.loads(listed.stdout)["devices"] if d["device_id"] == guid)
    assert device["driver"] == "hv_netvsc", device


def test_exit_status_is_the_commands(tree: tuple[Path, str]) -> None:
    root, _ = tree
    assert in_tree(root, "sh", "-c", "exit 7").returncode == 7


def test_sigterm_reaches_the_command(tree: tuple[Path, str]) -> None:
    root, _ = tree
    code = ("import signal, sys\n"
            "signal.signal(signal.SIGTERM, lambda *a: sys.exit(5))\n"
            "print('ready', flush=True)\n"
            "signal.pause()\n")
    argv = [sys.executable, "-P", "-m", "hvuio", "--sysroot", str(root), "sim", "exec", "--",
            sys.executable, "-P", "-c", code]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=cli_env())
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 5
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_environment_of_the_command(tmp_path: Path) -> None:
    library = tmp_path / "lib.so"
    env = child_env(tmp_path, library, {"LD_PRELOAD": "/x/a.so:/x/b.so", "HVUIO_SYSROOT": "/t", "A": "1"})
    assert env["LD_PRELOAD"] == f"{library} /x/a.so /x/b.so"
    assert env[ENV_SYSROOT] == str(tmp_path) and "HVUIO_SYSROOT" not in env and env["A"] == "1"


def test_the_preload_library_is_installed_with_the_package() -> None:
    path = preload_library()
    assert path.is_file() and path.parent.name == "_preload"


def test_a_c_driver_calling_the_c_library_as_dpdk_does(tree: tuple[Path, str], tmp_path: Path) -> None:
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("no gcc to build the C probe")
    root, guid = tree
    binary = tmp_path / "exec_probe"
    subprocess.run([gcc, "-O2", "-D_FORTIFY_SOURCE=2", "-Wall", "-pthread", "-o", str(binary), str(C_PROBE)],
                   check=True)
    assert hvuio("--sysroot", str(root), "bind", guid, "--force").returncode == 0
    relid = (root / "sys/bus/vmbus/devices" / guid / "id").read_text().strip()
    ran = in_tree(root, str(binary), str(root), guid, relid)
    assert ran.returncode == 0, (ran.stdout, ran.stderr)
    seen = dict(line.split(" ", 1) for line in ran.stdout.splitlines())
    assert seen == {"uio": "uio0", "stat_chr": "1", "open": "1", "openat": "1", "map1": "1",
                    "map1_is_backing": "1", "bad_offset_errno": str(errno.EINVAL),
                    "unaligned_errno": str(errno.EINVAL), "threaded_maps": "100", "irqcontrol": "4", "epoll_add": "1",
                    "epoll_idle": "0", "ring_access": "1", "ring_size_pages": "1", "ring_maps": "1"}


def test_a_wheel_built_from_the_sources_carries_the_preload_library(tmp_path: Path) -> None:
    """What scripts/setup-machine.sh installs (pip install of the sources, no *.so copied) has
    the library: the normal build makes it, no step of its own."""
    project = Path(__file__).resolve().parents[2]
    if not (project / "setup.py").is_file():
        pytest.skip("the tests do not run from a source tree")
    src = tmp_path / "src"
    shutil.copytree(project, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".hypothesis", ".pytest_cache",
        ".mypy_cache", "_out", "*.so", "_native*.c"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-build-isolation", "--no-deps",
                            "--no-index", "-w", str(tmp_path / "wheel"), str(src)],
                           capture_output=True, text=True, check=False)
    assert built.returncode == 0, built.stderr[-2000:]
    [wheel] = (tmp_path / "wheel").glob("hvuio-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.startswith("hvuio/sim/_preload/simexec") and n.endswith(".so") for n in names), names
