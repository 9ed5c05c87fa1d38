"""Read-only model of VMBus devices, channels and UIO nodes in sysfs (VMBUS.md §2).

Like pyudev, but every path is resolved under an injectable `sysroot` (default "/"), so the same
code reads a real machine and the emulator's tree. Objects are cheap views: each attribute is
read when asked, nothing is cached except the identity (GUID, relid, uio name). Typed getters
(`attr_str`, `attr_int` with base auto-detection, `attr_guid` without braces) raise `SysfsError`
naming the file when it is missing or malformed.

No writes here (binding is bind.py), no mmap or /dev access (that is uio.py).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hvuio.device.classes import NIC_CLASS, class_name
from hvuio.errors import DeviceNotFoundError, SysfsError

_GUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_MAP_NAME_RE = re.compile(r"^(recv|send):([1-9][0-9]*|0[xX][0-9a-fA-F]+)$")
#: An unsigned sysfs integer as the kernel prints it (%u, %d of a non-negative value, 0x%llx);
#: no sign, no underscores, no Unicode digits.
_UINT_RE = re.compile(r"^(?:0[xX][0-9a-fA-F]+|[0-9]+)$")
#: Largest GPADL handle: the NVSP connect messages carry it in a u32 (VMBUS.md §1.2.4).
MAX_GPADL = 0xFFFFFFFF
#: Monitor ids index 4 trigger groups of 32 bits (VMBUS.md §3.12).
MONITOR_IDS = 128
#: Hint for every malformed or missing sysfs value: the tree is not what uio_hv_generic makes.
SYSFS_HINT = ("The sysfs files of this device are not what uio_hv_generic and hv_vmbus write; "
              "run 'hvuio doctor', and rebind the device ('hvuio unbind', then 'hvuio bind').")


def sys_path(sysroot: Path | str, absolute: str) -> Path:
    """`absolute` (e.g. "/sys/bus/vmbus") resolved under `sysroot`."""
    return Path(sysroot) / absolute.lstrip("/")


def is_guid(text: str) -> bool:
    """True for a lowercase or uppercase GUID without braces."""
    return bool(_GUID_RE.match(text.lower()))


class _Node:
    """A sysfs directory with typed attribute getters."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def has(self, name: str) -> bool:
        return (self.path / name).exists()

    def attr_str(self, name: str) -> str:
        """The attribute's text without the trailing newline; SysfsError if unreadable."""
        path = self.path / name
        try:
            return path.read_text().rstrip("\n")
        except FileNotFoundError:
            raise SysfsError(f"sysfs attribute {path} does not exist", SYSFS_HINT) from None
        except OSError as err:
            raise SysfsError(f"cannot read sysfs attribute {path}: {err.strerror}", SYSFS_HINT) from None
        except UnicodeDecodeError:
            raise SysfsError(f"sysfs attribute {path} is not text", SYSFS_HINT) from None

    def attr_int(self, name: str, limit: int | None = None) -> int:
        """The attribute as an unsigned integer (0x.. hex, else decimal, leading zeros allowed);
        SysfsError for anything else, or for a value above `limit` when one is given."""
        text = self.attr_str(name).strip()
        if not _UINT_RE.match(text):
            raise SysfsError(f"sysfs attribute {self.path / name} = {text[:64]!r} is not an unsigned integer",
                             SYSFS_HINT)
        value = int(text, 16) if text[:2] in ("0x", "0X") else int(text, 10)
        if limit is not None and value > limit:
            raise SysfsError(f"sysfs attribute {self.path / name} = {value} exceeds {limit}", SYSFS_HINT)
        return value

    def attr_guid(self, name: str) -> str:
        """The attribute as a lowercase GUID, braces stripped."""
        text = self.attr_str(name).strip().strip("{}").lower()
        if not _GUID_RE.match(text):
            raise SysfsError(f"sysfs attribute {self.path / name} = {text[:64]!r} is not a GUID", SYSFS_HINT)
        return text

    def attr_int_opt(self, name: str, limit: int | None = None) -> int | None:
        """attr_int, or None when the attribute is absent (e.g. monitor_id of a non-monitored channel)."""
        return self.attr_int(name, limit) if self.has(name) else None


