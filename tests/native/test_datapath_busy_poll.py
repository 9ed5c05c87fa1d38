"""The pump's busy poll (DataPath(busy_poll_us=...), `hvuio up --busy-poll`): after traffic it keeps
polling rings and tap instead of sleeping in poll(), with the inbound ring masked so the host need
not interrupt, and falls back to sleeping (unmasked) once the window passes or run's timeout ends.
Observed through the pump's `polls` counter (times it slept) and the inbound interrupt mask."""

from __future__ import annotations

import pytest

from hvuio.errors import LocalProtocolError
from hvuio.native.datapath import DataPath, RunResult
from support.fakehost import FakeHost, frame


@pytest.mark.parametrize("value", [-1, 1_000_001])
def test_busy_poll_window_is_checked(value: int) -> None:
    with pytest.raises(LocalProtocolError, match="busy_poll_us"):
        FakeHost(busy_poll_us=value)


def test_after_traffic_the_pump_spins_instead_of_sleeping(stop_pipe: tuple[int, int]) -> None:
    h = FakeHost(busy_poll_us=1_000_000)  # a window longer than the run: it never sleeps
    try:
        h.tap_host.send(frame(64))
        assert h.dp.run(stop_pipe[0], timeout_ms=30) is RunResult.TIMEOUT
        assert len(h.drain()) == 1
        assert h.dp.counters()["polls"] == 0
        assert h.rx_ring.interrupt_mask == 0  # returned the usual way: unmasked
    finally:
        h.close()


def test_without_busy_poll_the_pump_sleeps(stop_pipe: tuple[int, int]) -> None:
    h = FakeHost()
    try:
        assert isinstance(h.dp, DataPath)
        h.tap_host.send(frame(64))
        assert h.dp.run(stop_pipe[0], timeout_ms=30) is RunResult.TIMEOUT
        assert len(h.drain()) == 1
        assert h.dp.counters()["polls"] >= 1
    finally:
        h.close()


def test_spinning_ends_when_the_window_passes(stop_pipe: tuple[int, int]) -> None:
    h = FakeHost(busy_poll_us=1000)
    try:
        h.tap_host.send(frame(64))
        assert h.dp.run(stop_pipe[0], timeout_ms=200) is RunResult.TIMEOUT
        assert len(h.drain()) == 1
        assert h.dp.counters()["polls"] >= 1  # slept once the millisecond without traffic was over
        assert h.rx_ring.interrupt_mask == 0
    finally:
        h.close()


def test_no_traffic_no_spinning(stop_pipe: tuple[int, int]) -> None:
    h = FakeHost(busy_poll_us=1_000_000)
    try:
        h.dp.run(stop_pipe[0], timeout_ms=30)
        h.dp.run(stop_pipe[0], timeout_ms=30)  # a later run starts its window afresh, but idles
        assert h.dp.counters()["polls"] >= 1
    finally:
        h.close()
