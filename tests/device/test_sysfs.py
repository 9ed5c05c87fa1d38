"""sysfs model over the emulator's tree and over hand-made files: getters, enumeration, list CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from hvuio.cli import cli
from hvuio.device import classes
from hvuio.device.sysfs import UioMap, VmbusDevice, _Node
from hvuio.errors import DeviceNotFoundError, SysfsError
from hvuio.sim.kernel import profiles
from hvuio.sim.kernel.bus import SimKernel

from support.waiting import until as _wait

ALL_PROFILES = list(profiles.PROFILES)


def test_attr_getters(tmp_path: Path) -> None:
    (tmp_path / "hex").write_text("0x0000000000400000\n")
    (tmp_path / "dec").write_text("42\n")
    (tmp_path / "guid").write_text("{F8615163-DF3E-46C5-913F-F2D2F965ED0E}\n")
    (tmp_path / "bad").write_text("zz\n")
    node = _Node(tmp_path)
    assert node.attr_int("hex") == 0x400000
    assert node.attr_int("dec") == 42
    assert node.attr_guid("guid") == classes.NIC_CLASS
    with pytest.raises(SysfsError, match="bad"):
        node.attr_int("bad")
    with pytest.raises(SysfsError, match="missing_file"):
        node.attr_str("missing_file")
    with pytest.raises(SysfsError, match="not a GUID"):
        node.attr_guid("dec")
    assert node.attr_int_opt("missing_file") is None


def test_map_gpadl_parsing() -> None:
    assert UioMap(3, "recv:925200", 1, 0, 0).gpadl == 925200
    assert UioMap(4, "send:0x10", 1, 0, 0).gpadl == 16
    assert UioMap(0, "txrx_rings", 1, 0, 0).gpadl is None
    assert UioMap(3, "recv:", 1, 0, 0).gpadl is None


def test_sim_class_guids_match_device_table() -> None:
    for guid in (profiles.NIC_CLASS, profiles.FCOPY_CLASS, profiles.KEYBOARD_CLASS, profiles.SCSI_CLASS,
                 profiles.HEARTBEAT_CLASS, profiles.SHUTDOWN_CLASS):
        assert guid in classes.CLASS_NAMES
    assert classes.class_name("{F8615163-DF3E-46C5-913F-F2D2F965ED0E}") == "nic"
    assert classes.class_name("00000000-0000-0000-0000-000000000001") == "unknown"


@pytest.mark.parametrize("profile", ALL_PROFILES)
def test_enumerate_sim_tree(tmp_path: Path, profile: str) -> None:
    with SimKernel(tmp_path, profile, nics=2) as k:
        devs = VmbusDevice.all(tmp_path)
        assert {d.guid for d in devs} == set(k.devices)
        nic = VmbusDevice.from_netdev(tmp_path, "hveth1")
        sim = k.device("hveth1")
        assert nic.guid == sim.guid == nic.device_id
        assert nic.relid == sim.relid and nic.is_nic and nic.class_name == "nic"
        assert nic.driver == "hv_netvsc"
        assert nic.netdevs() == [("hveth1", sim.mac)]
        assert nic.monitor_id == sim.monitor_id is not None
        assert nic.has_driver_override == profiles.PROFILES[profile].driver_override
        assert nic.driver_override is None
        kbd = next(d for d in devs if d.class_name == "keyboard")
        assert kbd.monitor_id is None and kbd.driver == "hyperv_keyboard" and kbd.netdevs() == []
        chans = nic.channels()
        assert [c.relid for c in chans] == [sim.relid]
        assert chans[0].subchannel_id == 0 and chans[0].monitor_id == sim.monitor_id
        assert nic.uio is None
        assert VmbusDevice.resolve(tmp_path, "{" + sim.guid.upper() + "}").guid == sim.guid


def test_not_found_errors_name_the_key(tmp_path: Path) -> None:
    with SimKernel(tmp_path, "6.17", nics=1):
        with pytest.raises(DeviceNotFoundError, match="nosuch0"):
            VmbusDevice.resolve(tmp_path, "nosuch0")
        with pytest.raises(DeviceNotFoundError, match="12345678-1234-1234-1234-123456789abc"):
            VmbusDevice.resolve(tmp_path, "12345678-1234-1234-1234-123456789abc")
    assert VmbusDevice.all(tmp_path) == []


@pytest.mark.parametrize("profile,maps", [("4.19", 5), ("6.12", 5), ("6.15", 3), ("6.17", 3)])
def test_non_nic_maps_follow_profile(tmp_path: Path, profile: str, maps: int) -> None:
    """Bind the SCSI controller (monitored) through the emulated kernel by hand: 3 maps from 6.14."""
    with SimKernel(tmp_path, profile, nics=0) as k:
        scsi = next(d for d in k.devices.values() if d.class_id == profiles.SCSI_CLASS)
        base = tmp_path / "sys/bus/vmbus"
        (base / "drivers/hv_storvsc/unbind").write_text(scsi.guid + "\n")
        (base / "drivers/uio_hv_generic/new_id").write_text(profiles.SCSI_CLASS + "\n")
        dev = VmbusDevice.from_uuid(tmp_path, scsi.guid)
        _wait(lambda: dev.uio is not None)
        uio = dev.uio
        assert uio is not None
        got = uio.maps()
        assert [m.name.split(":")[0] for m in got] == ["txrx_rings", "int_page", "monitor_page",
                                                       "recv", "send"][:maps]
        assert got[0].size == 2 * profiles.primary_ring_size(k.profile, profiles.SCSI_CLASS)


def test_list_cli_table_and_json(tmp_path: Path) -> None:
    with SimKernel(tmp_path, "6.17", nics=1) as k:
        runner = CliRunner()
        res = runner.invoke(cli, ["--sysroot", str(tmp_path), "list"])
        assert res.exit_code == 0, res.output
        assert "hveth0" in res.output and k.nics[0].guid in res.output and "keyboard" in res.output
        res = runner.invoke(cli, ["--sysroot", str(tmp_path), "list", "--json"])
        data = json.loads(res.output)
        nic = next(d for d in data["devices"] if d["class"] == "nic")
        assert nic["netdevs"] == [{"name": "hveth0", "mac": k.nics[0].mac}]
        assert nic["driver"] == "hv_netvsc" and nic["uio"] is None
        assert nic["channels"][0]["relid"] == k.nics[0].relid
    res = CliRunner().invoke(cli, ["--sysroot", str(tmp_path), "list"])
    assert "No VMBus devices" in res.output
