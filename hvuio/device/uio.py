"""The UIO device of a bound VMBus device: maps, interrupt fd, subchannel rings (VMBUS.md §1.2–1.10).

Maps and the interrupt fd are opened through a `Platform` (hvuio.device.platform: the one seam
between a real kernel and the emulator's tree); everything here (sysfs, checks, ring files) is
the same code for both.

`UioHandle.open(device)` reads map names and sizes from sysfs (never hard-coded), checks the names
in DPDK's order (txrx_rings, int_page, monitor_page, recv:<n>, send:<n>), refuses fewer than 3
maps (a NIC needs 5), parses the GPADL handles from the names (1..0xFFFFFFFF), bounds every size
(page multiple, at most MAX_MAP_SIZE; map 0 an even number of pages >= 4), maps every region
(unmapping and closing everything again if one fails) and derives the primary ring size
S = size(map0) / 2 and data size D = S - PAGE_SIZE. `Interrupt` wraps the fd:
`wait(timeout)` -> event count or None (at most MAX_COUNT_READS reads per wake-up, however fast
the host interrupts), `enable()` / `disable()`, and turns EIO (real) or EOF (simulated) into
`RescindedError`, or into what the platform says explains the loss better (`Platform.explain_loss`:
the emulator itself gone); any other errno is a SysfsError, use after close a LocalProtocolError.

Monitor page: signalling a monitored channel needs an atomic OR of one bit into a u32 shared with
every other channel (VMBUS.md §3.12); Python cannot do an atomic RMW on an mmap, so this module only
computes the offsets (`monitor_trigger`) and leaves the OR to the C core.

Nothing here parses ring contents (that is the ring/channel layer).
"""

from __future__ import annotations

import errno
import mmap
import os
import select
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from hvuio.device.platform import PAGE_SIZE, Platform, platform_for
from hvuio.device.sysfs import MAX_GPADL, SYSFS_HINT, UioDevice, UioMap, VmbusDevice
from hvuio.errors import (HostRefusedError, HvuioError, LocalProtocolError, NotRootError, RescindedError,
                          SysfsError, WrongDeviceError)

MAP_NAMES: Final = ("txrx_rings", "int_page", "monitor_page", "recv:", "send:")
MIN_MAPS: Final = 3
NIC_MAPS: Final = 5
INT_PAGE_SEND_OFFSET: Final = 2048  # VMBUS.md §3.12: send half of the interrupt page
MONITOR_PENDING_OFFSET: Final = 8  # VMBUS.md §3.12: trigger_group[g].pending at 8 + 8*g
MONITOR_LATENCY_OFFSET: Final = 576  # latency[4][32] u16
SUBCHANNEL_RING_POLL: Final = 0.01  # DPDK retries every 10 ms (VMBUS.md §1.7.29)
#: Largest region accepted from maps/mapK/size: ring indices, GPADL buffer sizes and transfer-page
#: offsets are u32 on the wire (VMBUS.md §3.1, §3.6), so no region of a netvsc device is larger.
MAX_MAP_SIZE: Final = 0xFFFFF000
#: Interrupt counts read per wake-up at most: the counter coalesces (VMBUS.md §1.9 item 37), so a
#: host that interrupts faster than we read must not keep wait() from returning.
MAX_COUNT_READS: Final = 64
_UIO_HINT: Final = "Check 'dmesg' for uio_hv_generic errors and run 'hvuio doctor'."
_NO_ACCESS_HINT: Final = ("Run as root, or give your user access to /dev/uio* and the ring files "
                          "(udev/90-hvuio.rules makes them group 'hvuio').")
_COUNT = struct.Struct("=i")


