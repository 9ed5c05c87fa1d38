"""The pump as one queue of a multi-queue NIC: its share of the send sections, the wake-up fan-out
from the one uio interrupt to the other channels' pumps, and the idle poll of a channel whose
inbound mask stays set."""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from typing import Any

import pytest

from hvuio.errors import LocalProtocolError
from hvuio.native.datapath import DataPath, RunResult, Status
from support.fakehost import NVS_RNDIS, PKT_INBAND, TX_TAG, FakeHost, frame


@pytest.fixture
def eventfds() -> Iterator[list[int]]:
    fds = [os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC) for _ in range(3)]
    yield fds
    for fd in fds:
        os.close(fd)


def test_a_share_of_the_sections_names_buffer_wide_indexes() -> None:
    h = FakeHost(send_count=8, first_section=5)   # this queue owns sections 5, 6, 7
    try:
        frames = [frame(100, i) for i in range(4)]
        for f in frames:
            h.tap_host.send(f)
        assert h.dp.tx() is Status.BLOCKED         # three sections: the fourth frame waits
        pkts = h.drain()
        assert len(pkts) == 3 and h.dp.sections_in_use == 3
        got = []
        for p in pkts:
            assert p.type == PKT_INBAND and p.trans_id & TX_TAG
            nvs_type, _chan, idx, size = struct.unpack_from("<IIII", p.payload)
            assert nvs_type == NVS_RNDIS and 5 <= idx < 8
            assert idx == 5 + (p.trans_id & ~TX_TAG)   # the NVS index is buffer-wide, the tag local
            got.append(h.section_bytes(idx, size)[44:size])
        assert got == frames[:3]
        assert h.send[:5 * h.send_section] == bytes(5 * h.send_section)   # other queues' sections untouched
        h.complete_tx(pkts[0].trans_id)
        h.dp.rx()
        h.dp.tx()
        [last] = h.drain()                         # the freed section carries the fourth frame
        idx = struct.unpack_from("<I", last.payload, 8)[0]
        assert idx == struct.unpack_from("<I", pkts[0].payload, 8)[0] and h.dp.sections_in_use == 3
    finally:
        h.close()


def test_a_share_past_the_send_buffer_is_refused() -> None:
    h = FakeHost(send_count=8)
    try:
        with pytest.raises(LocalProtocolError, match=r"sections \[6, 10\)"):
            DataPath(tx_ring=h.tx_ring, rx_ring=h.rx_ring, recv_buf=h.recv, recv_section_size=h.recv_section,
                     send_buf=h.send, send_section_size=h.send_section, send_section_first=6, send_section_count=4,
                     tap_fd=h.tap_guest.fileno(), irq_fd=h.irq_guest.fileno())
    finally:
        h.close()


def test_the_irq_owner_wakes_every_other_pump(eventfds: list[int], stop_pipe: tuple[int, int]) -> None:
    h = FakeHost(fanout_fds=tuple(eventfds))
    try:
        h.interrupt_guest()
        h.interrupt_guest()                        # two channels fired: the counter holds both
        assert h.dp.run(stop_pipe[0], timeout_ms=0) is RunResult.TIMEOUT
        for _ in range(2):
            if h.dp.run(stop_pipe[0], timeout_ms=0) is RunResult.TIMEOUT and h.dp.counters()["irq_wakeups"] == 2:
                break
        wakeups = h.dp.counters()["irq_wakeups"]
        # every wake-up read from the irq fd is passed on to each other pump, none lost
        assert [os.eventfd_read(fd) for fd in eventfds] == [wakeups] * 3
    finally:
        h.close()


def test_a_woken_pump_reads_its_eventfd_and_only_writes_the_irq_fd(eventfds: list[int],
                                                                   stop_pipe: tuple[int, int]) -> None:
    h = FakeHost(wake_fd=eventfds[0], manage_interrupt_mask=False, idle_poll_ms=1)
    try:
        h.interrupt_guest()                        # the irq fd belongs to the primary's pump
        os.eventfd_write(eventfds[0], 1)
        h.send_frames([frame(64, 1)], trans_id=7)
        assert h.dp.run(stop_pipe[0], timeout_ms=5) is RunResult.TIMEOUT
        assert h.tap_frames() == [frame(64, 1)]
        assert h.dp.counters()["irq_wakeups"] == 1
        with pytest.raises(BlockingIOError):
            os.eventfd_read(eventfds[0])           # consumed
        assert h.irq_guest.recv(4) == struct.pack("<I", 1)   # the interrupt is left for its owner
        h.rx_ring.set_interrupt_mask(1)
        h.tap_host.send(frame(80, 2))
        assert h.dp.run(stop_pipe[0], timeout_ms=5) is RunResult.TIMEOUT
        assert h.rx_ring.interrupt_mask == 1       # never cleared by this pump
        assert len(h.drain()) == 2                 # the completion and the frame
        signals = h.dp.counters()["signals"]
        assert signals >= 1 and h.signals() == signals   # signals still go to the irq fd
    finally:
        h.close()


def test_an_idle_poll_looks_at_the_ring_without_a_wake_up(eventfds: list[int], stop_pipe: tuple[int, int]) -> None:
    h = FakeHost(wake_fd=eventfds[0], manage_interrupt_mask=False, idle_poll_ms=1)
    try:
        assert h.dp.run(stop_pipe[0], timeout_ms=20) is RunResult.TIMEOUT
        assert h.dp.counters()["polls"] >= 2       # slept in slices of at most 1 ms, not once
    finally:
        h.close()


@pytest.mark.parametrize("kw,text", [
    (dict(wake_fd=-1), "wake_fd"),
    (dict(wake_fd=3, fanout_fds=(4,)), "wake_fd"),
    (dict(fanout_fds=(-1,)), "fanout_fds"),
    (dict(fanout_fds=tuple(range(3, 3 + 65))), "fanout_fds"),
    (dict(idle_poll_ms=-1), "idle_poll_ms"),
])
def test_queue_options_are_checked(kw: dict[str, Any], text: str) -> None:
    with pytest.raises(LocalProtocolError, match=text):
        h = FakeHost(**kw)
        h.close()
