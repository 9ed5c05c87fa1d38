"""`hvuio list`: one line per device in natural order of interface names, the columns a user on
Azure needs (VF, state, NUMA node, channels with their CPUs), and --json carrying the same."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from hvuio.cli import cli
from hvuio.sim.kernel.bus import SimKernel


def test_list_text_and_json_carry_the_same_devices_in_the_same_order(tmp_path: Path) -> None:
    with SimKernel(tmp_path, "6.17", nics=3, ifnames=["eth10", "eth2", "eth1"]) as k:
        for i, nic in enumerate(k.nics):
            k.offer_vf(nic, f"enP{i + 1}s1")
        text = CliRunner().invoke(cli, ["--sysroot", str(tmp_path), "list"])
        assert text.exit_code == 0, text.output
        lines = text.output.splitlines()
        assert lines[0].split() == ["IFACE", "MAC", "VF", "STATE", "NUMA", "CHANNELS", "DRIVER", "UIO",
                                    "CLASS", "DEVICE"]
        data = json.loads(CliRunner().invoke(cli, ["--sysroot", str(tmp_path), "list", "--json"]).output)
        devices = data["devices"]
        assert len(lines) == 1 + len(devices) + 1 and lines[-1].startswith("(CHANNELS:")
        assert [line.split()[-1] for line in lines[1:-1]] == [d["device_id"] for d in devices]
        for name, line in zip(["eth1", "eth2", "eth10"], lines[1:4]):
            nic = k.device(name)
            vf = next(d for d in k.devices.values() if d.ifname != name and d.mac == nic.mac)
            cols = line.split()
            assert cols[:3] == [name, nic.mac, vf.ifname]
            assert cols[3].startswith("(") and cols[4:8] == ["opened", "0", "1:", f"{nic.relid}@0"]


def test_list_on_a_tree_without_vmbus_says_so(tmp_path: Path) -> None:
    res = CliRunner().invoke(cli, ["--sysroot", str(tmp_path), "list"])
    assert res.exit_code == 0 and "No VMBus devices under" in res.output and "hvuio doctor" in res.output


def test_list_shows_the_vf_use_of_a_running_up(tmp_path: Path) -> None:
    from hvuio.status import StatusFile

    with SimKernel(tmp_path, "6.17", nics=1, ifnames=["eth0"]) as k:
        k.offer_vf(k.nics[0], "enP1s1")
        record = StatusFile(tmp_path, k.nics[0].guid)   # as `hvuio up --vf auto` keeps it (this process)
        vf = {"serial": 1, "netdev": "enP1s1", "data_path": "vf", "tx_on_vf": True}
        record.write(nic={"device": k.nics[0].guid, "vf": vf})
        try:
            data = json.loads(CliRunner().invoke(cli, ["--sysroot", str(tmp_path), "list", "--json"]).output)
            [nic] = [d for d in data["devices"] if d["device_id"] == k.nics[0].guid]
            assert nic["vf_use"] == vf and nic["vf"]["name"] == "enP1s1"
            text = CliRunner().invoke(cli, ["--sysroot", str(tmp_path), "list"]).output
            assert "enP1s1 (" in text and "serial 1, data path vf" in text, text
        finally:
            record.remove()
        data = json.loads(CliRunner().invoke(cli, ["--sysroot", str(tmp_path), "list", "--json"]).output)
        assert all(d["vf_use"] is None for d in data["devices"])