class Interrupt:
    """The interrupt side of an open /dev/uioN (pyudev Monitor-like)."""

    def __init__(self, fd: int, name: str,
                 explain_loss: Callable[[RescindedError], HvuioError] | None = None) -> None:
        self._fd = fd
        self.name = name
        self.last_count: int | None = None
        #: turns the RescindedError of a lost device into the error to raise (the platform's)
        self._explain_loss = explain_loss

    def fileno(self) -> int:
        return self._fd

    def _rescinded(self, why: str) -> HvuioError:
        err = RescindedError(f"{self.name}: the host rescinded the device ({why})")
        return err if self._explain_loss is None else self._explain_loss(err)

    def _os_error(self, err: OSError, what: str) -> Exception:
        """The HvuioError for a failed read/write of the uio fd (VMBUS.md §1.9)."""
        if err.errno == errno.EBADF:
            return LocalProtocolError(f"{self.name}: interrupt fd {what} after close")
        return SysfsError(f"{self.name}: {what} of the interrupt fd failed: {os.strerror(err.errno or errno.EIO)}",
                          _UIO_HINT)

    def _read_one(self) -> int | None:
        try:
            data = os.read(self._fd, 4)
        except BlockingIOError:
            return None  # readiness went away (another reader of the same open file took it)
        except OSError as err:
            if err.errno in (errno.EIO, errno.ECONNRESET, errno.ENODEV):
                raise self._rescinded(os.strerror(err.errno)) from None
            raise self._os_error(err, "read") from None
        if not data:
            raise self._rescinded("end of file")
        if len(data) != 4:
            raise SysfsError(f"{self.name}: interrupt read returned {len(data)} bytes, expected 4", _UIO_HINT)
        return int(_COUNT.unpack(data)[0])

    def wait(self, timeout: float | None) -> int | None:
        """Wait up to `timeout` seconds (None = forever) for events; the latest count or None.

        Several interrupts coalesce: every count already queued is consumed and the newest is
        returned. Raises RescindedError on EIO / EOF / error readiness.
        """
        if self._fd < 0:
            raise LocalProtocolError(f"{self.name}: interrupt fd waited on after close")
        poller = select.poll()
        poller.register(self._fd, select.POLLIN | select.POLLERR | select.POLLHUP)
        ms = None if timeout is None else max(0, int(timeout * 1000))
        while True:
            try:
                ready = poller.poll(ms)
            except InterruptedError:  # pragma: no cover - PEP 475 retries
                continue
            break
        if not ready:
            return None
        # no test of the revents bits: a rescinded uio fd reports -EIO cast to a mask (every bit,
        # POLLNVAL included, VMBUS.md §1.9); the read below tells rescind (EIO) from a closed fd (EBADF)
        count = self._read_one()
        reads = 1
        while reads < MAX_COUNT_READS and poller.poll(0):  # bounded: a flood must not pin us here
            newer = self._read_one()
            count = count if newer is None else newer
            reads += 1
        if count is None:
            return None
        self.last_count = count
        return count

    def _write(self, value: int) -> None:
        try:
            os.write(self._fd, _COUNT.pack(value))
        except OSError as err:
            if err.errno in (errno.EIO, errno.EINVAL, errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN):
                raise self._rescinded(os.strerror(err.errno)) from None
            raise self._os_error(err, "write") from None

    def enable(self) -> None:
        """write(1): unmask (per kernel: primary or all channels; signals non-monitored ones)."""
        self._write(1)

    def disable(self) -> None:
        """write(0): mask the inbound interrupt of the primary (all channels on 6.16+)."""
        self._write(0)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


@dataclass(frozen=True)
class MonitorTrigger:
    """Where a monitored channel's trigger bit lives in map 2 (VMBUS.md §3.12)."""

    group: int
    bit: int
    pending_offset: int  # u32 to atomically OR (1 << bit) into
    latency_offset: int  # u16, 100 ns units


def monitor_trigger(monitor_id: int) -> MonitorTrigger:
    """Offsets for `monitor_id` (0..127); ValueError outside that range."""
    if not 0 <= monitor_id < 128:
        raise ValueError(f"monitor_id {monitor_id} outside 0..127 (VMBUS.md §3.12)")
    group, bit = divmod(monitor_id, 32)
    return MonitorTrigger(group, bit, MONITOR_PENDING_OFFSET + 8 * group,
                          MONITOR_LATENCY_OFFSET + 2 * (32 * group + bit))


