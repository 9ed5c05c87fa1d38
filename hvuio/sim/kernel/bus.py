"""The emulated guest kernel's core: VMBus bus and driver binding, the kernel thread, the host API.

`SimKernel(sysroot, profile, nics=1)` builds the tree (tree.py), then a watcher thread applies
kernel semantics to what the guest writes: `new_id`, `remove_id`, `bind`, `unbind` of every
driver and the bus's `drivers_probe` (FIFOs, see tree.py), and each device's `driver_override`
(a regular file). One inotify queue (IN_CLOSE_WRITE) orders all of them as the guest closed
them; for a FIFO an event consumes the lines in the pipe when it is handled (inotify merges
identical unread events). Errors a real kernel returns from write() (EEXIST, ENODEV, EINVAL)
cannot come back this way: they are logged in `dmesg` and the state is left unchanged; the
guest verifies by reading back, as it must on real kernels too. Binding hv_netvsc adds the
interface; binding uio_hv_generic is its probe (uio.py).

The same thread serves the simulated `/dev/uioN` sockets, through uio.py (`UioDriver`: opens,
irqcontrol, interrupts; shm.py has the sockets), runs delayed actions (late `ring` files) and
refreshes the ring snapshot attributes.

Use it in-process (tests) or through `hvuio sim start`:

    with SimKernel(tmp_path, "6.17", nics=1) as kernel:   # thread started, tree built
        nic = kernel.nics[0]            # SimDevice: guid, ifname, relid, uio, channels ...
    # tree removed, every fd got EOF

Options: `guest_memory` (bytes of the VM's guest-physical memory file, memory.py; 0 = none),
`ifnames`, `nic_monitored`, `extra_devices` (keyboard, SCSI, heartbeat, shutdown),
`uio_module` (False = module missing), `ring_delay` (late `ring` files), `monitor_poll`,
`rescind_subchannels_on_close` (VMBUS.md §6.1). `dmesg` lists refused writes, `trace` every write.

HOST HOOKS (the VSP plugs in here; all run on the kernel thread with the kernel lock held; keep
them short and never block):

* `on_open(device)`       first open of /dev/uioN: the primary channel was opened, ring headers
                          were reinitialised; the host may start reading the guest's TX ring.
                          Raise OSError(errno) to fail the guest's open() (a host refusing
                          OPENCHANNEL: the kernel reports EAGAIN, VMBUS.md §1.6.21).
* `on_close(device)`      last close: subchannels were closed, then the primary.
* `on_guest_signal(device, relid)`
                          the guest signalled the host: write(1) on a non-monitored channel (per
                          profile), or, with `monitor_poll=<seconds>`, a trigger bit of a
                          monitored channel found set (and cleared) in the monitor page.

HOST API (any thread):

* `signal_guest(device, relid) -> bool`    host interrupt: event++ (auto-mask per profile); the
                                           count lives in the device's `irq` (uio.GuestIrq),
                                           which a host pump may also raise, from C;
* `add_subchannel(device, index) -> relid` offer a subchannel: channels/<relid>/ now, its
                                           `ring` file `ring_delay` seconds later;
* `rescind(device)`                        EOF to every open fd, tree removed;
* `offer(class_id, ifname=..., guid=...)`  hot-add / re-offer a device (autoprobed);
* `offer_vf(nic, ifname)`                  accelerated networking: a PCI pass-through device
                                           (bound to hv_pci) whose VF netdev `ifname` has the
                                           NIC's MAC (SimHost offers it with the VF's veth name
                                           and rescinds it with `rescind`);
* `ring_path(device, relid)`, `map_path(device, k)`, `monitor_page_path()`, `int_page_path()`,
  `guest_memory_path()` (None when the VM has none; page p at (p - GUEST_PFN_BASE) * 4096):
  the backing files (TX ring at 0, RX ring at S = size / 2), to be mmap'ed MAP_SHARED;
* `fire_timers()`                          run delayed actions now (deterministic tests).

What must not live here: uio_hv_generic's probe, opens and interrupts (uio.py), the tree's
layout (tree.py), host code of any kind. No guest code either: the guest side of the seam is
hvuio.device.platform.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import re
import selectors
import struct
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from hvuio.sim.kernel import profiles as P
from hvuio.sim.kernel.memory import DEFAULT_GUEST_MEMORY_MIB, MIB, guest_memory_path
from hvuio.sim.kernel.shm import map_backing
from hvuio.sim.kernel.tree import SimChannel, SimDevice, SimTree
from hvuio.sim.kernel.uio import GuestIrq, UioDriver

log = logging.getLogger(__name__)

IN_CLOSE_WRITE = 0x00000008
_EVENT_HDR = struct.Struct("iIII")
_GUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_SNAPSHOT_PERIOD = 0.2

DeviceHook = Callable[[SimDevice], None]
SignalHook = Callable[[SimDevice, int], None]


class Inotify:
    """Minimal inotify through ctypes: IN_CLOSE_WRITE on directories, names reported."""

    def __init__(self) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        fd = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        self.fd: int = fd
        self.dirs: dict[int, Path] = {}

    def watch(self, directory: Path) -> None:
        wd = self._libc.inotify_add_watch(self.fd, os.fsencode(str(directory)), IN_CLOSE_WRITE)
        if wd < 0:
            raise OSError(ctypes.get_errno(), f"inotify_add_watch {directory} failed")
        self.dirs[wd] = directory

    def read(self) -> list[tuple[Path, str]]:
        try:
            buf = os.read(self.fd, 65536)
        except BlockingIOError:
            return []
        out: list[tuple[Path, str]] = []
        pos = 0
        while pos + _EVENT_HDR.size <= len(buf):
            wd, mask, _cookie, length = _EVENT_HDR.unpack_from(buf, pos)
            raw = buf[pos + _EVENT_HDR.size: pos + _EVENT_HDR.size + length]
            pos += _EVENT_HDR.size + length
            name = raw.rstrip(b"\0").decode(errors="replace")
            if mask & IN_CLOSE_WRITE and wd in self.dirs and name:
                out.append((self.dirs[wd], name))
        return out

    def close(self) -> None:
        os.close(self.fd)


class SimKernel:
    """The emulated kernel; see the module docstring for hooks and host API."""

    def __init__(
        self,
        sysroot: Path | str,
        profile: str | P.KernelProfile = "6.17",
        nics: int = 1,
        *,
        guest_memory: int = DEFAULT_GUEST_MEMORY_MIB * MIB,
        ifnames: list[str] | None = None,
        nic_monitored: bool = True,
        extra_devices: bool = True,
        uio_module: bool = True,
        ring_delay: float = 0.05,
        monitor_poll: float | None = None,
        rescind_subchannels_on_close: bool = True,
        on_open: DeviceHook | None = None,
        on_close: DeviceHook | None = None,
        on_guest_signal: SignalHook | None = None,
    ) -> None:
        self.sysroot = Path(sysroot)
        self.profile = profile if isinstance(profile, P.KernelProfile) else P.get_profile(profile)
        self.tree = SimTree(self.sysroot)
        self.ring_delay = ring_delay
        self.guest_memory = guest_memory
        self.monitor_poll = monitor_poll
        # VMBUS.md §6.1 leaves open whether the host rescinds subchannels when the primary closes
        self.rescind_subchannels_on_close = rescind_subchannels_on_close
        self.on_open = on_open
        self.on_close = on_close
        self.on_guest_signal = on_guest_signal
        self.devices: dict[str, SimDevice] = {}
        self.dynids: dict[str, set[str]] = {}
        self.dmesg: list[str] = []
        self.trace: list[str] = []  # every guest write applied, in order (for tests and debugging)
        self.lock = threading.RLock()
        self._next_relid = 1
        self._next_monitor = 1
        self._n_nics = nics
        self._ifnames = ifnames or [f"hveth{i}" for i in range(nics)]
        self._nic_monitored = nic_monitored
        self._extra = extra_devices
        self._modules = list(P.STATIC_DRIVERS) + (["uio_hv_generic"] if uio_module else [])
        self._timers: list[tuple[float, Callable[[], None]]] = []
        self._sel = selectors.DefaultSelector()
        self._uio = UioDriver(self, self._sel)
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._inotify: Inotify | None = None
        self._fifos: dict[Path, int] = {}
        self._fifo_buf: dict[Path, bytes] = {}
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._last_snapshot = 0.0

    # -- life cycle ------------------------------------------------------------------------------

    def __enter__(self) -> SimKernel:
        self.start()
        return self

    def __exit__(self, t: type[BaseException] | None, v: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        """Build the tree, offer the devices, bind in-kernel drivers, start the watcher thread."""
        if (self.sysroot / "sys").exists():
            raise FileExistsError(f"{self.sysroot}/sys already exists; refusing to build a sim tree there")
        self.tree.create(self.profile.name, self._modules, self.guest_memory)
        self._inotify = Inotify()
        self._inotify.watch(self.tree.bus)
        self._open_fifo(self.tree.bus / "drivers_probe")
        for mod in self._modules:
            self._inotify.watch(self.tree.drivers / mod)
            for name in ("new_id", "remove_id", "bind", "unbind"):
                self._open_fifo(self.tree.drivers / mod / name)
            self.dynids[mod] = set()
        self._sel.register(self._inotify.fd, selectors.EVENT_READ, "inotify")
        self._sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        with self.lock:
            for i in range(self._n_nics):
                self.offer(P.NIC_CLASS, ifname=self._ifnames[i], monitored=self._nic_monitored)
            if self._extra:
                self.offer(P.HEARTBEAT_CLASS, monitored=False)
                self.offer(P.SHUTDOWN_CLASS, monitored=False)
                self.offer(P.KEYBOARD_CLASS, monitored=False)
                self.offer(P.SCSI_CLASS, monitored=True)
        self._thread = threading.Thread(target=self._run, name="hvuio-sim-kernel", daemon=True)
        self._thread.start()

    def stop(self, remove_tree: bool = True) -> None:
        """Stop the thread, close every socket (EOF to the guest), remove the tree."""
        self._stop.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        with self.lock:
            self._uio.close()
            if self._inotify is not None:
                self._inotify.close()
                self._inotify = None
            for fd in self._fifos.values():
                os.close(fd)
            self._fifos.clear()
            if remove_tree:
                self.tree.destroy()

    def _open_fifo(self, path: Path) -> None:
        # O_RDWR keeps a writer on our side: the guest's open() never blocks and we never see EOF
        self._fifos[path] = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        self._fifo_buf[path] = b""

    def _fifo_lines(self, path: Path) -> list[str]:
        """The guest writes waiting in a control FIFO, read once.

        Read once per inotify event: inotify merges identical unread events, so one event may
        stand for several writes already in the pipe, but a write that lands while we act on this
        one has an event of its own and must wait for it (else it would overtake writes to other
        files that the guest made before it).
        """
        try:
            self._fifo_buf[path] += os.read(self._fifos[path], 65536)
        except BlockingIOError:
            pass
        text, sep, rest = self._fifo_buf[path].rpartition(b"\n")
        if not sep:  # a write without newline: take it whole
            text, rest = rest, b""
        self._fifo_buf[path] = rest
        return [line.strip() for line in text.decode(errors="replace").splitlines() if line.strip()]

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    def after(self, delay: float, fn: Callable[[], None]) -> None:
        """Run `fn` on the kernel thread, under the lock, `delay` seconds from now."""
        with self.lock:
            self._timers.append((time.monotonic() + delay, fn))
        self._wake()

    def fire_timers(self) -> int:
        """Run every pending delayed action now (late `ring` files); returns how many ran.

        Tests use a long `ring_delay` plus this call to see the "directory first, ring later"
        window deterministically, without timing assumptions.
        """
        with self.lock:
            due, self._timers = self._timers, []
            for _, fn in sorted(due, key=lambda t: t[0]):
                self._safe(fn)
            return len(due)

    def printk(self, text: str) -> None:
        """A kernel message: kept in `dmesg` and logged."""
        self.dmesg.append(text)
        log.info("%s", text)

    # -- devices ---------------------------------------------------------------------------------

    @property
    def nics(self) -> list[SimDevice]:
        return [d for d in self.devices.values() if d.is_nic]

    def device(self, name: str) -> SimDevice:
        """A device by instance GUID or interface name (KeyError otherwise)."""
        for dev in self.devices.values():
            if name in (dev.guid, dev.ifname):
                return dev
        raise KeyError(name)

    def offer(self, class_id: str, *, ifname: str | None = None, monitored: bool = True,
              guid: str | None = None) -> SimDevice:
        """Offer a device (boot or hot-add): tree, channel dir, then autoprobe like the bus."""
        with self.lock:
            relid = self._alloc_relid()
            monitor_id = self._alloc_monitor() if monitored else None
            dev = SimDevice(guid=guid or str(uuid.uuid4()), class_id=class_id, relid=relid,
                            monitor_id=monitor_id, ifname=ifname if class_id == P.NIC_CLASS else None,
                            irq=GuestIrq())
            if dev.is_nic:
                dev.mac = "00:15:5d:%02x:%02x:%02x" % tuple(uuid.UUID(dev.guid).bytes[-3:])
            self.devices[dev.guid] = dev
            d = self.tree.add_device(dev, self.profile.driver_override)
            dev.channels[relid] = SimChannel(relid=relid, subchannel_id=0, monitor_id=monitor_id)
            self.tree.add_channel(dev, dev.primary)
            if self._inotify is not None:
                self._inotify.watch(d)
            self._probe(dev)
            return dev

    def offer_vf(self, nic: SimDevice, ifname: str) -> SimDevice:
        """Accelerated networking for `nic`: offer a PCI pass-through device (autoprobed by
        hv_pci) whose PCI function carries the VF netdev `ifname` with the NIC's MAC, as Azure
        does; Linux pairs the two by MAC (netvsc_drv.c `get_netvsc_byslot`). `ifname` names a
        netdev that carries the VF's frames (SimHost: the VF's veth); `rescind` takes it away."""
        with self.lock:
            vpci = self.offer(P.VPCI_CLASS, monitored=False)
            vpci.ifname = ifname
            vpci.mac = nic.mac
            self.tree.add_vf(vpci, vpci.ifname, nic.mac or "00:15:5d:00:00:00")
            return vpci

    def _alloc_relid(self) -> int:
        relid = self._next_relid
        self._next_relid += 1
        return relid

    def _alloc_monitor(self) -> int | None:
        if self._next_monitor > 127:
            return None
        mid = self._next_monitor
        self._next_monitor += 1
        return mid

    # -- driver matching (VMBUS.md §2.3) -------------------------------------------------------------

    def _matches(self, dev: SimDevice, drv: str) -> bool:
        if drv not in self.dynids:
            return False
        if dev.override is not None:
            return dev.override == drv
        return dev.class_id in self.dynids[drv] or dev.class_id in P.STATIC_DRIVERS.get(drv, frozenset())

    def _probe(self, dev: SimDevice) -> None:
        """drivers_probe / autoprobe: attach the first matching driver (dynamic ids first)."""
        if dev.driver is not None or dev.rescinded:
            return
        order = sorted(self.dynids, key=lambda d: (dev.class_id not in self.dynids[d], d))
        for drv in order:
            if self._matches(dev, drv):
                self._attach(dev, drv)
                return

    def _attach(self, dev: SimDevice, drv: str) -> bool:
        if drv == P.UIO_NAME:
            if not self._uio.probe(dev):
                return False
        elif drv == "hv_netvsc":
            self.tree.add_net(dev)
            dev.state = 3
        else:
            dev.state = 3
        self.tree.set_driver(dev, drv)
        self.tree.set_state(dev)
        return True

    def _detach(self, dev: SimDevice) -> None:
        if dev.driver == P.UIO_NAME:
            self._uio.remove(dev)
        elif dev.driver == "hv_netvsc":
            self.tree.remove_net(dev)
        dev.state = 2
        self.tree.set_driver(dev, None)
        if self.tree.device_dir(dev).is_dir():
            self.tree.set_state(dev)

    # -- guest writes ----------------------------------------------------------------------------

    def _on_write(self, directory: Path, name: str, value: str | None = None) -> None:
        """One guest write of `value` (None: read it from the regular file `name`)."""
        if value is None and directory / name in self._fifos:
            for line in self._fifo_lines(directory / name):
                self._on_write(directory, name, line)
            return
        if value is None:
            try:
                value = (directory / name).read_text().strip()
            except OSError:
                return
        self.trace.append(f"{directory.name}/{name} <- {value!r}")
        if directory == self.tree.bus and name == "drivers_probe":
            dev = self.devices.get(value.lower())
            if dev is None:
                self.printk(f"drivers_probe {value!r}: ENODEV")
            else:
                self._probe(dev)
        elif directory.parent == self.tree.drivers and name in ("new_id", "remove_id", "bind", "unbind"):
            getattr(self, f"_drv_{name}")(directory.name, value)
        elif directory.parent == self.tree.devices and name == "driver_override":
            dev = self.devices.get(directory.name)
            if dev is None or not self.profile.driver_override:
                return
            dev.override = value or None
            if value == "(null)":
                dev.override = None
            if not value:
                self.tree.set_override(dev)

    def _drv_new_id(self, drv: str, value: str) -> None:
        if not _GUID_RE.match(value):
            self.printk(f"{drv}/new_id {value!r}: EINVAL")
            return
        guid = value.lower()
        if guid in self.dynids[drv]:
            self.printk(f"{drv}/new_id {guid}: EEXIST")
            return
        self.dynids[drv].add(guid)
        for dev in list(self.devices.values()):
            if dev.class_id == guid and dev.driver is None and self._matches(dev, drv):
                self._attach(dev, drv)

    def _drv_remove_id(self, drv: str, value: str) -> None:
        guid = value.lower()
        if guid not in self.dynids[drv]:
            self.printk(f"{drv}/remove_id {value!r}: ENODEV")
            return
        self.dynids[drv].discard(guid)

    def _drv_bind(self, drv: str, value: str) -> None:
        dev = self.devices.get(value.lower())
        if dev is None or dev.driver is not None or not self._matches(dev, drv):
            self.printk(f"{drv}/bind {value!r}: ENODEV")
            return
        if not self._attach(dev, drv):
            self.printk(f"{drv}/bind {value!r}: ENODEV (probe failed)")

    def _drv_unbind(self, drv: str, value: str) -> None:
        dev = self.devices.get(value.lower())
        if dev is None or dev.driver != drv:
            self.printk(f"{drv}/unbind {value!r}: ENODEV")
            return
        self._detach(dev)

    # -- host API --------------------------------------------------------------------------------

    def signal_guest(self, dev: SimDevice, relid: int) -> bool:
        """Host interrupt on channel `relid`: auto-mask per profile, event++, wake readers."""
        return self._uio.signal_guest(dev, relid)

    def add_subchannel(self, dev: SimDevice, index: int) -> int:
        """Offer subchannel `index` (>= 1): directory now, `ring` after `ring_delay` (VMBUS.md §1.7)."""
        with self.lock:
            if dev.opens == 0 or dev.uio is None:
                raise RuntimeError(f"{dev.guid}: subchannels need an opened primary")
            relid = self._alloc_relid()
            mid = self._alloc_monitor() if dev.monitor_id is not None else None
            chan = SimChannel(relid=relid, subchannel_id=index, monitor_id=mid)
            dev.channels[relid] = chan
            self.tree.add_channel(dev, chan)

            def make_ring() -> None:
                if dev.channels.get(relid) is not chan or dev.uio is None:
                    return
                chan.ring_size = P.subchannel_ring_size(self.profile)
                backing = map_backing(self.sysroot, dev.uio, 0).parent / f"ring{relid}"
                self.tree.backing_file(backing, P.ring_file_size(self.profile, 2 * chan.ring_size))
                chan.ring_backing = backing
                self._uio.init_ring(chan, self.profile.mask_at_open)
                self.tree.show_ring(dev, chan)

            self.after(self.ring_delay, make_ring)
            return relid

    def rescind(self, dev: SimDevice) -> None:
        """Host rescind of the primary: EOF to every open fd, then the device disappears."""
        with self.lock:
            if dev.opens and not self.profile.rescind_fixed:
                self.printk(f"{dev.guid}: rescind of an open primary: kernel oops (pre-2024 bug); device is dead")
                self._uio.close_fds(dev)
                dev.rescinded = True
                return
            dev.rescinded = True
            if dev.driver is not None:
                self._detach(dev)
            self.tree.remove_device(dev)
            del self.devices[dev.guid]

    def ring_path(self, dev: SimDevice, relid: int) -> Path:
        chan = dev.channels[relid]
        if chan.ring_backing is None:
            raise FileNotFoundError(f"channel {relid} of {dev.guid} has no ring yet")
        return chan.ring_backing

    def map_path(self, dev: SimDevice, k: int) -> Path:
        if dev.uio is None:
            raise FileNotFoundError(f"{dev.guid} is not bound to uio_hv_generic")
        return map_backing(self.sysroot, dev.uio, k)

    def monitor_page_path(self) -> Path:
        return self.tree.state / "monitor_page"

    def int_page_path(self) -> Path:
        return self.tree.state / "int_page"

    def guest_memory_path(self) -> Path | None:
        """The VM's guest-physical memory file (memory.py), None when it has none."""
        return guest_memory_path(self.sysroot) if self.guest_memory else None

    # -- the thread ------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            with self.lock:
                due = [t for t in self._timers if t[0] <= now]
                self._timers = [t for t in self._timers if t[0] > now]
                next_at = min((t[0] for t in self._timers), default=now + _SNAPSHOT_PERIOD)
            for _, fn in sorted(due, key=lambda t: t[0]):
                with self.lock:
                    self._safe(fn)
            period = min(_SNAPSHOT_PERIOD, self.monitor_poll or _SNAPSHOT_PERIOD)
            timeout = max(0.0, min(next_at, now + period) - time.monotonic())
            events = self._sel.select(timeout)
            with self.lock:
                for key, _ in events:
                    self._safe(lambda: self._dispatch(key.data))
                if self.monitor_poll is not None:
                    self._safe(self._uio.scan_monitor_page)
                if time.monotonic() - self._last_snapshot >= _SNAPSHOT_PERIOD:
                    self._last_snapshot = time.monotonic()
                    for dev in list(self.devices.values()):
                        if dev.opens:
                            self._safe(lambda: self._uio.snapshot(dev))

    def _safe(self, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception as err:  # the emulated kernel must survive a bad write or a racing removal
            log.exception("sim kernel: handler failed")
            self.dmesg.append(f"BUG: handler failed: {type(err).__name__}: {err}")

    def _dispatch(self, data: object) -> None:
        if data == "wake":
            try:
                os.read(self._wake_r, 4096)
            except BlockingIOError:
                pass
        elif data == "inotify":
            assert self._inotify is not None
            for directory, name in self._inotify.read():
                self._on_write(directory, name)
        elif isinstance(data, tuple) and data[0] == "listen":
            self._uio.accept(data[1])
        elif isinstance(data, tuple) and data[0] == "conn":
            self._uio.readable(data[1])

    def wait_idle(self, timeout: float = 2.0) -> None:
        """Wait until no timer is pending (e.g. every late `ring` file exists); for tests."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if not self._timers:
                    return
            time.sleep(0.005)
        raise TimeoutError(errno.ETIMEDOUT, "sim kernel still has pending timers")