@dataclass(frozen=True)
class UioMap:
    """One memory region of /dev/uioN as listed in maps/mapK (VMBUS.md §1.2, §2.4)."""

    index: int
    name: str
    size: int
    addr: int
    offset: int

    @property
    def gpadl(self) -> int | None:
        """GPADL handle published in a `recv:<n>` / `send:<n>` name (VMBUS.md §1.2.4), else None.

        None also for a handle the host could not have made: 0 or above the u32 the NVSP connect
        messages carry (the caller reports the name as malformed)."""
        m = _MAP_NAME_RE.match(self.name)
        if m is None:
            return None
        text = m.group(2)
        value = int(text, 16) if text[:2] in ("0x", "0X") else int(text, 10)
        return value if 0 < value <= MAX_GPADL else None

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "name": self.name, "size": self.size, "addr": self.addr,
                "offset": self.offset, "gpadl": self.gpadl}


class UioDevice(_Node):
    """/sys/class/uio/uioN of a device bound to uio_hv_generic."""

    def __init__(self, sysroot: Path, name: str) -> None:
        super().__init__(sys_path(sysroot, f"/sys/class/uio/{name}"))
        self.sysroot = sysroot
        self.name = name

    @classmethod
    def from_vmbus(cls, device: VmbusDevice) -> UioDevice | None:
        """The UIO node under the device's `uio/` directory, or None when not bound to uio."""
        uio_dir = device.path / "uio"
        try:
            names = sorted(n for n in os.listdir(uio_dir) if re.fullmatch(r"uio[0-9]+", n))
        except OSError:
            return None
        return cls(device.sysroot, names[0]) if names else None

    @property
    def number(self) -> int:
        return int(self.name[3:])

    @property
    def dev_path(self) -> Path:
        """/dev/uioN under the sysroot."""
        return sys_path(self.sysroot, f"/dev/{self.name}")

    @property
    def event(self) -> int:
        return self.attr_int("event")

    def maps(self) -> list[UioMap]:
        """maps/map0.. in index order, stopping at the first missing one (like DPDK)."""
        out: list[UioMap] = []
        for k in range(5):  # MAX_UIO_MAPS of the UIO core (VMBUS.md §1.3.8)
            m = _Node(self.path / "maps" / f"map{k}")
            if not m.path.is_dir():
                break
            out.append(UioMap(index=k, name=m.attr_str("name"), size=m.attr_int("size"),
                              addr=m.attr_int("addr"), offset=m.attr_int("offset")))
        return out


class VmbusChannel(_Node):
    """/sys/bus/vmbus/devices/<guid>/channels/<relid>/ (VMBUS.md §2.2)."""

    def __init__(self, device: VmbusDevice, relid: int) -> None:
        super().__init__(device.path / "channels" / str(relid))
        self.device = device
        self.relid = relid

    @property
    def subchannel_id(self) -> int:
        return self.attr_int("subchannel_id")

    @property
    def monitor_id(self) -> int | None:
        """Monitor id (0..127), or None when absent (= not monitored, signal with write(1))."""
        return self.attr_int_opt("monitor_id", MONITOR_IDS - 1)

    @property
    def ring_path(self) -> Path:
        return self.path / "ring"

    def to_dict(self) -> dict[str, Any]:
        return {"relid": self.relid, "subchannel_id": self.attr_int_opt("subchannel_id"),
                "monitor_id": self.monitor_id, "ring": self.ring_path.exists()}