def check_maps(maps: list[UioMap], need_nic: bool) -> None:
    """Names in DPDK's order, sizes sane; fewer than 3 (or 5 for a NIC) refused."""
    want = NIC_MAPS if need_nic else MIN_MAPS
    if len(maps) < want:
        raise WrongDeviceError(
            f"uio device has {len(maps)} maps, {'a NIC needs' if need_nic else 'at least'} {want}",
            "The kernel's uio_hv_generic did not give this device its receive/send buffers.")
    for m in maps:
        if m.index >= len(MAP_NAMES):
            raise SysfsError(f"map{m.index} is beyond the {len(MAP_NAMES)} maps uio_hv_generic makes", SYSFS_HINT)
        expect = MAP_NAMES[m.index]
        if m.index >= 3:
            if not m.name.startswith(expect) or m.gpadl is None:
                raise SysfsError(f"map{m.index} name {m.name[:64]!r} is not {expect!r} followed by a GPADL "
                                 f"handle in 1..{MAX_GPADL:#x} (uio_hv_generic layout)", SYSFS_HINT)
        elif m.name != expect:
            raise SysfsError(f"map{m.index} name {m.name[:64]!r} is not {expect!r} (uio_hv_generic layout)",
                             SYSFS_HINT)
        if not 0 < m.size <= MAX_MAP_SIZE or m.size % 4096:
            raise SysfsError(f"map{m.index} size {m.size:#x} is not a positive multiple of 4096 "
                             f"up to {MAX_MAP_SIZE:#x}", SYSFS_HINT)
    size0 = maps[0].size
    if size0 % (2 * PAGE_SIZE) or size0 // 2 <= PAGE_SIZE:
        raise SysfsError(f"map0 size {size0:#x} cannot hold two rings of header page + data "
                         f"(needs an even number of {PAGE_SIZE}-byte pages, at least 4)", SYSFS_HINT)


