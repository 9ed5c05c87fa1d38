"""`hvuio stats`: the counters of a running `hvuio up` under the names Linux's hv_netvsc gives them
in `ethtool -S`, and their per-second rates.

What lives here: the name table (`GLOBAL_NAMES`, `QUEUE_NAMES`: each ethtool name, the hvuio
counter it is taken from and what both count; `NOT_COUNTED`: the ethtool names hvuio has no
counter of the same meaning for, and why), `ethtool_stats`, which turns the counters of a status
record (hvuio/status.py) into one flat mapping — the ethtool names first, in the kernel's order
(Linux drivers/net/hyperv/netvsc_drv.c, `netvsc_get_strings` / `netvsc_get_ethtool_stats`), then
every other counter under hvuio's own name — `device_stats` (one device's view), `select_records`
(DEVICE as a GUID or tap name, or all) and `rates` / `Watch` (per-second rates between two
samples, with the clock handed in).

Queues: the per-queue names come from a list of per-queue counter mappings, queue 0 being the
primary channel. A status record that carries a `queues` list of such mappings gives one entry
per queue; one without it (today's single-queue data path) is one queue whose counters are the
record's `counters`. `split_queues` takes the same per-queue mappings out of a data path's
totals that carry each queue's names (`tx_queue_<k>_packets`, ..., as `hvuio up`'s final
counters do). The global ethtool names are sums over the queues, as the kernel's are one
per device. hvuio's own names are the record's `counters` as they are (the data path's totals).

A name is mapped only when both count the same event; where the kernel's trigger differs only in
a threshold (stop_queue, wake_queue) or in when a packet is counted (TX packets: the kernel at
the host's completion, hvuio when the packet is sent) the docs say so (docs/STATS.md). The hvuio
counter behind a mapped name is not repeated under its own name: `tx_no_space` of the data path
means "no free send section", which the kernel calls `tx_send_full`, while the kernel's
`tx_no_space` is a drop hvuio never makes (it waits for the ring instead).

What must not live here: click, printing or reading files (hvuio/cli/stats.py, hvuio/status.py),
the emulator (the CLI fetches the emulated host's view and passes it in).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from hvuio.errors import DeviceNotFoundError, UsageError
from hvuio.status import StatusRecord

#: global ethtool names, in the kernel's order: (ethtool name, hvuio data-path counter, meaning)
GLOBAL_NAMES: Final[tuple[tuple[str, str, str], ...]] = (
    ("tx_busy", "tx_busy", "sends deferred: the outbound ring was full"),
    ("tx_send_full", "tx_no_space", "no free send-buffer section for a send"),
    ("rx_comp_busy", "rx_comp_busy", "receive completions that waited: the outbound ring was full"),
    ("stop_queue", "stop_queue", "TX went from running to stopped"),
    ("wake_queue", "wake_queue", "TX went from stopped back to running"),
)

#: per-queue ethtool names (`{q}` is the queue index): (name pattern, hvuio counter, meaning)
QUEUE_NAMES: Final[tuple[tuple[str, str, str], ...]] = (
    ("tx_queue_{q}_packets", "tx_packets", "RNDIS packets sent on the queue"),
    ("tx_queue_{q}_bytes", "tx_bytes", "bytes of their frames"),
    ("rx_queue_{q}_packets", "rx_packets", "frames received on the queue and handed to Linux"),
    ("rx_queue_{q}_bytes", "rx_bytes", "bytes of those frames"),
)

#: ethtool names hvuio has no counter of the same meaning for: (name, why)
NOT_COUNTED: Final[tuple[tuple[str, str], ...]] = (
    ("tx_scattered", "frames are copied into a send section or sent GPA-direct, never linearised"),
    ("tx_no_memory", "no allocation per frame"),
    ("tx_no_space", "the kernel drops a frame when the ring is full with nothing in flight; hvuio waits"),
    ("tx_too_big", "frames too large for a send are dropped as tx_oversize, with other limits"),
    ("rx_no_memory", "no allocation per frame"),
    ("vlan_error", "no in-band 802.1Q handling"),
    ("vf_tx_dropped", "frames the VF's own driver drops are in its netdev's counters ('ip -s link')"),
    ("*_xdp_*", "no XDP"),
    ("cpu<c>_*", "no per-CPU attribution"),
)

#: the hvuio counters the mapped names are taken from (not repeated under their own names)
MAPPED_SOURCES: Final = frozenset(src for _, src, _ in GLOBAL_NAMES + QUEUE_NAMES)

_QUEUE_NAME: Final = re.compile(r"(tx|rx)_queue_[0-9]+_(packets|bytes)")


def is_ethtool_name(name: str) -> bool:
    """Whether `name` is one of the kernel's ethtool names (global or per queue) hvuio maps."""
    return name in {n for n, _, _ in GLOBAL_NAMES} or _QUEUE_NAME.fullmatch(name) is not None


#: values that are levels, not counts: they have no rate
GAUGES: Final = frozenset({"sections_in_use", "gpa_slots_in_use", "pending_completions", "host_stalled",
                           "link_speed_mbps", "tap_uring"})


