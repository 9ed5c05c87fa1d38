"""The emulated kernel's tree and driver-core semantics (VMBUS.md §2, §5.1–5.4), and `hvuio sim`."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from hvuio.sim.kernel import profiles as P
from hvuio.sim.kernel.bus import SimKernel
from hvuio.sim.kernel.shm import MARKER, is_sim
from hvuio.sim.kernel.tree import modalias

from support.cli import hvuio_main as _hvuio
from support.paths import ROOT
from support.waiting import until as _until


def test_ring_size_rules_match_spec_table() -> None:
    old, mid, new = P.get_profile("6.9"), P.get_profile("6.12"), P.get_profile("6.17")
    page = 4096
    assert P.primary_ring_size(old, P.FCOPY_CLASS, page) == 2 * 1024 * 1024
    assert P.primary_ring_size(mid, P.FCOPY_CLASS, page) == 0x4000
    assert P.primary_ring_size(new, P.FCOPY_CLASS, page) == 20 * 1024
    assert P.primary_ring_size(mid, str(uuid.uuid4()), page) == 0x11000
    assert P.primary_ring_size(new, str(uuid.uuid4()), page) == 0x11000 + 0  # 0x11000 >= 8 pages: no header
    assert P.primary_ring_size(new, P.NIC_CLASS, page) == 2 * 1024 * 1024
    assert P.ring_file_size(mid, 0x8000) == 4 * 1024 * 1024 and P.ring_file_size(new, 0x8000) == 0x8000
    assert P.map12_size(new, 65536) == 4096 and P.map12_size(mid, 65536) == 65536
    assert modalias(P.NIC_CLASS) == "vmbus:635161f83edfc546913ff2d2f965ed0e"


@pytest.mark.parametrize("profile", list(P.PROFILES))
def test_device_layout(tmp_path: Path, profile: str) -> None:
    with SimKernel(tmp_path, profile, nics=1) as k:
        assert is_sim(tmp_path)
        nic = k.nics[0]
        d = tmp_path / "sys/bus/vmbus/devices" / nic.guid
        assert (d / "class_id").read_text() == "{" + P.NIC_CLASS + "}\n"
        assert (d / "device_id").read_text() == "{" + nic.guid + "}\n"
        assert (d / "id").read_text() == f"{nic.relid}\n"
        assert (d / "vendor").read_text() == "0x1414\n"
        assert (d / "modalias").read_text().startswith("vmbus:635161f8")
        assert (d / "monitor_id").read_text() == f"{nic.monitor_id}\n"
        assert os.readlink(d / "driver").endswith("drivers/hv_netvsc")
        assert (d / "driver_override").exists() == k.profile.driver_override
        if k.profile.driver_override:
            assert (d / "driver_override").read_text() == "(null)\n"
        assert (d / "channel_vp_mapping").read_text() == f"{nic.relid}:0\n"
        assert (d / "channels" / str(nic.relid) / "subchannel_id").read_text() == "0\n"
        net = tmp_path / "sys/class/net/hveth0"
        assert os.path.realpath(net / "device") == str(d.resolve())
        assert (net / "address").read_text() == f"{nic.mac}\n"
        hb = next(x for x in k.devices.values() if x.class_id == P.HEARTBEAT_CLASS)
        assert not (tmp_path / "sys/bus/vmbus/devices" / hb.guid / "monitor_id").exists()
        for drv in ("hv_netvsc", "uio_hv_generic"):
            for f in ("new_id", "remove_id", "bind", "unbind"):
                assert (tmp_path / "sys/bus/vmbus/drivers" / drv / f).exists()
    assert not (tmp_path / "sys").exists() and not (tmp_path / MARKER).exists()


def test_new_id_semantics(tmp_path: Path) -> None:
    with SimKernel(tmp_path, "6.17", nics=2) as k:
        a, b = k.nics
        drv = tmp_path / "sys/bus/vmbus/drivers"
        (drv / "hv_netvsc/unbind").write_text(a.guid + "\n")
        _until(lambda: a.driver is None)
        (drv / "uio_hv_generic/new_id").write_text(P.NIC_CLASS + "\n")  # grabs every unbound NIC
        _until(lambda: a.driver == "uio_hv_generic")
        assert b.driver == "hv_netvsc" and a.uio == "uio0" and (tmp_path / "dev/uio0").is_socket()
        (drv / "uio_hv_generic/new_id").write_text(P.NIC_CLASS + "\n")
        _until(lambda: any("EEXIST" in m for m in k.dmesg))
        (drv / "uio_hv_generic/new_id").write_text("not-a-guid\n")
        _until(lambda: any("EINVAL" in m for m in k.dmesg))
        (drv / "uio_hv_generic/remove_id").write_text(P.NIC_CLASS + "\n")
        (drv / "uio_hv_generic/remove_id").write_text(P.NIC_CLASS + "\n")
        _until(lambda: any("remove_id" in m and "ENODEV" in m for m in k.dmesg))
        (drv / "uio_hv_generic/unbind").write_text(b.guid + "\n")  # not bound there
        _until(lambda: any("unbind" in m and "ENODEV" in m for m in k.dmesg))
        assert b.driver == "hv_netvsc"
        (drv / "uio_hv_generic/unbind").write_text(a.guid + "\n")
        _until(lambda: a.driver is None and not (tmp_path / "dev/uio0").exists())
        (tmp_path / "sys/bus/vmbus/drivers_probe").write_text(a.guid + "\n")  # static table again
        _until(lambda: a.driver == "hv_netvsc")


def test_override_excludes_other_drivers(tmp_path: Path) -> None:
    with SimKernel(tmp_path, "6.17", nics=1) as k:
        a = k.nics[0]
        d = tmp_path / "sys/bus/vmbus/devices" / a.guid
        (d / "driver_override").write_text("nosuchdrv\n")
        _until(lambda: a.override == "nosuchdrv")
        (tmp_path / "sys/bus/vmbus/drivers/hv_netvsc/unbind").write_text(a.guid + "\n")
        (tmp_path / "sys/bus/vmbus/drivers_probe").write_text(a.guid + "\n")
        (tmp_path / "sys/bus/vmbus/drivers/hv_netvsc/bind").write_text(a.guid + "\n")
        _until(lambda: any("hv_netvsc/bind" in m for m in k.dmesg))
        assert a.driver is None
        (d / "driver_override").write_text("\n")
        _until(lambda: (d / "driver_override").read_text() == "(null)\n")
        (tmp_path / "sys/bus/vmbus/drivers_probe").write_text(a.guid + "\n")
        _until(lambda: a.driver == "hv_netvsc")


def test_old_kernel_refuses_unmonitored(tmp_path: Path) -> None:
    with SimKernel(tmp_path, "6.9", nics=1, nic_monitored=False) as k:
        a = k.nics[0]
        d = tmp_path / "sys/bus/vmbus/devices" / a.guid
        (d / "driver_override").write_text("uio_hv_generic\n")
        (tmp_path / "sys/bus/vmbus/drivers/hv_netvsc/unbind").write_text(a.guid + "\n")
        (tmp_path / "sys/bus/vmbus/drivers_probe").write_text(a.guid + "\n")
        _until(lambda: any("requires hypercall" in m for m in k.dmesg))
        assert a.driver is None and a.uio is None


def test_gpadl_counter_is_global(tmp_path: Path) -> None:
    with SimKernel(tmp_path, "6.17", nics=2) as k:
        (tmp_path / "sys/bus/vmbus/drivers/hv_netvsc/unbind").write_text(k.nics[0].guid + "\n")
        (tmp_path / "sys/bus/vmbus/drivers/hv_netvsc/unbind").write_text(k.nics[1].guid + "\n")
        (tmp_path / "sys/bus/vmbus/drivers/uio_hv_generic/new_id").write_text(P.NIC_CLASS + "\n")
        _until(lambda: all(n.uio for n in k.nics))
        names = sorted(m[0] for n in k.nics for m in n.maps if ":" in m[0])
        handles = sorted(int(n.split(":")[1]) for n in names)
        assert handles == [P.FIRST_GPADL + i for i in range(4)]


def test_sim_start_stop_daemon(tmp_path: Path) -> None:
    root = tmp_path / "root"
    out = _hvuio("--sysroot", str(root), "sim", "start", "--kernel", "6.12", "--nics", "2")
    try:
        assert out.returncode == 0, out.stderr
        assert is_sim(root)
        listing = _hvuio("--sysroot", str(root), "list")
        assert "hveth1" in listing.stdout
        bound = _hvuio("--sysroot", str(root), "bind", "hveth1")
        assert bound.returncode == 0 and "uio_hv_generic" in bound.stdout, bound.stderr
        again = _hvuio("--sysroot", str(root), "sim", "start")
        assert again.returncode == 2 and "already exists" in again.stderr
    finally:
        stop = _hvuio("--sysroot", str(root), "sim", "stop")
    assert stop.returncode == 0, stop.stderr
    assert not (root / "sys").exists() and not is_sim(root)
    assert _hvuio("--sysroot", str(root), "sim", "stop").returncode == 2
    assert _hvuio("--sysroot", str(root), "sim", "start", "--kernel", "9.9").returncode == 2


def test_sim_kernel_modules_import_only_sim_wire_errors() -> None:
    """Dependency direction (STYLE): the emulator never imports the guest's device layer; it
    shares only the foundations both sides stand on (errors, safe file creation)."""
    kernel_dir = ROOT / "hvuio" / "sim" / "kernel"
    for name in ("tree.py", "bus.py", "uio.py", "shm.py", "profiles.py", "memory.py"):
        tree = ast.parse((kernel_dir / name).read_text())
        for node in ast.walk(tree):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for mod in mods:
                if mod.startswith("hvuio"):
                    assert mod.split(".")[1] in ("sim", "wire", "errors", "safefs"), f"{name} imports {mod}"


def test_sim_start_foreground_stops_on_sigterm(tmp_path: Path) -> None:
    code = "import sys; from hvuio.cli import main; main(sys.argv[1:])"
    proc = subprocess.Popen([sys.executable, "-c", code, "--sysroot", str(tmp_path), "sim", "start",
                             "--kernel", "4.19", "--foreground"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "sim kernel 4.19 running" in line and "hveth0=" in line
        assert is_sim(tmp_path)
    finally:
        proc.terminate()
        proc.wait(30)
    assert proc.returncode == 0 and not is_sim(tmp_path) and not (tmp_path / "sys").exists()