class VmbusDevice(_Node):
    """/sys/bus/vmbus/devices/<guid> (VMBUS.md §2.1); the device is its primary channel."""

    def __init__(self, sysroot: Path, guid: str) -> None:
        super().__init__(sys_path(sysroot, f"/sys/bus/vmbus/devices/{guid}"))
        self.sysroot = sysroot
        self.guid = guid

    @classmethod
    def from_uuid(cls, sysroot: Path | str, guid: str) -> VmbusDevice:
        guid = guid.strip("{}").lower()
        dev = cls(Path(sysroot), guid)
        if not is_guid(guid) or not dev.path.is_dir():
            raise DeviceNotFoundError(f"no VMBus device {guid} under {dev.path.parent}")
        return dev

    @classmethod
    def from_netdev(cls, sysroot: Path | str, ifname: str) -> VmbusDevice:
        """The VMBus device behind a network interface (VMBUS.md §2.5), via class/net/<if>/device."""
        link = sys_path(sysroot, f"/sys/class/net/{ifname}/device")
        if "/" in ifname or not os.path.lexists(link):
            raise DeviceNotFoundError(f"no network interface {ifname!r} backed by a device")
        guid = os.path.basename(os.path.realpath(link))
        if not is_guid(guid) or not sys_path(sysroot, f"/sys/bus/vmbus/devices/{guid}").is_dir():
            raise DeviceNotFoundError(f"interface {ifname!r} is not a VMBus device (its device is {guid})")
        return cls(Path(sysroot), guid)

    @classmethod
    def resolve(cls, sysroot: Path | str, name: str) -> VmbusDevice:
        """A device by instance GUID (braces optional) or by interface name."""
        if is_guid(name.strip("{}")):
            return cls.from_uuid(sysroot, name)
        return cls.from_netdev(sysroot, name)

    @classmethod
    def all(cls, sysroot: Path | str) -> list[VmbusDevice]:
        """Every device on the bus, sorted by GUID; [] when there is no VMBus."""
        base = sys_path(sysroot, "/sys/bus/vmbus/devices")
        try:
            names = sorted(os.listdir(base))
        except OSError:
            return []
        return [cls(Path(sysroot), n) for n in names if is_guid(n)]

    @property
    def relid(self) -> int:
        return self.attr_int("id")

    @property
    def class_id(self) -> str:
        return self.attr_guid("class_id")

    @property
    def device_id(self) -> str:
        return self.attr_guid("device_id")

    @property
    def class_name(self) -> str:
        return class_name(self.class_id)

    @property
    def is_nic(self) -> bool:
        return self.class_id == NIC_CLASS

    @property
    def state(self) -> int | None:
        return self.attr_int_opt("state")

    @property
    def monitor_id(self) -> int | None:
        """Monitor id (0..127), or None when absent (= not monitored, signal with write(1))."""
        return self.attr_int_opt("monitor_id", MONITOR_IDS - 1)

    @property
    def driver(self) -> str | None:
        """Name of the bound driver (basename of the `driver` link), or None."""
        try:
            return os.path.basename(os.readlink(self.path / "driver"))
        except OSError:  # no link (unbound), or the device went away
            return None

    @property
    def has_driver_override(self) -> bool:
        return self.has("driver_override")

    @property
    def driver_override(self) -> str | None:
        """The override, or None when unset ("(null)" or empty) or unsupported."""
        if not self.has_driver_override:
            return None
        value = self.attr_str("driver_override").strip()
        return None if value in ("", "(null)") else value

    def netdevs(self) -> list[tuple[str, str | None]]:
        """(interface name, MAC) of every /sys/class/net entry whose `device` is this device."""
        base = sys_path(self.sysroot, "/sys/class/net")
        out: list[tuple[str, str | None]] = []
        try:
            names = sorted(os.listdir(base))
        except OSError:
            return out
        for name in names:
            link = base / name / "device"
            if os.path.islink(link) and os.path.basename(os.path.realpath(link)) == self.guid:
                node = _Node(base / name)
                out.append((name, node.attr_str("address") if node.has("address") else None))
        return out

    @property
    def uio(self) -> UioDevice | None:
        return UioDevice.from_vmbus(self)

    def channels(self) -> list[VmbusChannel]:
        """Every channels/<relid> directory, primary first, then by relid."""
        try:
            relids = sorted(int(n) for n in os.listdir(self.path / "channels") if re.fullmatch(r"[0-9]+", n))
        except OSError:
            return []
        chans = [VmbusChannel(self, r) for r in relids]
        return sorted(chans, key=lambda c: (c.relid != self._primary_relid(), c.relid))

    def _primary_relid(self) -> int | None:
        try:
            return self.relid
        except SysfsError:
            return None

    def channel(self, relid: int) -> VmbusChannel:
        chan = VmbusChannel(self, relid)
        if not chan.path.is_dir():
            raise SysfsError(f"channel directory {chan.path} does not exist", SYSFS_HINT)
        return chan

    def to_dict(self) -> dict[str, Any]:
        """Everything `hvuio list --json` shows about the device."""
        uio = self.uio
        return {
            "device_id": self.guid,
            "relid": self.relid,
            "class_id": self.class_id,
            "class": self.class_name,
            "driver": self.driver,
            "driver_override": self.driver_override,
            "monitor_id": self.monitor_id,
            "netdevs": [{"name": n, "mac": m} for n, m in self.netdevs()],
            "uio": None if uio is None else {"name": uio.name, "dev": str(uio.dev_path),
                                             "maps": [m.to_dict() for m in uio.maps()]},
            "channels": [c.to_dict() for c in self.channels()],
        }
