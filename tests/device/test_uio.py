"""UIO handle over the emulator: maps, interrupt protocol, masks per profile, subchannels, rescind.

Also the real platform's arithmetic (map K at offset K*PAGE_SIZE) on a plain file, and EIO from a
real fd (a pty master whose slave is closed returns EIO, as a rescinded /dev/uioN does).
"""

from __future__ import annotations

import mmap
import os
import struct
import threading
import time
from pathlib import Path

import pytest

from hvuio.device.bind import bind_device, resolve_device
from hvuio.device.platform import PAGE_SIZE, RealPlatform, platform_for
from hvuio.device.platform import TreePlatform
from hvuio.device.sysfs import UioMap, VmbusDevice
from hvuio.device.uio import Interrupt, UioHandle, check_maps, monitor_trigger
from hvuio.errors import HostRefusedError, RescindedError, SysfsError, WrongDeviceError
from hvuio.sim.kernel import profiles
from hvuio.sim.kernel.bus import SimKernel

from support.waiting import until as _until


def _open(tmp_path: Path, k: SimKernel) -> UioHandle:
    bind_device(tmp_path, "hveth0")
    return UioHandle.open(resolve_device(tmp_path, "hveth0"))


def _in_mask(h: UioHandle) -> int:
    return int(struct.unpack_from("<I", h.rings, h.ring_size + 8)[0])


@pytest.mark.parametrize("profile", list(profiles.PROFILES))
def test_maps_and_open_semantics(tmp_path: Path, profile: str) -> None:
    with SimKernel(tmp_path, profile, nics=1) as k:
        nic = k.nics[0]
        h = _open(tmp_path, k)
        try:
            assert isinstance(h.platform, TreePlatform)
            assert [len(r) for r in h.regions] == [m.size for m in h.maps]
            assert h.ring_size == profiles.primary_ring_size(k.profile, profiles.NIC_CLASS)
            assert h.data_size == h.ring_size - PAGE_SIZE
            assert h.recv_gpadl is not None and h.send_gpadl == h.recv_gpadl + 1
            assert h.recv_buffer is not None and len(h.recv_buffer) == profiles.RECV_BUFFER_SIZE
            assert h.send_buffer is not None and len(h.send_buffer) == profiles.SEND_BUFFER_SIZE
            # the open was synchronous: channel opened, headers initialised, mask per profile
            assert nic.opens == 1 and resolve_device(tmp_path, "hveth0").state == 3
            assert struct.unpack_from("<I", h.rings, 64)[0] == 1  # feature bit, TX header
            assert _in_mask(h) == k.profile.mask_at_open
            # stores through the guest mapping are visible in the backing file the host maps
            h.rings[PAGE_SIZE:PAGE_SIZE + 4] = b"ping"
            with open(k.map_path(nic, 0), "rb") as f:
                assert os.pread(f.fileno(), 4, PAGE_SIZE) == b"ping"
            # maps 1 and 2 are shared by every device
            h.monitor_page[8:12] = b"\x01\x00\x00\x00"
            assert k.monitor_page_path().read_bytes()[8:12] == b"\x01\x00\x00\x00"
        finally:
            h.close()
        _until(lambda: nic.opens == 0)


def test_interrupt_wait_coalesces_and_snapshots(tmp_path: Path) -> None:
    with SimKernel(tmp_path, "6.17", nics=1) as k:
        nic = k.nics[0]
        h = _open(tmp_path, k)
        with h:
            assert h.interrupt.wait(0) is None
            assert k.signal_guest(nic, nic.relid)
            assert h.interrupt.wait(2) == 1
            for _ in range(3):
                k.signal_guest(nic, nic.relid)
            assert h.interrupt.wait(2) == 4  # three interrupts, one wake-up with the total
            assert h.interrupt.wait(0) is None
            assert VmbusDevice.from_uuid(tmp_path, nic.guid).uio.event == 4  # type: ignore[union-attr]
            # a second open only sees events after its own open
            h2 = UioHandle.open(resolve_device(tmp_path, "hveth0"))
            with h2:
                assert h2.interrupt.wait(0) is None
                k.signal_guest(nic, nic.relid)
                assert h2.interrupt.wait(2) == 5 and h.interrupt.wait(2) == 5
            _until(lambda: nic.opens == 1)


