"""hvuio.health: stalls (the host completes nothing while work is in flight) and drop reports,
driven with an explicit clock."""

from __future__ import annotations

from hvuio.health import DROP_REPORT_PERIOD, STALL_AFTER, Drops, HealthWatch, Sample, StallBegan, StallEnded


def look(w: HealthWatch, now: float, progress: int, in_flight: int = 0, waiting: int = 0,
         drops: dict[str, int] | None = None, last: tuple[str, int] | None = None) -> list[object]:
    return list(w.observe(Sample(now, progress, in_flight, waiting, drops or {}, last)))


def test_an_idle_guest_never_stalls() -> None:
    w = HealthWatch()
    for t in range(0, 60):
        assert look(w, float(t), progress=7) == []
    assert w.counters() == {"host_stalls": 0, "host_stalled": 0, "host_stall_ms": 0}


def test_sends_outstanding_without_progress_become_one_stall_that_ends_when_the_host_answers() -> None:
    w = HealthWatch()
    assert look(w, 0.0, progress=10, in_flight=3) == []
    assert look(w, 1.0, progress=10, in_flight=3) == []
    [began] = look(w, 0.0 + STALL_AFTER, progress=10, in_flight=3)
    assert isinstance(began, StallBegan) and began.sends_in_flight == 3 and began.seconds == STALL_AFTER
    assert "has not completed a send for 2.0 s (3 sends outstanding" in began.text()
    assert look(w, 5.0, progress=10, in_flight=3) == []  # counted once, not once per tick
    assert w.counters() == {"host_stalls": 1, "host_stalled": 1, "host_stall_ms": 5000}
    [ended] = look(w, 6.0, progress=11, in_flight=2)
    assert isinstance(ended, StallEnded) and ended.seconds == 6.0 and "resumed" in ended.text()
    assert w.counters() == {"host_stalls": 1, "host_stalled": 0, "host_stall_ms": 6000}


def test_progress_in_time_is_no_stall() -> None:
    w = HealthWatch()
    for t in range(20):
        assert look(w, t * 1.5, progress=t, in_flight=5) == []
    assert w.stalls == 0


def test_completions_waiting_for_ring_space_also_stall() -> None:
    w = HealthWatch()
    look(w, 0.0, progress=1, waiting=4)
    [began] = look(w, 3.0, progress=1, waiting=4)
    assert isinstance(began, StallBegan) and began.completions_waiting == 4
    [ended] = look(w, 4.0, progress=1, waiting=0)  # nothing left in flight: over, whatever moved
    assert isinstance(ended, StallEnded)


def test_a_second_stall_counts_again() -> None:
    w = HealthWatch()
    look(w, 0.0, progress=1, in_flight=1)
    look(w, 3.0, progress=1, in_flight=1)
    look(w, 4.0, progress=2, in_flight=1)
    assert look(w, 5.0, progress=2, in_flight=1) == []
    [again] = look(w, 4.0 + STALL_AFTER, progress=2, in_flight=1)
    assert isinstance(again, StallBegan) and w.stalls == 2


def test_drops_are_reported_per_reason_at_most_once_per_period() -> None:
    w = HealthWatch()
    [first] = look(w, 0.0, 0, drops={"rx_oversize": 3}, last=("rx_oversize", 9018))
    assert first == Drops("rx_oversize", 3, 3, 9018)
    assert "dropped 3 more (3 in all) for 'rx_oversize' (last value 0x233a)" in first.text()
    assert look(w, 1.0, 0, drops={"rx_oversize": 50}) == []  # within the period: summed for later
    events = look(w, DROP_REPORT_PERIOD, 0, drops={"rx_oversize": 80, "tap_write": 1}, last=("tap_write", 11))
    assert events == [Drops("rx_oversize", 77, 80, None), Drops("tap_write", 1, 1, 11)]
    assert look(w, 3 * DROP_REPORT_PERIOD, 0, drops={"rx_oversize": 80, "tap_write": 1}) == []  # nothing new


def test_stalled_for_is_the_time_since_the_host_last_made_progress() -> None:
    w = HealthWatch()
    look(w, 0.0, progress=10, in_flight=3)
    assert w.stalled_for(1.0) == 0.0                      # quiet, not yet a stall
    look(w, STALL_AFTER, progress=10, in_flight=3)
    assert w.stalled_for(7.5) == 7.5                      # the stall began with the last progress
    look(w, 8.0, progress=11, in_flight=3)
    assert w.stalled_for(9.0) == 0.0
