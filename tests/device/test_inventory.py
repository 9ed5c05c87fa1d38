"""What `hvuio list` shows (hvuio.device.inventory): natural order of interface names, the VF an
Azure NIC is paired with (by MAC, under a PCI pass-through device), state, NUMA node, channels and
their CPUs, on the emulated kernel's tree."""

from __future__ import annotations

import uuid
from pathlib import Path

from hvuio.device.bind import bind_device
from hvuio.device.classes import VPCI_CLASS
from hvuio.device.inventory import find_vfs, inventory, natural_key, pci_slots, vf_netdev
from hvuio.device.sysfs import VmbusDevice
from hvuio.sim.kernel import profiles as P
from hvuio.sim.kernel.bus import SimKernel


def test_natural_order_of_interface_names() -> None:
    names = ["eth10", "eth2", "eth1", "enP2s1", "eth0", "enP10s1"]
    assert sorted(names, key=natural_key) == ["enP2s1", "enP10s1", "eth0", "eth1", "eth2", "eth10"]


def test_the_emulators_vpci_class_is_the_guests() -> None:
    assert P.VPCI_CLASS == VPCI_CLASS


def test_nics_come_first_in_natural_order_each_with_its_vf(tmp_path: Path) -> None:
    with SimKernel(tmp_path, "6.17", nics=3, ifnames=["eth10", "eth2", "eth1"]) as k:
        for i, nic in enumerate(k.nics):
            k.offer_vf(nic, f"enP{i + 1}s1")
        devices = inventory(tmp_path)
        nics = [d for d in devices if d["class"] == "nic"]
        assert [d["netdevs"][0]["name"] for d in nics] == ["eth1", "eth2", "eth10"]
        assert devices[:3] == nics
        for d in nics:
            nic = k.device(d["netdevs"][0]["name"])
            vf = d["vf"]
            assert vf is not None and vf["mac"] == nic.mac == d["netdevs"][0]["mac"]
            vpci = k.devices[vf["vmbus_device"]]
            assert vpci.class_id == P.VPCI_CLASS and vf["name"] == vpci.ifname
            raw = uuid.UUID(vpci.guid).bytes_le
            assert vf["pci"] == f"{raw[5] << 8 | raw[4]:04x}:00:02.0"
            assert (d["state"], d["state_name"], d["numa_node"], d["channel_count"]) == (3, "opened", 0, 1)
            assert d["channels"] == [{"relid": nic.relid, "subchannel_id": 0, "monitor_id": nic.monitor_id,
                                      "ring": False, "cpu": 0}]
        carriers = [d for d in devices if d["class"] == "vpci"]
        assert sorted(d["vf"]["name"] for d in carriers) == sorted(d["vf"]["name"] for d in nics)


def test_channel_cpus_and_numa_node_are_read_from_sysfs(tmp_path: Path) -> None:
    with SimKernel(tmp_path, "6.17", nics=1, ifnames=["eth0"]) as k:
        nic = k.nics[0]
        d = tmp_path / "sys/bus/vmbus/devices" / nic.guid
        (d / "channels" / str(nic.relid) / "cpu").write_text("3\n")
        (d / "numa_node").chmod(0o644)
        (d / "numa_node").write_text("-1\n")   # a kernel without NUMA
        entry = inventory(tmp_path)[0]
        assert entry["channels"][0]["cpu"] == 3 and entry["numa_node"] is None and entry["vf"] is None


def test_a_bound_nic_keeps_its_name_and_vf(tmp_path: Path) -> None:
    with SimKernel(tmp_path, "6.17", nics=2, ifnames=["eth0", "eth1"]) as k:
        for i, nic in enumerate(k.nics):
            k.offer_vf(nic, f"enP{i + 1}s1")
        before = {d["device_id"]: d["vf"] for d in inventory(tmp_path) if d["class"] == "nic"}
        bind_device(tmp_path, "eth1", force=True)
        entries = inventory(tmp_path)
        bound = next(d for d in entries if d["device_id"] == k.device("eth1").guid)
        assert bound["netdevs"] == [] and bound["bound_from"] == ["eth1"] and bound["driver"] == "uio_hv_generic"
        assert bound["vf"] == before[bound["device_id"]] is not None
        assert [d["device_id"] for d in entries[:2]] == [k.device("eth0").guid, bound["device_id"]]


def test_a_vf_with_another_mac_or_outside_a_vpci_device_is_not_paired(tmp_path: Path) -> None:
    with SimKernel(tmp_path, "6.17", nics=1, ifnames=["eth0"]) as k:
        k.offer_vf(k.nics[0], ifname="enP1s1")
        vf_mac = tmp_path / "sys/class/net/enP1s1/address"
        vf_mac.chmod(0o644)
        vf_mac.write_text("00:15:5d:ff:ff:ff\n")
        vfs = find_vfs(tmp_path, VmbusDevice.all(tmp_path))
        assert [v["name"] for v in vfs] == ["enP1s1"]
        assert inventory(tmp_path)[0]["vf"] is None
        assert all(v["name"] != "eth0" for v in vfs)   # the synthetic NIC's own device is no PCI function


def _slot(root: Path, name: str, address: str) -> None:
    d = root / "sys/bus/pci/slots" / name
    d.mkdir(parents=True)
    (d / "address").write_text(address + "\n")


def test_vf_netdev_pairs_by_slot_then_by_mac(tmp_path: Path) -> None:
    with SimKernel(tmp_path, "6.17", nics=1, ifnames=["eth0"]) as k:
        nic = k.nics[0]
        mac = {str(nic.mac).lower()}
        assert vf_netdev(tmp_path, 7, mac) is None                       # the VF's PCI device is not there yet
        k.offer_vf(nic, ifname="enP1s1")
        k.offer_vf(nic, ifname="enP2s1")                                  # two candidates with the NIC's MAC
        by_name = {v["name"]: v["pci"] for v in find_vfs(tmp_path, VmbusDevice.all(tmp_path))}
        assert vf_netdev(tmp_path, 7, mac) == "enP1s1"                    # no slots: the first by MAC
        _slot(tmp_path, "7", by_name["enP2s1"].rsplit(".", 1)[0])         # Hyper-V PCI names the slot after the serial
        _slot(tmp_path, "not-a-serial", by_name["enP1s1"].rsplit(".", 1)[0])
        assert pci_slots(tmp_path) == {by_name["enP2s1"].rsplit(".", 1)[0]: 7}
        assert vf_netdev(tmp_path, 7, mac) == "enP2s1"
        assert vf_netdev(tmp_path, 0xDEADBEEF, mac) == "enP1s1"           # a serial matching no slot: MAC, as Linux
        assert vf_netdev(tmp_path, 7, {"00:15:5d:ff:ff:ff"}) is None      # a slot alone does not pair another MAC