@pytest.mark.parametrize("profile", ["6.12", "6.16", "6.17"])
def test_irqcontrol_and_auto_mask(tmp_path: Path, profile: str) -> None:
    signals: list[int] = []
    with SimKernel(tmp_path, profile, nics=1, nic_monitored=False,
                   on_guest_signal=lambda dev, relid: signals.append(relid)) as k:
        nic = k.nics[0]
        with _open(tmp_path, k) as h:
            h.interrupt.enable()
            _until(lambda: signals == [nic.relid])  # non-monitored primary: write(1) signals (6.10+)
            assert _in_mask(h) == 0
            k.signal_guest(nic, nic.relid)
            assert h.interrupt.wait(2) == 1
            assert _in_mask(h) == (1 if k.profile.auto_mask else 0)
            h.interrupt.disable()
            _until(lambda: _in_mask(h) == 1)
            assert signals == [nic.relid]


@pytest.mark.parametrize("profile,covers", [("6.15", False), ("6.16", True), ("6.17", True)])
def test_subchannel_ring_appears_late(tmp_path: Path, profile: str, covers: bool) -> None:
    with SimKernel(tmp_path, profile, nics=1, ring_delay=3600) as k:
        nic = k.nics[0]
        with _open(tmp_path, k) as h:
            k.fire_timers()  # the primary ring of 6.15+ kernels, which also comes late
            relid = k.add_subchannel(nic, 1)
            chan = h.device.channel(relid)
            assert chan.subchannel_id == 1 and not chan.ring_path.exists()  # directory first
            with pytest.raises(SysfsError, match="did not appear"):
                h.open_subchannel_ring(relid, timeout=0.02)
            waiter = threading.Thread(target=lambda: got.append(h.open_subchannel_ring(relid, timeout=30)))
            got: list[mmap.mmap] = []
            waiter.start()
            assert k.fire_timers() == 1  # the kernel makes the ring visible; the waiting guest maps it
            waiter.join(30)
            ring = got[0]
            assert len(ring) == os.stat(chan.ring_path).st_size == 2 * profiles.subchannel_ring_size(k.profile)
            mask_off = len(ring) // 2 + 8
            assert struct.unpack_from("<I", ring, mask_off)[0] == k.profile.mask_at_open
            ring[mask_off:mask_off + 4] = struct.pack("<I", 1)  # VMBUS.md §2.6.5 coverage probe
            h.interrupt.enable()
            _until(lambda: _in_mask(h) == 0)
            time.sleep(0.05)  # the subchannel mask is written in the same kernel step as the primary's
            assert struct.unpack_from("<I", ring, mask_off)[0] == (0 if covers else 1)
        _until(lambda: not chan.path.exists())  # last close removes subchannels
        with pytest.raises(SysfsError, match="did not appear"):
            with _open(tmp_path, k) as h2:
                h2.open_subchannel_ring(relid, timeout=0.05)


@pytest.mark.parametrize("profile", ["6.17", "6.12"])
def test_rescind_gives_eof_then_rescinded_error(tmp_path: Path, profile: str) -> None:
    with SimKernel(tmp_path, profile, nics=1) as k:
        nic = k.nics[0]
        h = _open(tmp_path, k)
        k.rescind(nic)
        with pytest.raises(RescindedError):
            h.interrupt.wait(2)
        with pytest.raises(RescindedError):
            h.interrupt.enable()
        h.close()
        assert nic.guid not in {d.guid for d in VmbusDevice.all(tmp_path)}