def _count(value: object) -> int:
    """A counter as a record holds it; anything else (a record someone else wrote) counts 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def queue_counters(record: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The record's per-queue counter mappings, queue 0 first: its `queues` list when it has one,
    else one queue holding its `counters`."""
    queues = record.get("queues")
    if isinstance(queues, list) and queues and all(isinstance(q, dict) for q in queues):
        return list(queues)
    counters = record.get("counters")
    return [counters if isinstance(counters, dict) else {}]


def split_queues(counters: Mapping[str, Any]) -> list[dict[str, int]] | None:
    """Per-queue counter mappings (queue 0 first, under the data path's own names) out of totals
    that name each queue's packets and bytes (`tx_queue_0_packets`, ...); None when they name none.
    Only the per-queue names are split: a queue's other counters exist only in the totals."""
    found = {int(m.group(0).split("_")[2]) for k in counters if (m := _QUEUE_NAME.fullmatch(k))}
    if not found:
        return None
    return [{src: _count(counters.get(pattern.format(q=k))) for pattern, src, _ in QUEUE_NAMES}
            for k in range(max(found) + 1)]


def ethtool_stats(counters: Mapping[str, Any], queues: Iterable[Mapping[str, Any]] | None = None) -> dict[str, int]:
    """The ethtool names (globals summed over the queues, or taken from `counters` when the queues
    do not carry them; then each queue's), then every other counter of `counters` under its own
    name, sorted. `queues` None: one queue, `counters`."""
    qs = [counters] if queues is None else list(queues)
    out = {name: sum(_count(q.get(src)) for q in qs) if any(src in q for q in qs) else _count(counters.get(src))
           for name, src, _ in GLOBAL_NAMES}
    for i, q in enumerate(qs):
        out.update({pattern.format(q=i): _count(q.get(src)) for pattern, src, _ in QUEUE_NAMES})
    out.update({k: _count(v) for k, v in sorted(counters.items()) if k not in MAPPED_SOURCES and k not in out})
    return out


def rates(before: Mapping[str, int], after: Mapping[str, int], seconds: float) -> dict[str, float]:
    """Per-second change of every counter in both samples (gauges and counters that went back
    left out); empty when no time passed."""
    if seconds <= 0:
        return {}
    return {k: (v - before[k]) / seconds for k, v in after.items()
            if k in before and k not in GAUGES and v >= before[k]}


def select_records(records: list[StatusRecord], device: str | None) -> list[StatusRecord]:
    """The records of DEVICE (instance GUID, any case, or tap name), or all of them (None).
    Raises the error a user meets when nothing runs or DEVICE is not among what runs."""
    if not records:
        raise UsageError("no 'hvuio up' is running" + (f" (for {device})" if device else ""),
                         "Start one with 'hvuio up DEVICE'; 'hvuio status' lists the running ones.")
    if device is None:
        return records
    chosen = [r for r in records if str(r.get("device", "")).lower() == device.lower() or r.get("tap") == device]
    if not chosen:
        running = ", ".join(f"{r.get('device')} (tap {r.get('tap') or '-'})" for r in records)
        raise DeviceNotFoundError(f"no running 'hvuio up' drives {device}",
                                  f"Running: {running}. Name one by instance GUID or tap name.")
    return chosen


def device_stats(record: StatusRecord, host: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One device's view: who runs it, its queue count, its stats, the VF it is paired with (`up --vf
    auto`: serial, netdev, data path; None otherwise) and (emulator) the host's view."""
    queues = queue_counters(record)
    counters = record.get("counters")
    out: dict[str, Any] = {
        "device": record.get("device"), "pid": record.get("pid"), "tap": record.get("tap"),
        "queues": len(queues),
        "stats": ethtool_stats(counters if isinstance(counters, dict) else {}, queues),
        "vf": nic.get("vf") if isinstance(nic := record.get("nic"), dict) else None,
    }
    if host is not None:
        out["host"] = dict(host)
    return out


@dataclass
class Watch:
    """Successive samples of `sample()` (a list of `device_stats` views) with the per-second rates
    since the previous sample of the same `up` process (device and pid): `stats` rates under
    "rates", the emulated host's counters' rates under host["rates"]. The clock is handed in."""

    sample: Callable[[], list[dict[str, Any]]]
    clock: Callable[[], float]
    _last: dict[tuple[Any, Any], tuple[float, dict[str, Any]]] = field(default_factory=dict)

    def next(self) -> list[dict[str, Any]]:
        views = self.sample()
        now = self.clock()
        seen = {}
        for view in views:
            key = (view.get("device"), view.get("pid"))
            seen[key] = (now, view)
            prev = self._last.get(key)
            if prev is None:
                continue
            seconds = now - prev[0]
            view["rates"] = rates(prev[1]["stats"], view["stats"], seconds)
            host, prev_host = view.get("host"), prev[1].get("host")
            if isinstance(host, dict) and isinstance(prev_host, dict):
                counters, prev_counters = host.get("counters"), prev_host.get("counters")
                if isinstance(counters, dict) and isinstance(prev_counters, dict):
                    host["rates"] = rates(_ints(prev_counters), _ints(counters), seconds)
        self._last = seen
        return views


def _ints(values: Mapping[str, Any]) -> dict[str, int]:
    return {k: v for k, v in values.items() if isinstance(v, int) and not isinstance(v, bool)}
