"""What `hvuio list` shows about the VMBus devices of a machine (VMBUS.md §2.1, §2.2, §2.5).

One entry per device (`inventory()`), sorted the way a user reads interface names: devices with
an interface first, by natural order of the name (eth2 before eth10), then the others by class and
instance GUID. A PCI pass-through device names the VF it carries. Beyond `VmbusDevice.to_dict` an entry carries the device state with its name, the
NUMA node, the channel count with each channel's target CPU (`channels/<relid>/cpu`), and, for a
synthetic NIC on Azure with accelerated networking, its VF: the network interface of a PCI
function under a VMBus device of the PCI pass-through class whose MAC equals the NIC's, which is
how Linux pairs them (netvsc_drv.c `get_netvsc_byslot`, its fallback by MAC; DPDK's
hn_vf.c `hn_vf_match` by MAC alone). A NIC bound to uio_hv_generic has no interface of its own
any more: the entry names the interfaces it had (`bound_from`, from hvuio's bind journal, which
also keeps the MAC its VF is then found by).

`vf_netdev` finds the VF the host associated with a serial (by PCI slot, then MAC) for `hvuio up`.

Only reads sysfs (through hvuio.device.sysfs); nothing here binds or opens a device. Terminal
rendering is the CLI's (hvuio/cli/device.py).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Final

from hvuio.device.bind import read_journal
from hvuio.device.classes import NIC_CLASS, VPCI_CLASS
from hvuio.device.sysfs import VmbusChannel, VmbusDevice, sys_path
from hvuio.errors import SysfsError

#: `state` of a channel (VMBUS.md §2.1: Linux's enum vmbus_channel_state).
STATE_NAMES: Final = {0: "offered", 1: "opening", 2: "closed", 3: "opened"}
_MAX_CPU: Final = 8191  # Linux's NR_CPUS limit
_MAC_RE: Final = re.compile(r"^[0-9a-f]{2}(?::[0-9a-f]{2}){5}$")


def natural_key(name: str) -> list[Any]:
    """Sort key that orders the digit runs of `name` as numbers: eth2 < eth10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"([0-9]+)", name)]


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def find_vfs(sysroot: Path | str, devices: list[VmbusDevice]) -> list[dict[str, Any]]:
    """Every network interface whose device is a PCI function under a PCI pass-through VMBus
    device: name, MAC, PCI address and the VMBus device's GUID."""
    buses: list[tuple[str, str]] = []
    for dev in devices:
        try:
            if dev.class_id == VPCI_CLASS:
                buses.append((os.path.realpath(dev.path), dev.guid))
        except SysfsError:
            continue
    if not buses:
        return []
    base = sys_path(sysroot, "/sys/class/net")
    try:
        names = os.listdir(base)
    except OSError:
        return []
    out: list[dict[str, Any]] = []
    for name in sorted(names, key=natural_key):
        link = base / name / "device"
        if not os.path.islink(link):
            continue
        target = os.path.realpath(link)
        for bus, guid in buses:
            if target.startswith(bus + os.sep):
                mac = (_read(base / name / "address") or "").lower()
                out.append({"name": name, "mac": mac if _MAC_RE.match(mac) else None,
                            "pci": os.path.basename(target), "vmbus_device": guid})
                break
    return out


def pci_slots(sysroot: Path | str) -> dict[str, int]:
    """PCI slot address ("dddd:bb:ss") -> slot name parsed as a decimal u32, from
    `/sys/bus/pci/slots/<name>/address`. On Azure the Hyper-V PCI driver names a VF's slot after
    the serial the host sends in the VF association (torvalds/linux drivers/pci/controller/
    pci-hyperv.c `hv_pci_assign_slots`; netvsc_drv.c `get_netvsc_byslot` parses it back); names
    that are not such a number are left out."""
    base = sys_path(sysroot, "/sys/bus/pci/slots")
    try:
        names = os.listdir(base)
    except OSError:
        return {}
    out: dict[str, int] = {}
    for name in names:
        if not (name.isascii() and name.isdigit() and len(name) <= 10 and int(name) <= 0xFFFFFFFF):
            continue
        address = (_read(base / name / "address") or "").lower()
        if address:
            out[address] = int(name)
    return out


