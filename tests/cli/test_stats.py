"""`hvuio stats`: the kernel's ethtool names taken from the right hvuio counters (globals summed
over the queues, per-queue names per queue), hvuio's other counters under their own names, rates
between two samples with the clock handed in, DEVICE selection and the errors a user meets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hvuio.errors import DeviceNotFoundError, UsageError
from hvuio.stats import (GLOBAL_NAMES, MAPPED_SOURCES, NOT_COUNTED, QUEUE_NAMES, Watch, device_stats, ethtool_stats,
                         is_ethtool_name, queue_counters, rates, select_records, split_queues)
from hvuio.status import StatusFile, StatusRecord

from support.cli import run_main

GUID = "0b5e12e4-6c2b-4a44-8c37-12d2a6f4e8a1"


def _distinct(names: list[str], base: int = 100) -> dict[str, int]:
    """Every name its own value, so a mapping that takes the wrong counter shows."""
    return {n: base + i for i, n in enumerate(names)}


def test_each_global_name_is_taken_from_its_source_counter() -> None:
    counters = _distinct(sorted(MAPPED_SOURCES) + ["rx_xfer", "keepalives"])
    stats = ethtool_stats(counters)
    for name, src, _ in GLOBAL_NAMES:
        assert stats[name] == counters[src], name
    assert stats["tx_send_full"] == counters["tx_no_space"]  # the kernel's name for "no free section"


def test_per_queue_names_come_from_each_queues_counters() -> None:
    counters = _distinct(sorted(MAPPED_SOURCES))
    stats = ethtool_stats(counters)
    assert stats["tx_queue_0_packets"] == counters["tx_packets"]
    assert stats["tx_queue_0_bytes"] == counters["tx_bytes"]
    assert stats["rx_queue_0_packets"] == counters["rx_packets"]
    assert stats["rx_queue_0_bytes"] == counters["rx_bytes"]
    assert not any(k.startswith(("tx_queue_1", "rx_queue_1")) for k in stats)


def test_n_queues_give_n_sets_of_names_and_global_sums() -> None:
    queues = [_distinct(sorted(MAPPED_SOURCES), base) for base in (10, 1000, 100000)]
    stats = ethtool_stats({"tx_packets": 1, "rx_xfer": 7}, queues)
    for i, q in enumerate(queues):
        for pattern, src, _ in QUEUE_NAMES:
            assert stats[pattern.format(q=i)] == q[src]
    for name, src, _ in GLOBAL_NAMES:
        assert stats[name] == sum(q[src] for q in queues)
    assert stats["rx_xfer"] == 7  # hvuio's own names: the record's totals


def test_the_ethtool_names_come_first_in_the_kernels_order() -> None:
    stats = ethtool_stats(_distinct(sorted(MAPPED_SOURCES) + ["aaa_first_by_name"]))
    keys = list(stats)
    assert keys[:len(GLOBAL_NAMES)] == [n for n, _, _ in GLOBAL_NAMES]
    assert keys[len(GLOBAL_NAMES):len(GLOBAL_NAMES) + len(QUEUE_NAMES)] == [p.format(q=0) for p, _, _ in QUEUE_NAMES]
    assert all(is_ethtool_name(k) for k in keys[:len(GLOBAL_NAMES) + len(QUEUE_NAMES)])
    assert keys[-1] == "aaa_first_by_name" and not is_ethtool_name("aaa_first_by_name")


def test_a_mapped_source_is_not_repeated_under_its_own_name() -> None:
    counters = _distinct(sorted(MAPPED_SOURCES) + ["tx_oversize"])
    stats = ethtool_stats(counters)
    for src in MAPPED_SOURCES - {n for n, _, _ in GLOBAL_NAMES}:
        assert src not in stats, src
    # hvuio's tx_no_space ("no free section") must not show under the kernel's tx_no_space (a drop)
    assert "tx_no_space" not in stats and "tx_no_space" in {n for n, _ in NOT_COUNTED}
    assert stats["tx_oversize"] == counters["tx_oversize"]


def test_values_a_record_should_not_hold_count_zero() -> None:
    stats = ethtool_stats({"tx_packets": "many", "tx_busy": -3, "rx_packets": True, "polls": 4.5})
    assert stats["tx_queue_0_packets"] == stats["tx_busy"] == stats["rx_queue_0_packets"] == stats["polls"] == 0


def test_queue_counters_prefers_a_queue_list_and_falls_back_to_counters() -> None:
    assert queue_counters({"counters": {"tx_packets": 3}}) == [{"tx_packets": 3}]
    assert queue_counters({"counters": {}, "queues": [{"tx_packets": 1}, {"tx_packets": 2}]}) == [
        {"tx_packets": 1}, {"tx_packets": 2}]
    assert queue_counters({"counters": {"tx_packets": 3}, "queues": ["junk"]}) == [{"tx_packets": 3}]
    assert queue_counters({}) == [{}]


def test_rates_leave_out_gauges_and_counters_that_went_back() -> None:
    before = {"tx_queue_0_packets": 100, "sections_in_use": 3, "polls": 50, "only_before": 1}
    after = {"tx_queue_0_packets": 400, "sections_in_use": 9, "polls": 40, "only_after": 1}
    assert rates(before, after, 2.0) == {"tx_queue_0_packets": 150.0}
    assert rates(before, after, 0.0) == {}
    speed = rates({"link_speed_mbps": 10_000, "link_speed_changes": 0},
                  {"link_speed_mbps": 40_000, "link_speed_changes": 2}, 2.0)
    assert speed == {"link_speed_changes": 1.0}  # the current speed is a level, not a count


def _record(device: str, pid: int, tap: str | None, **counters: int) -> StatusRecord:
    return {"device": device, "pid": pid, "tap": tap, "counters": dict(counters)}


def test_watch_rates_between_two_samples_with_an_injected_clock() -> None:
    samples = iter([
        [device_stats(_record(GUID, 7, "hvu-a", tx_packets=10, rx_bytes=1000),
                      {"counters": {"frames_from_guest": 10}})],
        [device_stats(_record(GUID, 7, "hvu-a", tx_packets=70, rx_bytes=4000),
                      {"counters": {"frames_from_guest": 70}})],
        [device_stats(_record(GUID, 8, "hvu-a", tx_packets=5))],  # `up` restarted: a new pid
    ])
    times = iter([100.0, 102.0, 104.0])
    watch = Watch(lambda: next(samples), clock=lambda: next(times))
    first = watch.next()
    assert "rates" not in first[0] and "rates" not in first[0]["host"]
    [second] = watch.next()
    assert second["rates"]["tx_queue_0_packets"] == 30.0 and second["rates"]["rx_queue_0_bytes"] == 1500.0
    assert second["host"]["rates"] == {"frames_from_guest": 30.0}
    [third] = watch.next()
    assert "rates" not in third


def test_select_records_by_guid_or_tap() -> None:
    records = [_record(GUID, 1, "hvu-a"), _record("other-guid", 2, "hvu-b")]
    assert select_records(records, None) == records
    assert select_records(records, GUID.upper()) == records[:1]
    assert select_records(records, "hvu-b") == records[1:]
    with pytest.raises(DeviceNotFoundError) as found:
        select_records(records, "eth9")
    assert "eth9" in found.value.message and "hvu-a" in (found.value.hint or "")
    with pytest.raises(UsageError) as none:
        select_records([], None)
    assert "hvuio up" in (none.value.hint or "")


def _live(tmp_path: Path, guid: str, tap: str, counters: dict[str, int]) -> StatusFile:
    f = StatusFile(tmp_path, guid)
    f.write(counters=counters, tap=tap)
    return f


def test_stats_json_of_a_running_up(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    live = _live(tmp_path, GUID, "hvu-a", {"tx_packets": 12, "tx_bytes": 1200, "tx_no_space": 2, "polls": 3})
    try:
        code, out, err = run_main(capsys, "--sysroot", str(tmp_path), "stats", "--json")
    finally:
        live.remove()
    assert code == 0, err
    [dev] = json.loads(out)["devices"]
    assert dev["device"] == GUID and dev["tap"] == "hvu-a" and dev["queues"] == 1 and "host" not in dev
    assert dev["stats"]["tx_queue_0_packets"] == 12 and dev["stats"]["tx_send_full"] == 2
    assert dev["stats"]["polls"] == 3


def test_stats_text_names_the_device_and_the_ethtool_counters(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    live = _live(tmp_path, GUID, "hvu-a", {"rx_packets": 5, "keepalives": 1})
    try:
        code, out, err = run_main(capsys, "--sysroot", str(tmp_path), "stats", "hvu-a")
    finally:
        live.remove()
    assert code == 0, err
    assert GUID in out and "tap hvu-a" in out
    assert "rx_queue_0_packets" in out and "tx_busy" in out and "keepalives" in out
    assert "/s" not in out  # no rates without --watch


def test_stats_watch_json_prints_one_object_per_sample_and_ctrl_c_exits_0(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import hvuio.cli.stats as cli_stats

    live = _live(tmp_path, GUID, "hvu-a", {"tx_packets": 10})
    clock = iter([50.0, 50.5])
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 2:
            raise KeyboardInterrupt
        live.write(counters={"tx_packets": 20})  # what `up` wrote meanwhile

    monkeypatch.setattr(cli_stats, "SLEEP", sleep)
    monkeypatch.setattr(cli_stats, "CLOCK", lambda: next(clock))
    try:
        code, out, err = run_main(capsys, "--sysroot", str(tmp_path), "stats", "--json", "--watch", "0.5")
    finally:
        live.remove()
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert len(lines) == 2 and sleeps == [0.5, 0.5]
    assert "rates" not in lines[0]["devices"][0]
    assert lines[1]["devices"][0]["rates"]["tx_queue_0_packets"] == 20.0
    assert lines[1]["interval"] == 0.5


def test_stats_watch_text_shows_rates(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import hvuio.cli.stats as cli_stats

    live = _live(tmp_path, GUID, "hvu-a", {"rx_packets": 0})
    clock = iter([0.0, 2.0])
    calls: list[Any] = []

    def sleep(seconds: float) -> None:
        calls.append(seconds)
        if len(calls) == 2:
            raise KeyboardInterrupt
        live.write(counters={"rx_packets": 300})

    monkeypatch.setattr(cli_stats, "SLEEP", sleep)
    monkeypatch.setattr(cli_stats, "CLOCK", lambda: next(clock))
    try:
        code, out, err = run_main(capsys, "--sysroot", str(tmp_path), "stats", "--watch", "2")
    finally:
        live.remove()
    assert code == 0, err
    assert "rates over 2 s" in out
    assert any(line.split()[:3] == ["rx_queue_0_packets", "300", "150.0/s"] for line in out.splitlines()), out


def test_stats_without_a_running_up_is_one_sentence_and_a_hint(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main(capsys, "--sysroot", str(tmp_path), "stats")
    assert code == UsageError.exit_code and out == ""
    assert err.startswith("Error: no 'hvuio up' is running\n")
    assert f"Hint: Start one with 'hvuio --sysroot {tmp_path} up DEVICE'" in err  # the hint names the sysroot


def test_stats_of_a_device_no_up_drives(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    live = _live(tmp_path, GUID, "hvu-a", {})
    try:
        code, out, err = run_main(capsys, "--sysroot", str(tmp_path), "stats", "eth7", "--json")
    finally:
        live.remove()
    assert code == DeviceNotFoundError.exit_code and out == ""
    assert "Error: no running 'hvuio up' drives eth7\n" in err and "Hint: Running: " in err
    assert len([line for line in err.splitlines() if line.startswith("Error: ")]) == 1


def test_split_queues_takes_each_queues_names_out_of_the_totals() -> None:
    totals = {"tx_packets": 30, "rx_packets": 7, "tx_busy": 4, "queues": 2,
              "tx_queue_0_packets": 10, "tx_queue_0_bytes": 1000, "rx_queue_0_packets": 3, "rx_queue_0_bytes": 300,
              "tx_queue_1_packets": 20, "tx_queue_1_bytes": 2000, "rx_queue_1_packets": 4, "rx_queue_1_bytes": 400}
    queues = split_queues(totals)
    assert queues == [{"tx_packets": 10, "tx_bytes": 1000, "rx_packets": 3, "rx_bytes": 300},
                      {"tx_packets": 20, "tx_bytes": 2000, "rx_packets": 4, "rx_bytes": 400}]
    stats = ethtool_stats(totals, queues)
    assert stats["tx_queue_1_packets"] == 20 and stats["rx_queue_0_bytes"] == 300
    assert stats["tx_busy"] == 4  # a global the queues do not carry comes from the totals
    assert split_queues({"tx_packets": 1}) is None


def test_split_queues_counts_a_missing_queue_name_as_zero() -> None:
    assert split_queues({"tx_queue_1_packets": 5}) == [
        {"tx_packets": 0, "tx_bytes": 0, "rx_packets": 0, "rx_bytes": 0},
        {"tx_packets": 5, "tx_bytes": 0, "rx_packets": 0, "rx_bytes": 0}]