class UioHandle:
    """An opened /dev/uioN with every region mapped; close() unmaps and closes (= channel close)."""

    def __init__(self, device: VmbusDevice, uio: UioDevice, platform: Platform, maps: list[UioMap],
                 regions: list[mmap.mmap], interrupt: Interrupt) -> None:
        self.device = device
        self.uio = uio
        self.platform = platform
        self.maps = maps
        self.regions = regions
        self.interrupt = interrupt
        self.ring_size = maps[0].size // 2
        self.data_size = self.ring_size - PAGE_SIZE
        self._sub_rings: dict[int, mmap.mmap] = {}

    @classmethod
    def open(cls, device: VmbusDevice, platform: Platform | None = None) -> UioHandle:
        """Open the device's UIO node and map every region (VMBUS.md §1.13 steps 2–4)."""
        uio = device.uio
        if uio is None:
            raise SysfsError(f"{device.guid} has no uio/ directory; it is not bound to uio_hv_generic",
                             "Run 'hvuio bind' first.")
        maps = uio.maps()
        check_maps(maps, need_nic=device.is_nic)
        plat = platform if platform is not None else platform_for(device.sysroot)
        try:
            fd = plat.open_interrupt(uio.name)
        except FileNotFoundError:
            raise SysfsError(f"{uio.dev_path} does not exist", _UIO_HINT) from None
        except PermissionError:
            raise NotRootError(f"cannot open {uio.dev_path}: permission denied", _NO_ACCESS_HINT) from None
        except OSError as err:  # open() opens the primary channel (VMBUS.md §1.6.21)
            if err.errno == errno.EAGAIN:
                raise HostRefusedError(f"the host refused to open channel {device.relid} of {device.guid}") from None
            if err.errno == errno.ENODEV:
                raise plat.explain_loss(uio.name, RescindedError(
                    f"{device.guid} was rescinded while opening {uio.dev_path}")) from None
            why = os.strerror(err.errno) if err.errno else str(err)
            raise SysfsError(f"cannot open {uio.dev_path}: {why}", _UIO_HINT) from None
        name = uio.name
        irq = Interrupt(fd, name, lambda err: plat.explain_loss(name, err))
        regions: list[mmap.mmap] = []
        try:
            for m in maps:
                regions.append(plat.open_map(uio.name, m.index, m.size, fd))
        except (OSError, ValueError, OverflowError) as err:
            why = os.strerror(err.errno) if isinstance(err, OSError) and err.errno else str(err)
            raise SysfsError(f"mmap of {uio.name} map{len(regions)} ({maps[len(regions)].size:#x} bytes) "
                             f"failed: {why}", _UIO_HINT) from None
        finally:
            if len(regions) < len(maps):  # failed or interrupted half way: unmap what was mapped
                for r in regions:
                    r.close()
                irq.close()
        return cls(device, uio, plat, maps, regions, irq)

    @property
    def rings(self) -> mmap.mmap:
        """Map 0: TX ring at 0, RX ring at ring_size."""
        return self.regions[0]

    @property
    def int_page(self) -> mmap.mmap:
        return self.regions[1]

    @property
    def monitor_page(self) -> mmap.mmap:
        return self.regions[2]

    @property
    def recv_buffer(self) -> mmap.mmap | None:
        return self.regions[3] if len(self.regions) > 3 else None

    @property
    def send_buffer(self) -> mmap.mmap | None:
        return self.regions[4] if len(self.regions) > 4 else None

    @property
    def recv_gpadl(self) -> int | None:
        return self.maps[3].gpadl if len(self.maps) > 3 else None

    @property
    def send_gpadl(self) -> int | None:
        return self.maps[4].gpadl if len(self.maps) > 4 else None

    def wait_primary_ring(self, timeout: float = 2.0) -> bool:
        """Whether the primary's `ring` file exists, waiting up to `timeout` for it (VMBUS.md §1.8.35).

        DPDK treats its presence as "subchannels supported"; since 6.15 it can appear a little
        after /dev/uioN.
        """
        path = self.device.path / "channels" / str(self.device.relid) / "ring"
        deadline = time.monotonic() + timeout
        while not path.exists():
            if time.monotonic() >= deadline:
                return False
            time.sleep(SUBCHANNEL_RING_POLL)
        return True

    def wait_subchannels(self, count: int, timeout: float = 10.0) -> list[int]:
        """The relids of subchannels 1..`count` (index order) once each has its `ring` file.

        The kernel offers each granted subchannel as a channels/<relid> directory and creates
        its `ring` once uio_hv_generic has opened it (VMBUS.md §1.7.28); like DPDK
        (hn_subchan_configure) we poll every 10 ms, here until `timeout`. An index of 0 or above
        `count` is skipped (DPDK rejects it, Linux ignores it).
        """
        deadline = time.monotonic() + timeout
        while True:
            found: dict[int, int] = {}
            for chan in self.device.channels():
                if chan.relid == self.device.relid:
                    continue
                try:
                    index = chan.subchannel_id
                except SysfsError:
                    continue  # the directory is being made: no attribute yet
                if 1 <= index <= count and chan.ring_path.exists():
                    found.setdefault(index, chan.relid)
            if len(found) == count:
                return [found[i] for i in range(1, count + 1)]
            if time.monotonic() >= deadline:
                missing = [i for i in range(1, count + 1) if i not in found]
                raise SysfsError(
                    f"subchannel(s) {', '.join(map(str, missing))} of {self.device.guid} got no ring file "
                    f"within {timeout:g} s (the host granted {count})",
                    "The kernel did not open them (uio_hv_generic makes channels/<relid>/ring once it has; "
                    "see dmesg); run with --queues 1 to use the primary channel only.")
            time.sleep(SUBCHANNEL_RING_POLL)

    def open_subchannel_ring(self, relid: int, timeout: float = 10.0) -> mmap.mmap:
        """Map channels/<relid>/ring whole (size from st_size), waiting for it to appear.

        The kernel makes the directory first and the `ring` later (VMBUS.md §1.7.28); like DPDK we
        retry every 10 ms, here until `timeout`.
        """
        if relid in self._sub_rings:
            return self._sub_rings[relid]
        path = self.device.path / "channels" / str(relid) / "ring"
        deadline = time.monotonic() + timeout
        while True:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
                break
            except FileNotFoundError:
                if time.monotonic() >= deadline:
                    raise SysfsError(f"{path} did not appear within {timeout:g} s",
                                     "The subchannel was not opened by the kernel.") from None
                time.sleep(SUBCHANNEL_RING_POLL)
            except PermissionError:
                raise NotRootError(f"cannot open {path}: permission denied", _NO_ACCESS_HINT) from None
            except OSError as err:
                raise SysfsError(f"cannot open {path}: {os.strerror(err.errno or errno.EIO)}", _UIO_HINT) from None
        try:
            size = os.fstat(fd).st_size
            if size <= 2 * PAGE_SIZE or size % (2 * PAGE_SIZE) or size > 2 * MAX_MAP_SIZE:
                raise SysfsError(f"{path} size {size:#x} cannot hold two rings (needs an even number of "
                                 f"{PAGE_SIZE}-byte pages, at least 4, at most {2 * MAX_MAP_SIZE:#x} bytes)",
                                 SYSFS_HINT)
            ring = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except (OSError, ValueError, OverflowError) as err:
            why = os.strerror(err.errno) if isinstance(err, OSError) and err.errno else str(err)
            raise SysfsError(f"mmap of {path} failed: {why}", _UIO_HINT) from None
        finally:
            os.close(fd)
        self._sub_rings[relid] = ring
        return ring

    def close(self) -> None:
        """Unmap everything and close the fd (the last close closes every channel)."""
        for r in list(self._sub_rings.values()) + self.regions:
            try:
                r.close()
            except BufferError:  # a memoryview still exported; the OS unmaps at exit
                pass
        self._sub_rings.clear()
        self.regions = []
        self.interrupt.close()

    def __enter__(self) -> UioHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
