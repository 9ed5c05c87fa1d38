"""`hvuio up`: bring a synthetic NIC up, print what was negotiated, run it, tear it down.

What lives here: the click command (registered on `hvuio.cli.cli` when imported) and the
rendering of `NicInfo` as one readable block or JSON. The work is hvuio/engine.py's; heavy
modules (the C core, pyroute2) are imported inside the command so `hvuio --help` stays cheap.

What must not live here: protocol or ring logic, sysfs parsing.
"""

from __future__ import annotations

import json
from typing import Any

import click

from hvuio.cli import App, cli, pass_app

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
                 f"({info['control_sections']} kept for control)"),
        ("Queues", str(info["queues"])),
        ("Ring", f"{info['ring_size']} bytes per direction"),
    ]
    return "\n".join(f"{k:<8} {v}" for k, v in rows)


def _render_counters(counters: dict[str, int]) -> str:
    shown = {k: v for k, v in sorted(counters.items()) if v}
    if not shown:
        return "Counters: all zero"
    return "Counters:\n" + "\n".join(f"  {k:<24} {v}" for k, v in shown.items())


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
@pass_app
def up(app: App, device: str, as_json: bool, netns: str | None, ifname: str | None, no_datapath: bool,
       once: bool, mtu: int, max_nvsp: str | None) -> None:
    """Bring DEVICE (instance GUID or interface name) up and run it until SIGINT/SIGTERM."""
    from hvuio.engine import NVSP_NAMES, Engine, Nic, StopPipe
    from hvuio.wire import nvsp as wn

    versions = tuple(wn.SUPPORTED_NVSP_VERSIONS)
    if max_nvsp is not None:
        cap = next(v for v, name in NVSP_NAMES.items() if name == max_nvsp)
        versions = tuple(v for v in versions if v <= cap)
    with StopPipe() as stop:
        nic = Nic(app.sysroot, device, mtu=mtu, versions=versions)
        try:
            info = nic.open()
            data = info.to_dict()
            if as_json:
                click.echo(json.dumps({"event": "ready", "nic": data}, sort_keys=True), nl=True)
            else:
                click.echo(render_info(data))
            counters: dict[str, int] = {}
            if not once:
                if no_datapath:
                    if not as_json:
                        click.echo("Serving control traffic; Ctrl-C to stop.")
                    nic.serve(stop.read_fd)
                else:
                    engine = Engine(nic, ifname=ifname, netns=netns)

                    def ready(e: Engine) -> None:
                        if as_json:
                            click.echo(json.dumps({"event": "datapath", "tap": e.tap_name, "netns": netns}))
                        else:
                            click.echo(f"Data path running on tap {e.tap_name}"
                                       f"{' in ' + netns if netns else ''}; Ctrl-C to stop.")

                    counters = engine.run(stop.read_fd, on_ready=ready)
            counters.update(nic.counter_snapshot())
        finally:
            nic.close()
        if as_json:
            click.echo(json.dumps({"event": "down", "counters": counters, "signal": stop.signal}, sort_keys=True))
        else:
            click.echo(f"Down{' (signal ' + str(stop.signal) + ')' if stop.signal else ''}.")
            if not once:
                click.echo(_render_counters(counters))