def test_real_eio_is_rescind() -> None:
    master, slave = os.openpty()
    os.close(slave)
    irq = Interrupt(master, "uio9")
    try:
        with pytest.raises(RescindedError, match="uio9"):
            irq.wait(1)
    finally:
        irq.close()


def test_real_platform_maps_by_page_index(tmp_path: Path) -> None:
    (tmp_path / "dev").mkdir()
    dev = tmp_path / "dev" / "uio7"
    with open(dev, "wb") as f:
        f.truncate(3 * PAGE_SIZE)
        f.seek(2 * PAGE_SIZE)
        f.write(b"map2")
    plat = RealPlatform(tmp_path)
    fd = plat.open_interrupt("uio7")
    try:
        m = plat.open_map("uio7", 2, PAGE_SIZE, fd)
        assert m[:4] == b"map2"
        m.close()
    finally:
        os.close(fd)
    assert isinstance(platform_for(tmp_path), RealPlatform)


def _maps(*names_sizes: tuple[str, int]) -> list[UioMap]:
    return [UioMap(i, n, s, 0, 0) for i, (n, s) in enumerate(names_sizes)]


def test_check_maps_refusals() -> None:
    good = _maps(("txrx_rings", 0x400000), ("int_page", 4096), ("monitor_page", 4096),
                 ("recv:925200", 0x1F00000), ("send:925201", 0x1000000))
    check_maps(good, need_nic=True)
    check_maps(good[:3], need_nic=False)
    with pytest.raises(WrongDeviceError, match="3 maps"):
        check_maps(good[:3], need_nic=True)
    with pytest.raises(WrongDeviceError, match="2 maps"):
        check_maps(good[:2], need_nic=False)
    with pytest.raises(SysfsError, match="map1 name"):
        check_maps(_maps(("txrx_rings", 0x400000), ("monitor_page", 4096), ("int_page", 4096)), False)
    with pytest.raises(SysfsError, match="map3 name"):
        check_maps(good[:3] + _maps(("x", 0), ("y", 0), ("z", 0), ("recv:abc", 4096))[3:] + good[4:], True)
    with pytest.raises(SysfsError, match="map0 size"):
        check_maps(_maps(("txrx_rings", 0x1000), ("int_page", 4096), ("monitor_page", 4096)), False)


def test_monitor_trigger_offsets() -> None:
    t = monitor_trigger(33)
    assert (t.group, t.bit, t.pending_offset, t.latency_offset) == (1, 1, 16, 576 + 2 * 33)
    with pytest.raises(ValueError):
        monitor_trigger(128)


def test_sim_map_length_checked(tmp_path: Path) -> None:
    with SimKernel(tmp_path, "6.17", nics=1) as k:
        with _open(tmp_path, k) as h:
            with pytest.raises(OSError) as err:
                TreePlatform(tmp_path).open_map(h.uio.name, 1, 2 * mmap.PAGESIZE, h.interrupt.fileno())
            assert err.value.errno == 22


def test_rescind_on_pre_fix_kernel_leaves_dead_device(tmp_path: Path) -> None:
    with SimKernel(tmp_path, "4.19", nics=1) as k:
        nic = k.nics[0]
        h = _open(tmp_path, k)
        k.rescind(nic)
        with pytest.raises(RescindedError):
            h.interrupt.wait(2)
        h.close()
        assert any("oops" in m for m in k.dmesg)
        assert nic.guid in {d.guid for d in VmbusDevice.all(tmp_path)}  # never unregistered


def test_reoffer_after_rescind_drops_override(tmp_path: Path) -> None:
    with SimKernel(tmp_path, "6.17", nics=1) as k:
        nic = k.nics[0]
        with _open(tmp_path, k) as h:
            k.rescind(nic)
            with pytest.raises(RescindedError):
                h.interrupt.wait(2)
        assert nic.guid not in {d.guid for d in VmbusDevice.all(tmp_path)}
        assert not (tmp_path / "dev" / "uio0").exists()
        again = k.offer(profiles.NIC_CLASS, ifname="hveth0", guid=nic.guid)
        dev = VmbusDevice.from_uuid(tmp_path, nic.guid)
        assert again.relid != nic.relid and dev.relid == again.relid
        assert dev.driver == "hv_netvsc" and dev.driver_override is None


