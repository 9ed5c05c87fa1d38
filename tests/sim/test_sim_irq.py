"""The emulated uio interrupt (hvuio.sim.kernel.uio.GuestIrq over _native/simhost/irq.c).

One event count per device, raised by the emulated kernel (signal_guest) or by a host pump
straight from C: the pump no longer hands every guest interrupt back to Python. Checked here:
what a raise does (mask, count, one 4-byte count per open fd), that nothing is counted while
nobody has the device open, that a pump with an irq raises instead of returning SIGNAL, and that
the kernel keeps the list of open fds and the sysfs `event` file in step with it.
"""

from __future__ import annotations

import socket
import struct
from pathlib import Path

import pytest

from hvuio.device.bind import bind_device, resolve_device
from hvuio.device.sysfs import VmbusDevice
from hvuio.device.uio import UioHandle
from hvuio.errors import LocalProtocolError
from hvuio.sim.kernel.bus import SimKernel
from hvuio.sim.kernel.uio import GuestIrq
from hvuio.sim.vsp import fastpath
from hvuio.sim.vsp.fastpath import HostPump, PumpConfig, PumpResult

from support.waiting import until as _until

pytestmark = pytest.mark.skipif(not fastpath.available(), reason="hvuio.sim._simhost not built")

HDR = 4096
RING = HDR + 64 * 1024


def _pair() -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    b.setblocking(False)
    return a, b


def test_raise_counts_and_wakes_every_open_fd() -> None:
    irq = GuestIrq()
    (a1, b1), (a2, b2) = _pair(), _pair()
    try:
        assert irq.raise_() == 0 and irq.raised == 0  # nobody has it open: nothing happens
        irq.set_conns([a1.fileno(), a2.fileno()])
        assert irq.raise_() == 1 and irq.raise_() == 2
        for b in (b1, b2):
            assert [struct.unpack("=i", b.recv(8))[0] for _ in range(2)] == [1, 2]
        irq.set_conns([a2.fileno()])  # the first reader closed
        assert irq.raise_() == 3
        with pytest.raises(BlockingIOError):
            b1.recv(8)
        assert struct.unpack("=i", b2.recv(8))[0] == 3
        assert irq.event == 3 and irq.raised == 3 and irq.send_failed == 0
    finally:
        for s in (a1, b1, a2, b2):
            s.close()


def test_raise_masks_the_ring_it_is_given() -> None:
    irq = GuestIrq()
    a, b = _pair()
    ring = bytearray(HDR)
    try:
        irq.set_conns([a.fileno()])
        irq.raise_(ring)
        assert struct.unpack_from("<I", ring, 8)[0] == 1  # interrupt_mask, as the ISR sets it
        struct.pack_into("<I", ring, 8, 0)
        irq.raise_()
        assert struct.unpack_from("<I", ring, 8)[0] == 0
    finally:
        a.close()
        b.close()


def test_a_full_reader_queue_is_counted_not_fatal() -> None:
    irq = GuestIrq()
    a, b = _pair()
    try:
        irq.set_conns([a.fileno()])
        n = 0
        while irq.send_failed == 0:  # the unread socket queue fills up
            irq.raise_()
            n += 1
            assert n < 1_000_000
        assert irq.event == n and irq.raised == n
    finally:
        a.close()
        b.close()


def test_conn_list_is_bounded() -> None:
    irq = GuestIrq()
    with pytest.raises(LocalProtocolError):
        irq.set_conns(list(range(irq.max_conns + 1)))


@pytest.mark.parametrize("auto_mask", [False, True])
def test_pump_with_an_irq_interrupts_the_guest_itself(auto_mask: bool) -> None:
    mem = bytearray(2 * RING)
    recv, send, monitor = bytearray(1806 * 4), bytearray(6144 * 4), bytearray(4096)
    tap, net = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    tap.setblocking(False)  # the pump reads the tap until EAGAIN
    guest, kernel_end = _pair()
    irq = GuestIrq()
    irq.set_conns([guest.fileno()])
    cfg = PumpConfig(ring_size=RING, header_size=HDR, recv_section=1806, recv_count=4, send_section=6144,
                     max_frame=1514, nvsp_pad=40, tap_fd=tap.fileno(), monitor_id=3)
    pump = HostPump(cfg, mem, recv, send, monitor, irq=irq, auto_mask=auto_mask)
    try:
        pump.add_sections(range(4))
        pump.rx_enabled = True
        net.send(bytes(14) + b"x" * 50)  # a frame from the network: a transfer-page packet for the guest
        res = pump.run(timeout=0.05)
        assert res == PumpResult.TIMEOUT  # not SIGNAL: the pump raised the interrupt itself
        assert not pump.signal
        assert struct.unpack("=i", kernel_end.recv(8))[0] == 1 and irq.raised == 1
        assert pump.counters()["signals"] == 1 and pump.counters()["rx_frames"] == 1
        assert struct.unpack_from("<I", mem, RING + 8)[0] == (1 if auto_mask else 0)
        # masked by the guest: the next packet raises nothing (VMBUS.md §3.11)
        struct.pack_into("<I", mem, RING + 8, 1)
        net.send(bytes(14) + b"y" * 50)
        pump.run(timeout=0.05)
        assert irq.raised == 1 and pump.counters()["rx_frames"] == 2
    finally:
        pump.close()
        for s in (tap, net, guest, kernel_end):
            s.close()


def test_pump_without_an_irq_still_returns_signal() -> None:
    mem = bytearray(2 * RING)
    tap, net = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    tap.setblocking(False)
    cfg = PumpConfig(ring_size=RING, header_size=HDR, recv_section=1806, recv_count=4, send_section=6144,
                     max_frame=1514, nvsp_pad=40, tap_fd=tap.fileno())
    pump = HostPump(cfg, mem, bytearray(1806 * 4), bytearray(6144 * 4))
    try:
        pump.add_sections(range(4))
        pump.rx_enabled = True
        net.send(bytes(60))
        assert pump.run(timeout=0.05) == PumpResult.SIGNAL and pump.signal  # Python raises it
    finally:
        pump.close()
        tap.close()
        net.close()


def test_kernel_shares_one_count_with_raises_from_c(tmp_path: Path) -> None:
    with SimKernel(tmp_path, "6.17", nics=1) as k:
        nic = k.nics[0]
        assert nic.irq.raise_() == 0  # not open: a pump could not interrupt anyone either
        bind_device(tmp_path, "hveth0")
        h = UioHandle.open(resolve_device(tmp_path, "hveth0"))
        with h:
            _until(lambda: nic.opens == 1)
            assert k.signal_guest(nic, nic.relid)
            assert h.interrupt.wait(2) == 1
            assert nic.irq.raise_() == 2  # what a host pump does, without the kernel lock
            assert h.interrupt.wait(2) == 2
            assert k.signal_guest(nic, nic.relid)
            assert h.interrupt.wait(2) == 3
            # sysfs `event` is written at once for the kernel's raises, at the next ring snapshot
            # for a pump's; either way it reaches the live count
            nic.irq.raise_()
            assert h.interrupt.wait(2) == 4
            _until(lambda: VmbusDevice.from_uuid(tmp_path, nic.guid).uio.event == 4)  # type: ignore[union-attr]
        _until(lambda: nic.opens == 0)
        assert nic.irq.raise_() == 0  # the closed fd was taken off the list before it was closed
