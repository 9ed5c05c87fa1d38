"""Data-path health as a user needs to see it: a host that stopped answering, and why frames drop.

What lives here: `HealthWatch`, fed one `Sample` of the running pump per engine tick (its
counters, its drop counts per reason with the last drop's value, what it has in flight, and the
time, passed in), returning the events worth one log line each:
  * `StallBegan` / `StallEnded`: the host completed nothing for STALL_AFTER seconds while the
    guest had sends outstanding or receive completions waiting for ring space (a host that
    stopped, or stopped reading its ring), and when it completed something again. A guest with
    nothing in flight never stalls, however long it is idle.
  * `Drops`: the drops of one reason since that reason was last reported, at most one report per
    reason every DROP_REPORT_PERIOD seconds, so a flood of bad frames is a line every few seconds,
    not a line per frame; every drop is in the counters anyway.
`counters()` gives host_stalls (stalls so far), host_stalled (1 during one) and host_stall_ms
(time spent stalled, the current stall included) for the status file.

What must not live here: reading the pump or its rings (hvuio/engine.py, hvuio/native/),
logging and printing (the engine logs the events, hvuio/cli prints status), recovery from a
stall (acting on it is the lifecycle's business, not the watcher's).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

#: Seconds without any completion, while something is in flight, before it counts as a stall.
#: The host answers a send in microseconds; Linux's netvsc waits far longer before it calls the
#: channel hung (its TX timeout is 5 s), 2 s keeps a busy but healthy host well clear of it.
STALL_AFTER: Final = 2.0
#: Seconds of one stall after which the channel counts as stopped (the engine's watchdog ends the
#: run; `hvuio up --watchdog`): three times Linux's transmit watchdog default (net/sched/sch_generic.c
#: dev_watchdog, 5 * HZ when a driver sets no watchdog_timeo), so a host that pauses for a few
#: seconds (servicing, a stopped emulator) is a stall that ends, not a re-initialisation.
WATCHDOG_AFTER: Final = 15.0
#: At most one drop report per reason in this many seconds.
DROP_REPORT_PERIOD: Final = 10.0


@dataclass(frozen=True, slots=True)
class Sample:
    """One look at the pump. `progress`: a counter that grows whenever the host completes or
    consumes something (send completions + receive completions written); `drops`: drops so far
    per reason name; `last_drop`: (reason, value) of the newest drop."""

    now: float
    progress: int
    sends_in_flight: int
    completions_waiting: int
    drops: dict[str, int] = field(default_factory=dict)
    last_drop: tuple[str, int] | None = None


@dataclass(frozen=True, slots=True)
class StallBegan:
    seconds: float
    sends_in_flight: int
    completions_waiting: int

    def text(self) -> str:
        return (f"the host has not completed a send for {self.seconds:.1f} s ({self.sends_in_flight} sends "
                f"outstanding, {self.completions_waiting} receive completions waiting for ring space); "
                "counting a stall")


@dataclass(frozen=True, slots=True)
class StallEnded:
    seconds: float

    def text(self) -> str:
        return f"the host resumed after a stall of {self.seconds:.1f} s"


@dataclass(frozen=True, slots=True)
class Drops:
    reason: str
    count: int
    total: int
    last_value: int | None

    def text(self) -> str:
        last = f" (last value {self.last_value:#x})" if self.last_value is not None else ""
        return f"data path dropped {self.count} more ({self.total} in all) for '{self.reason}'{last}"


HealthEvent = StallBegan | StallEnded | Drops


class HealthWatch:
    """See the module docstring. Feed `observe()` one Sample per tick; not thread-safe."""

    def __init__(self, stall_after: float = STALL_AFTER, drop_period: float = DROP_REPORT_PERIOD) -> None:
        self.stall_after = stall_after
        self.drop_period = drop_period
        self.stalls = 0
        self._progress: int | None = None
        self._quiet_since: float | None = None   # when progress last changed with work in flight
        self._stall_start: float | None = None   # set while stalled: when the host last made progress
        self._stalled_ms = 0.0
        self._now = 0.0
        self._reported: dict[str, int] = {}      # reason -> total at its last report
        self._report_at: dict[str, float] = {}   # reason -> time of its last report

    @property
    def stalled(self) -> bool:
        return self._stall_start is not None

    def stalled_for(self, now: float) -> float:
        """Seconds since the host last made progress in the current stall (0 when not stalled)."""
        return 0.0 if self._stall_start is None else now - self._stall_start

    def observe(self, s: Sample) -> list[HealthEvent]:
        self._now = s.now
        events: list[HealthEvent] = []
        busy = s.sends_in_flight > 0 or s.completions_waiting > 0
        moved = self._progress is None or s.progress != self._progress
        self._progress = s.progress
        if moved or not busy:
            if self._stall_start is not None:
                took = s.now - self._stall_start
                self._stalled_ms += took * 1000
                self._stall_start = None
                events.append(StallEnded(took))
            self._quiet_since = s.now if busy else None
        elif self._quiet_since is None:
            self._quiet_since = s.now
        elif self._stall_start is None and s.now - self._quiet_since >= self.stall_after:
            self._stall_start = self._quiet_since   # the stall began with the last progress
            self.stalls += 1
            events.append(StallBegan(s.now - self._quiet_since, s.sends_in_flight, s.completions_waiting))
        events += self._drops(s)
        return events

    def _drops(self, s: Sample) -> list[HealthEvent]:
        out: list[HealthEvent] = []
        for reason, total in sorted(s.drops.items()):
            seen = self._reported.get(reason, 0)
            if total <= seen:
                continue
            last = self._report_at.get(reason)
            if last is not None and s.now - last < self.drop_period:
                continue
            value = s.last_drop[1] if s.last_drop is not None and s.last_drop[0] == reason else None
            out.append(Drops(reason, total - seen, total, value))
            self._reported[reason] = total
            self._report_at[reason] = s.now
        return out

    def counters(self) -> dict[str, int]:
        current = (self._now - self._stall_start) * 1000 if self._stall_start is not None else 0.0
        return {"host_stalls": self.stalls, "host_stalled": int(self.stalled),
                "host_stall_ms": int(self._stalled_ms + current)}
