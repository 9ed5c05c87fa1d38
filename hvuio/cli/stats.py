"""`hvuio stats [DEVICE] [--json] [--watch SECONDS]`: the counters of running `hvuio up` processes
under Linux's `ethtool -S` names (hvuio/stats.py has the name table), with per-second rates in
--watch, and the emulated host's view when the sysroot is the emulator's tree.

What lives here: the click command (added to the group by hvuio/cli/__init__.py), the reading of
the status records (hvuio.status.read_status), the emulated host's view (the `sim status` request
to the emulator's control socket, hvuio.sim.vsp.control, made only when that socket exists under
the sysroot), the text table and the JSON lines. `--watch S` redraws every S seconds (a cleared
screen on a terminal); with --json each sample is one JSON object on its own line; Ctrl-C ends it
with exit status 0. Without --watch: one sample, one JSON object with --json.

What must not live here: the name mapping and the rates (hvuio/stats.py), the status files
(hvuio/status.py).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from hvuio.cli.app import App, pass_app
from hvuio.errors import UsageError
from hvuio.stats import GAUGES, Watch, device_stats, is_ethtool_name, select_records
from hvuio.status import read_status


def host_view(sysroot: Path, warn: Callable[[str], None]) -> dict[str, Any] | None:
    """The emulated host's `sim status` entries by instance GUID, or None when the sysroot is not
    a running emulator's tree (no control socket) or its host does not answer (said through `warn`)."""
    from hvuio.sim.vsp.control import request, socket_path

    if not socket_path(sysroot).exists():
        return None
    try:
        devices = request(sysroot, {"cmd": "status"}).get("devices")
    except UsageError as err:
        warn(f"the emulated host's counters are left out: {err.message}")
        return None
    return devices if isinstance(devices, dict) else None


def _sampler(sysroot: Path, device: str | None, warn: Callable[[str], None]) -> Callable[[], list[dict[str, Any]]]:
    warned: set[str] = set()

    def warn_once(text: str) -> None:
        if text not in warned:
            warned.add(text)
            warn(text)

    def sample() -> list[dict[str, Any]]:
        records = select_records(read_status(sysroot), device)
        hosts = host_view(sysroot, warn_once) or {}
        out = []
        for rec in records:
            host = hosts.get(str(rec.get("device")))
            out.append(device_stats(rec, host if isinstance(host, dict) else None))
        return out

    return sample


NAME_WIDTH = 28
#: the watch's clock and sleep (module names, so a test hands in its own)
CLOCK: Callable[[], float] = time.monotonic
SLEEP: Callable[[float], None] = time.sleep


def _rows(values: dict[str, int], rates: dict[str, float] | None, always: Callable[[str], bool]) -> list[str]:
    shown = [(k, v) for k, v in values.items() if always(k) or v]
    if not shown:
        return ["    (all zero)"]
    width = max(NAME_WIDTH, *(len(k) for k, _ in shown))
    lines = []
    for k, v in shown:
        rate = "" if rates is None else ("-" if k in GAUGES or k not in rates else f"{rates[k]:.1f}/s")
        lines.append(f"    {k:<{width}}  {v:>14}  {rate:>14}".rstrip())
    return lines


def render_text(views: list[dict[str, Any]], interval: float | None) -> str:
    """The table of one sample: per device its ethtool-named counters (always), its other
    non-zero counters and, with a previous sample, the per-second rates; the host's counters."""
    out = []
    for view in views:
        tap = f", tap {view['tap']}" if view.get("tap") else ""
        every = f", rates over {interval:g} s" if interval is not None and "rates" in view else ""
        out.append(f"{view['device']} (pid {view['pid']}{tap}, {view['queues']} queue"
                   f"{'s' if view['queues'] != 1 else ''}{every})")
        rates = view.get("rates") if interval is not None else None
        out.append("  ethtool names:")
        stats = view["stats"]
        named = {k: v for k, v in stats.items() if is_ethtool_name(k)}
        out += _rows(named, rates, lambda k: True)
        out.append("  hvuio counters (non-zero):")
        out += _rows({k: v for k, v in stats.items() if k not in named}, rates, lambda k: False)
        host = view.get("host")
        if isinstance(host, dict):
            counters = {k: v for k, v in (host.get("counters") or {}).items() if isinstance(v, int)}
            fault = f", FAULT: {host['fault']}" if host.get("fault") else ""
            out.append(f"  emulated host (non-zero){fault}:")
            out += _rows(counters, host.get("rates") if interval is not None else None, lambda k: False)
    return "\n".join(out)


@click.command()
@click.argument("device", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (with --watch: one object per line).")
@click.option("--watch", "interval", type=click.FloatRange(min=0.1), default=None, metavar="SECONDS",
              help="Redraw every SECONDS seconds with per-second rates; Ctrl-C stops.")
@pass_app
def stats(app: App, device: str | None, as_json: bool, interval: float | None) -> None:
    """Counters of running 'hvuio up' processes under the kernel's ethtool -S names (DEVICE: an
    instance GUID or tap name; all when omitted), and the emulated host's when it is the emulator."""
    sample = _sampler(app.sysroot, device, lambda text: click.echo(f"Note: {text}.", err=True))
    watch = Watch(sample, clock=CLOCK)
    if interval is None:
        _emit(watch.next(), as_json, None)
        return
    try:
        _emit(watch.next(), as_json, interval)
        while True:
            SLEEP(interval)
            try:
                views = watch.next()
            except UsageError as err:  # every watched `up` ended: the watch is over
                click.echo(f"{err.message[0].upper()}{err.message[1:]}.", err=True)
                return
            _emit(views, as_json, interval)
    except KeyboardInterrupt:
        return


def _emit(views: list[dict[str, Any]], as_json: bool, interval: float | None) -> None:
    if as_json:
        line: dict[str, Any] = {"devices": views}
        if interval is not None:
            line.update(time=time.time(), interval=interval)
        click.echo(json.dumps(line, sort_keys=True))
        return
    if interval is not None:
        click.clear()
    click.echo(render_text(views, interval))
