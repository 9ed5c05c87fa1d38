"""`hvuio up` and `hvuio status`: bring a synthetic NIC up, print what was negotiated, run it,
tear it down; show the counters of running instances.

What lives here: the click commands (registered on `hvuio.cli.cli` when imported), the
rendering of `NicInfo` as one readable block or JSON, and the status file a running `up` keeps at
`<sysroot>/run/hvuio/up/<guid>.json` (pid, negotiated values, counters; rewritten about twice a
second, removed at exit) which `hvuio status` reads. The work is hvuio/engine.py's; heavy
modules (the C core, pyroute2) are imported inside the command so `hvuio --help` stays cheap.

What must not live here: protocol or ring logic, sysfs parsing.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import click

from hvuio.cli import App, cli, pass_app
from hvuio.errors import UnsafePathError
from hvuio.safefs import unlink, write_file

STATUS_DIR = "run/hvuio/up"

BUSY_POLL_DEFAULT_US = 50  # covers a same-host reply or ACK; costs CPU only while traffic flows
_NVSP_CHOICES = ("1", "2", "4", "5", "6", "6.1")


def _speed(bps: int | None) -> str:
    if bps is None:
        return "unknown speed"
    for unit, div in (("Gbit/s", 10**9), ("Mbit/s", 10**6), ("kbit/s", 10**3)):
        if bps >= div:
            return f"{bps / div:g} {unit}"
    return f"{bps} bit/s"


def render_info(info: dict[str, Any]) -> str:
    """The negotiated parameters as one aligned block (keys as NicInfo.to_dict gives them)."""
    link = "unknown" if info["link_up"] is None else ("up" if info["link_up"] else "down")
    rows = [
        ("Device", f"{info['device']} ({info['uio']}, relid {info['relid']}, "
                   f"{'monitored' if info['monitored'] else 'not monitored'})"),
        ("NVSP", f"{info['nvsp']} ({info['nvsp_version']:#x}), NDIS {info['ndis']}, RNDIS {info['rndis_version']}"),
        ("MAC", f"{info['mac']} (permanent {info['permanent_mac']})"),
        ("MTU", str(info["mtu"])),
        ("Link", f"{link}, {_speed(info['link_speed_bps'])}"),
        ("Receive", f"{info['recv_section_count']} sections of {info['recv_section_size']} bytes "
                    f"({info['recv_buffer_size']} byte buffer)"),
        ("Send", f"{info['send_section_count']} sections of {info['send_section_size']} bytes "
                 f"({info['control_sections']} kept for control){_aggregation_text(info)}"),
        ("Queues", str(info["queues"])),
        ("Ring", f"{info['ring_size']} bytes per direction"),
        ("Offload", _offload_text(info.get("offloads") or {})),
    ]
    return "\n".join(f"{k:<8} {v}" for k, v in rows)


def _aggregation_text(info: dict[str, Any]) -> str:
    agg = info.get("tx_aggregation") or {}
    if not agg:
        return ""
    return f"; host takes up to {agg['max_packets']} packets per send, {agg['alignment']}-byte aligned"


def _offload_text(off: dict[str, Any]) -> str:
    if not off.get("requested", False):
        return "off (--no-offload)"
    on = [k for k, v in (off.get("enabled") or {}).items() if v is True]
    if not on:
        return "none (the host offered or accepted none)"
    lso = (off.get("enabled") or {}).get("lso_max_size", 0)
    return ", ".join(on) + (f"; LSO up to {lso} bytes" if lso else "")


def _render_counters(counters: dict[str, int]) -> str:
    shown = {k: v for k, v in sorted(counters.items()) if v}
    if not shown:
        return "Counters: all zero"
    return "Counters:\n" + "\n".join(f"  {k:<24} {v}" for k, v in shown.items())


class StatusFile:
    """`<sysroot>/run/hvuio/up/<guid>.json`, replaced atomically on every write."""

    def __init__(self, sysroot: Path, guid: str) -> None:
        self.path = Path(sysroot) / STATUS_DIR / f"{guid}.json"
        self.record: dict[str, Any] = {"pid": os.getpid(), "device": guid, "started": time.time()}

    def write(self, **fields: Any) -> None:
        self.record.update(fields, updated=time.time())
        try:
            write_file(self.path, (json.dumps(self.record, sort_keys=True) + "\n").encode(), 0o644,
                       create_dirs=0o755)
        except (OSError, UnsafePathError):
            pass  # status is best effort: a read-only /run must not stop the NIC

    def remove(self) -> None:
        try:
            unlink(self.path)
        except (OSError, UnsafePathError):
            pass


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_status(sysroot: Path) -> list[dict[str, Any]]:
    """Records of running `hvuio up` instances (stale files of dead processes are skipped)."""
    out = []
    for path in sorted((Path(sysroot) / STATUS_DIR).glob("*.json")):
        try:
            rec = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(rec, dict) and isinstance(rec.get("device"), str) and _alive(rec.get("pid")):
            out.append(rec)
    return out


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the records as JSON.")
@pass_app
def status(app: App, as_json: bool) -> None:
    """Counters of every running 'hvuio up' (from their status files)."""
    records = read_status(app.sysroot)
    if as_json:
        click.echo(json.dumps(records, sort_keys=True))
        return
    if not records:
        click.echo("No running 'hvuio up'.")
        return
    for rec in records:
        tap = f", tap {rec['tap']}" if rec.get("tap") else ""
        click.echo(f"{rec['device']} (pid {rec['pid']}{tap})")
        try:
            if rec.get("nic"):
                click.echo(render_info(rec["nic"]))
            click.echo(_render_counters(rec.get("counters", {})))
        except (KeyError, TypeError, ValueError, AttributeError):  # a file someone else wrote
            click.echo("  (status record is incomplete or malformed)")


@cli.command()
@click.argument("device")
@click.option("--json", "as_json", is_flag=True, help="Print the negotiated parameters (and counters) as JSON.")
@click.option("--netns", metavar="NS", help="Move the tap into this existing network namespace.")
@click.option("--ifname", metavar="NAME", help="Name of the tap (default: a random 'hvu-…' name).")
@click.option("--no-datapath", is_flag=True, help="Bring the NIC up and serve control traffic only (no tap).")
@click.option("--once", is_flag=True, help="Bring up, print, tear down and exit.")
@click.option("--mtu", type=click.IntRange(68, 65521), default=1500, show_default=True,
              help="MTU announced to the host in NDIS config.")
@click.option("--max-nvsp", type=click.Choice(_NVSP_CHOICES), default=None,
              help="Offer NVSP versions up to this one only (debugging, host compatibility).")
@click.option("--busy-poll", "busy_poll_us", type=click.IntRange(0, 1_000_000), default=BUSY_POLL_DEFAULT_US,
              show_default=True, metavar="USEC",
              help="After traffic, keep polling this many microseconds before sleeping (0: sleep at once).")
@click.option("--offload/--no-offload", default=True, show_default=True,
              help="Negotiate checksum, LSO and RSC offloads with the host and the tap.")
@click.option("--tx-aggregation/--no-tx-aggregation", default=True, show_default=True,
              help="Let frames read together share one send section, within the host's RNDIS limits.")
@pass_app
def up(app: App, device: str, as_json: bool, netns: str | None, ifname: str | None, no_datapath: bool,
       once: bool, mtu: int, max_nvsp: str | None, busy_poll_us: int, offload: bool,
       tx_aggregation: bool) -> None:
    """Bring DEVICE (instance GUID or interface name) up and run it until SIGINT/SIGTERM."""
    from hvuio.engine import NVSP_NAMES, Engine, Nic, StopPipe
    from hvuio.wire import nvsp as wn

    versions = tuple(wn.SUPPORTED_NVSP_VERSIONS)
    if max_nvsp is not None:
        cap = next(v for v, name in NVSP_NAMES.items() if name == max_nvsp)
        versions = tuple(v for v in versions if v <= cap)
    with StopPipe() as stop:
        nic = Nic(app.sysroot, device, mtu=mtu, versions=versions, offload=offload)
        nic.stop_fd = stop.read_fd  # Ctrl-C during a slow bring-up aborts it (exit 130)
        engine: Engine | None = None
        state: StatusFile | None = None

        def tick() -> None:
            if state is not None and nic.info is not None:
                live = engine.live_counters() if engine is not None else {}
                state.write(nic=nic.info.to_dict(), counters={**live, **nic.counter_snapshot()})

        def ready(e: Engine) -> None:
            if state is not None:
                state.write(tap=e.tap_name, netns=netns)
            if as_json:
                click.echo(json.dumps({"event": "datapath", "tap": e.tap_name, "netns": netns}))
            else:
                click.echo(f"Data path running on tap {e.tap_name}{' in ' + netns if netns else ''}; "
                           "Ctrl-C to stop.")

        counters: dict[str, int] = {}
        try:
            data = nic.open().to_dict()
            if not once:  # written before "ready" is printed, so a reader of stdout finds it
                state = StatusFile(app.sysroot, data["device"])
                tick()
            if as_json:
                click.echo(json.dumps({"event": "ready", "nic": data}, sort_keys=True))
            else:
                click.echo(render_info(data))
            if not once:
                if no_datapath:
                    if not as_json:
                        click.echo("Serving control traffic; Ctrl-C to stop.")
                    nic.serve(stop.read_fd, on_tick=tick)
                else:
                    engine = Engine(nic, ifname=ifname, netns=netns, busy_poll_us=busy_poll_us,
                                    tx_aggregation=tx_aggregation)
                    counters = engine.run(stop.read_fd, on_ready=ready, on_tick=tick)
            counters.update(nic.counter_snapshot())
        finally:
            if state is not None:
                state.remove()
            nic.close()
        if as_json:
            click.echo(json.dumps({"event": "down", "counters": counters, "signal": stop.signal}, sort_keys=True))
        else:
            click.echo(f"Down{' (signal ' + str(stop.signal) + ')' if stop.signal else ''}.")
            if not once:
                click.echo(_render_counters(counters))
