"""hvuio/nicvf.py's netdev errors: a VF netdev that cannot be joined is found and tried again
every tick; each failure is counted (`vf_errors`), the first is a warning and its repeats are
debug lines, so the log does not fill with the same sentence twice a second."""

from __future__ import annotations

import logging

import pytest

from hvuio.errors import PlatformError
from hvuio.nicvf import NicVf
from hvuio.proto import events as ev


class RefusingPort:
    """A VF port whose netdev is always found and can never be joined."""

    def __init__(self) -> None:
        self.joins = 0

    def look(self, serial: int) -> str | None:
        return "enP1s1"

    def join(self, name: str) -> None:
        self.joins += 1
        raise PlatformError(f"interface {name!r} does not exist (while trying to join)")

    def tx(self, on: bool) -> None:
        raise AssertionError("never joined, never sending")

    def leave(self, name: str, gone: bool = False) -> None:
        pass

    def present(self) -> bool:
        return False

    def counters(self) -> dict[str, int]:
        return {}


def test_a_repeated_join_failure_is_counted_each_time_and_warned_once(caplog: pytest.LogCaptureFixture) -> None:
    clock = [100.0]
    side = NicVf(enabled=True, switch=lambda vf: True, clock=lambda: clock[0], publish=lambda status: None)
    port = RefusingPort()
    side.port = port
    with caplog.at_level(logging.DEBUG, logger="hvuio.nicvf"):
        side.event(ev.VfAssociation(allocated=True, serial=1))
        for _ in range(5):
            clock[0] += 0.5
            side.tick()
    failures = [r for r in caplog.records if "does not exist" in r.getMessage()]
    assert port.joins >= 3 and side.counters()["vf_errors"] == port.joins
    assert [r.levelno for r in failures] == [logging.WARNING] + [logging.DEBUG] * (len(failures) - 1)