def vf_netdev(sysroot: Path | str, serial: int, macs: set[str]) -> str | None:
    """The network interface of the VF the host associated with `serial`, as Linux pairs them
    (`get_netvsc_byslot`): among the PCI functions under a PCI pass-through VMBus device whose MAC
    is one of `macs` (the NIC's, lower case), the one whose slot name is `serial`, else the first;
    None when there is none yet (its PCI device may come later)."""
    vfs = [vf for vf in find_vfs(sysroot, VmbusDevice.all(sysroot)) if vf["mac"] is not None and vf["mac"] in macs]
    slots = pci_slots(sysroot)
    by_slot = [vf for vf in vfs if slots.get(vf["pci"].rsplit(".", 1)[0]) == serial]
    return str((by_slot or vfs)[0]["name"]) if vfs else None


def _journal(sysroot: Path | str, guid: str) -> tuple[list[str], set[str]]:
    """The interface names and MACs hvuio's bind journal recorded for `guid` (a NIC it bound to
    uio_hv_generic); anything not shaped like a MAC is left out."""
    data = read_journal(sysroot, guid) or {}
    names = [n for n in data.get("netdevs") or [] if isinstance(n, str)]  # type: ignore[attr-defined]
    macs = data.get("macs")
    if not isinstance(macs, list):
        return names, set()
    return names, {m.lower() for m in macs if isinstance(m, str) and _MAC_RE.match(m.lower())}


def _channel_cpu(dev: VmbusDevice, relid: int) -> int | None:
    try:
        return VmbusChannel(dev, relid).attr_int_opt("cpu", _MAX_CPU)
    except SysfsError:
        return None


def entry(dev: VmbusDevice, vfs: list[dict[str, Any]]) -> dict[str, Any]:
    """`VmbusDevice.to_dict` plus state name, NUMA node, channel count and CPUs, and the VF."""
    d = dev.to_dict()
    d["state"] = dev.state
    d["state_name"] = STATE_NAMES.get(d["state"], "unknown") if d["state"] is not None else None
    numa = _read(dev.path / "numa_node") or ""
    d["numa_node"] = int(numa) if numa.isascii() and numa.isdigit() and len(numa) < 5 else None  # -1: no NUMA
    for chan in d["channels"]:
        chan["cpu"] = _channel_cpu(dev, chan["relid"])
    d["channel_count"] = len(d["channels"])
    d["vf"] = None
    d["bound_from"] = []
    if d["class_id"] == NIC_CLASS:
        macs = {(n["mac"] or "").lower() for n in d["netdevs"] if n["mac"]}
        if not d["netdevs"]:
            d["bound_from"], macs = _journal(dev.sysroot, dev.guid)
        d["vf"] = next((vf for vf in vfs if vf["mac"] is not None and vf["mac"] in macs), None)
    elif d["class_id"] == VPCI_CLASS:
        d["vf"] = next((vf for vf in vfs if vf["vmbus_device"] == dev.guid), None)
    return d


def _order(d: dict[str, Any]) -> tuple[Any, ...]:
    names = [n["name"] for n in d["netdevs"]] or d["bound_from"]
    if names:
        return (0, natural_key(names[0]), d["device_id"])
    return (1, d["class"], d["device_id"])


def inventory(sysroot: Path | str) -> list[dict[str, Any]]:
    """Every VMBus device as `hvuio list --json` shows it, NICs by interface name first."""
    devices = VmbusDevice.all(sysroot)
    vfs = find_vfs(sysroot, devices)
    return sorted((entry(dev, vfs) for dev in devices), key=_order)
