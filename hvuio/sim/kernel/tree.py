"""The emulated guest kernel's sysfs / dev layout under a sysroot (VMBUS.md §2.1–2.4, §5.1–5.3).

`SimDevice` / `SimChannel` are the emulator's model of a VMBus device and its channels;
`SimTree` writes what the VMBus bus, hv_netvsc and uio_hv_generic expose for them:
`sys/bus/vmbus/{devices,drivers}`, `sys/class/{uio,net}`, `sys/module`, `dev/uioN` (the socket
itself is made by the kernel), map backing files and the VM's guest-physical memory (memory.py)
under `run/hvuio-sim/` and the marker file; and the machine facts a guest tool reads: DMI
identity, `proc/sys/kernel/osrelease` (the profile's version), `proc/cpuinfo` (with the
`hypervisor` flag) and `sys/devices/system/cpu/online` (the emulated VM has as many CPUs as the
emulator may run on). With accelerated networking a PCI pass-through device carries a VF:
`<vpci device>/pci<dom>:00/<dom>:00:02.0/` and its netdev in `sys/class/net` with the NIC's MAC
(`add_vf`; the netdev's name is the caller's: SimHost's VF veth).
Every file the kernel (re)writes is replaced atomically (temp file + rename), so the guest never
reads half a value and the kernel's inotify watch only sees the guest's own writes. The
write-only control files (`new_id`, `remove_id`, `bind`, `unbind`, `drivers_probe`) are FIFOs
read by the kernel: every line written is one write(), none is lost to a later one, and reading
them is pointless as on a real kernel.

Only layout here: which writes mean what is `bus.py` (and `uio.py` for uio_hv_generic); opening
maps/sockets is `shm.py`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from hvuio.safefs import make_dirs
from hvuio.sim.kernel.memory import CHUNK_SIZE, guest_memory_path
from hvuio.sim.kernel.profiles import NIC_CLASS, UIO_NAME, UIO_VERSION
from hvuio.sim.kernel.shm import MARKER, map_backing, state_dir

WRITE_ONLY: Final = ("new_id", "remove_id", "bind", "unbind")
UIO_MAJOR: Final = 240
_PHYS_BASE: Final = 0x0000000104000000  # fake guest-physical base of map 0 (opaque, VMBUS.md §1.2.7)
_VIRT_BASE: Final = 0xFFFFB0A000000000  # fake kernel-virtual base of maps 1..4


@dataclass
class SimChannel:
    """One VMBus channel of a device: the primary (subchannel_id 0) or a subchannel."""

    relid: int
    subchannel_id: int
    monitor_id: int | None
    ring_size: int = 0  # per direction, bytes (0 until the ring exists)
    ring_backing: Path | None = None  # file holding TX ring then RX ring
    ring_visible: bool = False
    cpu: int = 0
    interrupts: int = 0
    events: int = 0


@dataclass
class SimDevice:
    """A VMBus device (primary channel) as the emulated kernel sees it."""

    guid: str
    class_id: str
    relid: int
    monitor_id: int | None
    ifname: str | None = None
    mac: str | None = None
    driver: str | None = None
    override: str | None = None  # None prints as "(null)"
    uio: str | None = None  # "uio0" while bound to uio_hv_generic
    maps: list[tuple[str, int]] = field(default_factory=list)
    channels: dict[int, SimChannel] = field(default_factory=dict)
    opens: int = 0
    event: int = 0  # last uio event count written to sysfs (the live count is irq.event)
    state: int = 0
    rescinded: bool = False
    irq: Any = None  # the kernel's uio.GuestIrq: event count + open /dev/uioN sockets
    opener_pid: int | None = None  # SO_PEERCRED pid of the /dev/uioN connection that opened the channel

    @property
    def is_nic(self) -> bool:
        return self.class_id == NIC_CLASS

    @property
    def primary(self) -> SimChannel:
        return self.channels[self.relid]


def modalias(class_id: str) -> str:
    """vmbus:<32 hex> of the class GUID in memory order (first three fields byte-swapped)."""
    return "vmbus:" + uuid.UUID(class_id).bytes_le.hex()


class SimTree:
    """Writes the emulated kernel's files under `sysroot`; see the module docstring."""

    def __init__(self, sysroot: Path | str) -> None:
        self.root = Path(sysroot)
        self.sys = self.root / "sys"
        self.bus = self.sys / "bus" / "vmbus"
        self.devices = self.bus / "devices"
        self.drivers = self.bus / "drivers"
        self.class_uio = self.sys / "class" / "uio"
        self.class_net = self.sys / "class" / "net"
        self.dev = self.root / "dev"
        self.state = state_dir(self.root)

    # -- primitives ------------------------------------------------------------------------------

    @staticmethod
    def write(path: Path, text: str, mode: int = 0o644) -> None:
        """Replace `path` atomically with `text` + newline (a fresh private temporary name, no
        symlink followed, mode exact)."""
        tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}")
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
        try:
            os.fchmod(fd, mode)
            os.write(fd, (text + "\n").encode())
        finally:
            os.close(fd)
        os.replace(tmp, path)

    @staticmethod
    def mkdir(path: Path) -> None:
        """`path` and its missing parents, each 0755 whatever the umask."""
        if not path.is_dir():
            SimTree.mkdir(path.parent)
            with contextlib.suppress(FileExistsError):
                path.mkdir(mode=0o755)

    @staticmethod
    def backing_file(path: Path, size: int) -> None:
        """A new sparse backing file of `size` bytes, 0600: guest memory nobody else may read."""
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            os.ftruncate(fd, size)
        finally:
            os.close(fd)

    @staticmethod
    def _fifo(path: Path) -> None:
        """A write-only control file: a FIFO the kernel reads, so no write is ever lost."""
        if not path.exists():
            os.mkfifo(path, 0o600)

    @staticmethod
    def _symlink(link: Path, target: Path) -> None:
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(os.path.relpath(target, link.parent))

    @staticmethod
    def _unlink(path: Path) -> None:
        if path.is_symlink() or path.is_file() or path.is_socket():
            path.unlink()

    # -- bus, drivers, modules -------------------------------------------------------------------

    def create(self, profile_name: str, modules: list[str], guest_memory: int = 0) -> None:
        """Lay out the bus, the given driver modules, DMI identity, the shared pages and
        `guest_memory` bytes of guest-physical memory (0: none; a multiple of 2 MiB).

        The sysroot is made 0700 when missing and must otherwise be a directory only root or we
        can write (hvuio.safefs): everything below is then out of other users' reach."""
        make_dirs(self.root, 0o700)
        for d in (self.devices, self.drivers, self.class_uio, self.class_net, self.dev, self.state):
            self.mkdir(d)
        self._fifo(self.bus / "drivers_probe")
        self.write(self.bus / "drivers_autoprobe", "1")
        self.write(self.bus / "hibernation", "0")
        self.mkdir(self.sys / "module" / "hv_vmbus")
        for mod in modules:
            self.add_driver(mod)
        dmi = self.sys / "class" / "dmi" / "id"
        self.mkdir(dmi)
        self.write(dmi / "sys_vendor", "Microsoft Corporation")
        self.write(dmi / "product_name", "Virtual Machine")
        self.write_machine(profile_name)
        for page in ("int_page", "monitor_page"):
            self.backing_file(self.state / page, 4096)
        if guest_memory % CHUNK_SIZE or guest_memory < 0:
            raise ValueError(f"guest memory of {guest_memory} bytes is not a multiple of {CHUNK_SIZE}")
        if guest_memory:
            self.backing_file(guest_memory_path(self.root), guest_memory)
        self.write(self.root / MARKER, f'{{"profile": "{profile_name}", "pid": {os.getpid()}}}')

    def write_machine(self, profile_name: str) -> None:
        """proc/sys/kernel/osrelease, proc/cpuinfo and sys/devices/system/cpu/online of the
        emulated VM: the kernel release of the profile; one cpuinfo entry per CPU, with the
        `hypervisor` flag a Hyper-V guest's CPUs carry; CPUs 0..n-1 online."""
        cpus = max(1, len(os.sched_getaffinity(0)))
        kernel = self.root / "proc" / "sys" / "kernel"
        self.mkdir(kernel)
        self.write(kernel / "osrelease", f"{profile_name}.0-hvuio-sim", 0o444)
        entries = [f"processor\t: {i}\nvendor_id\t: GenuineIntel\nmodel name\t: hvuio emulated CPU\n"
                   f"flags\t\t: fpu tsc msr pae cx8 apic sep pge cmov pat clflush mmx fxsr sse sse2 "
                   f"ht syscall nx lm constant_tsc rep_good nopl cpuid pni ssse3 cx16 sse4_1 sse4_2 "
                   f"x2apic popcnt hypervisor lahf_lm\n" for i in range(cpus)]
        self.write(self.root / "proc" / "cpuinfo", "\n".join(entries), 0o444)
        cpu = self.sys / "devices" / "system" / "cpu"
        self.mkdir(cpu)
        self.write(cpu / "online", "0" if cpus == 1 else f"0-{cpus - 1}", 0o444)

    def add_driver(self, name: str) -> None:
        drv = self.drivers / name
        self.mkdir(drv)
        for f in WRITE_ONLY:
            self._fifo(drv / f)
        self.mkdir(self.sys / "module" / name)

    def destroy(self) -> None:
        """Remove everything the emulator created under the sysroot (marker first)."""
        self._unlink(self.root / MARKER)
        self._unlink(guest_memory_path(self.root))
        for top in (self.sys, self.dev, self.state, self.root / "proc", self.root / "run" / "hvuio"):  # + bind journals
            shutil.rmtree(top, ignore_errors=True)
        with contextlib.suppress(OSError):
            (self.root / "run").rmdir()   # only when nothing else lives there

    # -- devices and channels --------------------------------------------------------------------

    def device_dir(self, dev: SimDevice) -> Path:
        return self.devices / dev.guid

    def add_device(self, dev: SimDevice, with_override: bool) -> Path:
        d = self.device_dir(dev)
        self.mkdir(d / "channels")
        self.write(d / "id", str(dev.relid), 0o444)
        self.write(d / "class_id", "{" + dev.class_id + "}", 0o444)
        self.write(d / "device_id", "{" + dev.guid + "}", 0o444)
        self.write(d / "modalias", modalias(dev.class_id), 0o444)
        self.write(d / "vendor", "0x1414", 0o444)
        self.write(d / "device", "0x3" if dev.is_nic else "0x0", 0o444)
        self.write(d / "numa_node", "0", 0o444)
        if dev.monitor_id is not None:
            self.write(d / "monitor_id", str(dev.monitor_id), 0o444)
            for side in ("server", "client"):
                self.write(d / f"{side}_monitor_pending", "0", 0o444)
                self.write(d / f"{side}_monitor_latency", "0", 0o444)
                self.write(d / f"{side}_monitor_conn_id", str(dev.relid), 0o444)
        if with_override:
            self.set_override(dev)
        self.set_state(dev)
        self.set_event(dev)
        return d

    def remove_device(self, dev: SimDevice) -> None:
        self.set_driver(dev, None)
        self.remove_net(dev)
        shutil.rmtree(self.device_dir(dev), ignore_errors=True)

    def set_state(self, dev: SimDevice) -> None:
        self.write(self.device_dir(dev) / "state", str(dev.state), 0o444)

    def set_override(self, dev: SimDevice) -> None:
        self.write(self.device_dir(dev) / "driver_override", dev.override or "(null)")

    def set_event(self, dev: SimDevice) -> None:
        if dev.uio:
            self.write(self.device_dir(dev) / "uio" / dev.uio / "event", str(dev.event), 0o444)

    def set_vp_mapping(self, dev: SimDevice) -> None:
        lines = [f"{c.relid}:{c.cpu}" for c in sorted(dev.channels.values(), key=lambda c: c.subchannel_id)]
        self.write(self.device_dir(dev) / "channel_vp_mapping", "\n".join(lines), 0o444)

    def set_driver(self, dev: SimDevice, driver: str | None) -> None:
        """Point the device's `driver` link (and the driver's back link) at `driver` or remove both."""
        d = self.device_dir(dev)
        if dev.driver:
            self._unlink(self.drivers / dev.driver / dev.guid)
        self._unlink(d / "driver")
        dev.driver = driver
        if driver:
            self._symlink(d / "driver", self.drivers / driver)
            self._symlink(self.drivers / driver / dev.guid, d)

    def channel_dir(self, dev: SimDevice, chan: SimChannel) -> Path:
        return self.device_dir(dev) / "channels" / str(chan.relid)

    def add_channel(self, dev: SimDevice, chan: SimChannel) -> None:
        """channels/<relid>/ with its attributes; the ring stays hidden (show_ring adds it)."""
        c = self.channel_dir(dev, chan)
        self.mkdir(c)
        self.write(c / "cpu", str(chan.cpu))
        self.write(c / "subchannel_id", str(chan.subchannel_id), 0o444)
        if chan.monitor_id is not None:
            self.write(c / "monitor_id", str(chan.monitor_id), 0o444)
            self.write(c / "pending", "0", 0o444)
            self.write(c / "latency", "0", 0o444)
        for name in ("interrupts", "events", "intr_in_full", "intr_out_empty", "out_full_first",
                     "out_full_total", "in_mask", "out_mask", "read_avail", "write_avail"):
            self.write(c / name, "0", 0o444)
        self.set_vp_mapping(dev)

    def remove_channel(self, dev: SimDevice, chan: SimChannel) -> None:
        shutil.rmtree(self.channel_dir(dev, chan), ignore_errors=True)
        dev.channels.pop(chan.relid, None)
        if chan.ring_backing is not None and chan.subchannel_id != 0:
            chan.ring_backing.unlink(missing_ok=True)
        self.set_vp_mapping(dev)

    def show_ring(self, dev: SimDevice, chan: SimChannel) -> None:
        """Make channels/<relid>/ring visible (a link to the channel's backing file)."""
        if chan.ring_backing is None or not self.channel_dir(dev, chan).is_dir():
            return
        self._symlink(self.channel_dir(dev, chan) / "ring", chan.ring_backing)
        chan.ring_visible = True

    def hide_ring(self, dev: SimDevice, chan: SimChannel) -> None:
        self._unlink(self.channel_dir(dev, chan) / "ring")
        chan.ring_visible = False

    def write_channel_counters(self, dev: SimDevice, chan: SimChannel, snap: dict[str, int]) -> None:
        """Refresh a channel's counters and ring snapshot files (and the device-level copies)."""
        c = self.channel_dir(dev, chan)
        if not c.is_dir():
            return
        values = {"interrupts": chan.interrupts, "events": chan.events, "in_mask": snap["in_mask"],
                  "out_mask": snap["out_mask"], "read_avail": snap["in_read_avail"],
                  "write_avail": snap["out_write_avail"]}
        for name, value in values.items():
            self._write_if_changed(c / name, str(value))
        if chan.subchannel_id == 0:
            d = self.device_dir(dev)
            for name in ("intr_mask", "read_index", "write_index", "read_bytes_avail", "write_bytes_avail"):
                for side in ("in", "out"):
                    self._write_if_changed(d / f"{side}_{name}", str(snap.get(f"{side}_{name}", 0)))

    def _write_if_changed(self, path: Path, text: str) -> None:
        try:
            if path.read_text() == text + "\n":
                return
        except OSError:
            pass
        self.write(path, text, 0o444)

    # -- hv_netvsc -------------------------------------------------------------------------------

    def add_net(self, dev: SimDevice) -> None:
        if not dev.ifname:
            return
        n = self.class_net / dev.ifname
        self.mkdir(n)
        self.write(n / "address", dev.mac or "00:15:5d:00:00:00", 0o444)
        self.write(n / "mtu", "1500", 0o444)
        self.write(n / "operstate", "up", 0o444)
        self._symlink(n / "device", self.device_dir(dev))

    def add_vf(self, vpci: SimDevice, ifname: str, mac: str) -> Path:
        """The PCI function of a VF under the PCI pass-through device `vpci` and its netdev
        `ifname` with `mac` (VMBUS.md §2.5): the domain is bytes 4-5 of the instance GUID as
        Linux's pci-hyperv takes it (drivers/pci/controller/pci-hyperv.c `hv_pci_probe`); slot
        02.0 and the Mellanox VF ids are emulator choices. Returns the function's directory."""
        raw = uuid.UUID(vpci.guid).bytes_le
        domain = f"{raw[5] << 8 | raw[4]:04x}"
        fn = self.device_dir(vpci) / f"pci{domain}:00" / f"{domain}:00:02.0"
        self.mkdir(fn / "net")
        for name, value in (("vendor", "0x15b3"), ("device", "0x101a"), ("class", "0x020000"), ("numa_node", "0")):
            self.write(fn / name, value, 0o444)
        n = self.class_net / ifname
        self.mkdir(n)
        self.write(n / "address", mac, 0o444)
        self.write(n / "mtu", "1500", 0o444)
        self.write(n / "operstate", "up", 0o444)
        self._symlink(n / "device", fn)
        self._symlink(fn / "net" / ifname, n)
        return fn

    def remove_net(self, dev: SimDevice) -> None:
        if dev.ifname:
            shutil.rmtree(self.class_net / dev.ifname, ignore_errors=True)

    # -- uio_hv_generic --------------------------------------------------------------------------

    def add_uio(self, dev: SimDevice, number: int, backing_sizes: list[int]) -> None:
        """uio/uioN/ with name, version, event, dev, maps/mapK; backing files; class/uio link.

        `dev.maps` holds (name, size) per map; `backing_sizes` the size of each backing file
        (map 0 may be larger when the profile's fixed ring st_size exceeds the allocation).
        """
        name = f"uio{number}"
        dev.uio = name
        final = self.device_dir(dev) / "uio" / name
        u = final.with_name(f".tmp-{name}")  # filled, then renamed: the guest never sees half
        self.mkdir(u / "maps")
        self.write(u / "name", UIO_NAME, 0o444)
        self.write(u / "version", UIO_VERSION, 0o444)
        self.write(u / "dev", f"{UIO_MAJOR}:{number}", 0o444)
        self.write(u / "event", str(dev.event), 0o444)
        self._symlink(u / "device", self.device_dir(dev))
        backing_dir = map_backing(self.root, name, 0).parent
        shutil.rmtree(backing_dir, ignore_errors=True)
        self.mkdir(backing_dir)
        for k, (map_name, size) in enumerate(dev.maps):
            m = u / "maps" / f"map{k}"
            m.mkdir(mode=0o755)
            addr = _PHYS_BASE + number * 0x1000000 if k == 0 else _VIRT_BASE + (number * 8 + k) * 0x2000000
            self.write(m / "name", map_name, 0o444)
            self.write(m / "addr", f"0x{addr:016x}", 0o444)
            self.write(m / "size", f"0x{size:016x}", 0o444)
            self.write(m / "offset", "0x0", 0o444)
            target = map_backing(self.root, name, k)
            if k in (1, 2):
                target.symlink_to(self.state / ("int_page" if k == 1 else "monitor_page"))
            else:
                self.backing_file(target, backing_sizes[k])
        # class/uio/uioN first (dangling for a moment): when the device's uio/uioN appears, the
        # class entry the guest reads the maps through is already there.
        self._symlink(self.class_uio / name, final)
        os.rename(u, final)

    def remove_uio(self, dev: SimDevice) -> None:
        if not dev.uio:
            return
        self._unlink(self.class_uio / dev.uio)
        self._unlink(self.dev / dev.uio)
        shutil.rmtree(self.device_dir(dev) / "uio", ignore_errors=True)
        shutil.rmtree(map_backing(self.root, dev.uio, 0).parent, ignore_errors=True)
        dev.uio = None