@pytest.mark.parametrize("profile,late", [("6.12", False), ("6.17", True)])
def test_primary_ring_after_dev_on_new_kernels(tmp_path: Path, profile: str, late: bool) -> None:
    with SimKernel(tmp_path, profile, nics=1, ring_delay=3600) as k:
        with _open(tmp_path, k) as h:
            assert h.wait_primary_ring(timeout=0) is (not late)
            k.fire_timers()
            assert h.wait_primary_ring(timeout=0)
            ring = h.device.channel(h.device.relid).ring_path
            assert os.stat(ring).st_size == h.maps[0].size  # NIC: 2 x 2 MiB on every profile


def test_sysfs_mask_snapshot_follows_guest_store(tmp_path: Path) -> None:
    """channels/<relid>/in_mask is a live view of the inbound header (doctor's §2.6.5 probe reads it)."""
    with SimKernel(tmp_path, "6.17", nics=1) as k:
        with _open(tmp_path, k) as h:
            chan = h.device.channel(h.device.relid)
            assert chan.attr_int("in_mask") == 0
            h.rings[h.ring_size + 8:h.ring_size + 12] = struct.pack("<I", 1)
            _until(lambda: chan.attr_int("in_mask") == 1)


def test_host_refusing_open_fails_the_open(tmp_path: Path) -> None:
    def refuse(dev: object) -> None:
        raise OSError(11, "host said no")

    with SimKernel(tmp_path, "6.17", nics=1, on_open=refuse) as k:
        bind_device(tmp_path, "hveth0")
        with pytest.raises(HostRefusedError, match="refused to open channel"):
            UioHandle.open(resolve_device(tmp_path, "hveth0"))
        assert k.nics[0].opens == 0 and any("refused" in m for m in k.dmesg)
        k.on_open = None
        with UioHandle.open(resolve_device(tmp_path, "hveth0")):
            assert k.nics[0].opens == 1


def test_monitored_signal_seen_through_monitor_page(tmp_path: Path) -> None:
    signals: list[int] = []
    with SimKernel(tmp_path, "6.17", nics=1, monitor_poll=0.005,
                   on_guest_signal=lambda dev, relid: signals.append(relid)) as k:
        nic = k.nics[0]
        with _open(tmp_path, k) as h:
            assert nic.monitor_id is not None
            t = monitor_trigger(nic.monitor_id)
            word = struct.unpack_from("<I", h.monitor_page, t.pending_offset)[0]
            # (a plain store is fine here: nothing else runs; the C core does the atomic OR)
            struct.pack_into("<I", h.monitor_page, t.pending_offset, word | 1 << t.bit)
            _until(lambda: signals == [nic.relid])
            _until(lambda: not struct.unpack_from("<I", h.monitor_page, t.pending_offset)[0] >> t.bit & 1)
            h.interrupt.enable()  # monitored: write(1) only unmasks, never signals
            _until(lambda: _in_mask(h) == 0)
            assert signals == [nic.relid]


@pytest.mark.parametrize("rescind", [True, False])
def test_last_close_closes_subchannels(tmp_path: Path, rescind: bool) -> None:
    with SimKernel(tmp_path, "6.17", nics=1, rescind_subchannels_on_close=rescind) as k:
        nic = k.nics[0]
        with _open(tmp_path, k) as h:
            relid = k.add_subchannel(nic, 1)
            h.open_subchannel_ring(relid, timeout=30)
            chan = h.device.channel(relid)
        _until(lambda: nic.opens == 0 and nic.state == 2)  # state is set after the subchannels closed
        assert not chan.ring_path.exists()
        assert chan.path.exists() is (not rescind)
