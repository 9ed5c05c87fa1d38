"""`hvuio up` and `hvuio status`: bring a synthetic NIC up, print what was negotiated, run it,
tear it down; show the counters of running instances.

What lives here: the two click commands (added to the group by hvuio/cli/__init__.py) and the
lines they print: `up` turns the events of hvuio.up.run_up into text or `--json` lines, `status`
first removes the records of `up` processes that are no longer running (hvuio.status.sweep_stale,
one line each saying so: on stderr with --json) and prints the records hvuio.status.read_status
returns (text blocks from hvuio/cli/render.py).
The work is hvuio/up.py's and hvuio/engine.py's; the C core and pyroute2 are imported only when
`up` runs, so `hvuio --help` stays cheap.

What must not live here: the bring-up and its status file (hvuio/up.py, hvuio/status.py),
protocol or ring logic, sysfs parsing.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from hvuio.cli.app import App, pass_app
from hvuio.cli.render import render_counters, render_info, render_lifecycle
from hvuio.health import WATCHDOG_AFTER
from hvuio.status import notify_service, read_status, sweep_stale
from hvuio.up import (BUSY_POLL_DEFAULT_US, NVSP_CHOICES, QUEUES_MAX, VF_CHOICES, DatapathRunning, Down, Ready, Serving,
                      UpEvent, UpOptions, check_mtu, run_up)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the records as JSON.")
@pass_app
def status(app: App, as_json: bool) -> None:
    """Counters of every running 'hvuio up' (from their status files); records of processes
    that are no longer running are removed."""
    for stale in sweep_stale(app.sysroot):
        click.echo(stale.message[0].upper() + stale.message[1:] + ".", err=as_json)
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
            if rec.get("lifecycle"):
                click.echo(render_lifecycle(rec["lifecycle"]))
            if rec.get("nic"):
                click.echo(render_info(rec["nic"]))
            click.echo(render_counters(rec.get("counters", {})))
        except (KeyError, TypeError, ValueError, AttributeError):  # a file someone else wrote
            click.echo("  (status record is incomplete or malformed)")


@click.command()
@click.argument("device")
@click.option("--json", "as_json", is_flag=True, help="Print the negotiated parameters (and counters) as JSON.")
@click.option("--netns", metavar="NS", help="Move the tap into this existing network namespace.")
@click.option("--ifname", metavar="NAME", help="Name of the tap (default: a random 'hvu-…' name).")
@click.option("--no-datapath", is_flag=True, help="Bring the NIC up and serve control traffic only (no tap).")
@click.option("--once", is_flag=True, help="Bring up, print, tear down and exit.")
@click.option("--mtu", type=int, default=1500, show_default=True,
              help="MTU asked of the host (68 to 65521); the tap gets less when the host or the TX path "
                   "carries less (a warning says why).")
@click.option("--max-nvsp", type=click.Choice(NVSP_CHOICES), default=None,
              help="Offer NVSP versions up to this one only (debugging, host compatibility).")
@click.option("--busy-poll", "busy_poll_us", type=click.IntRange(0, 1_000_000), default=BUSY_POLL_DEFAULT_US,
              show_default=True, metavar="USEC",
              help="After traffic, keep polling this many microseconds before sleeping (0: sleep at once).")
@click.option("--offload/--no-offload", default=True, show_default=True,
              help="Negotiate checksum, LSO and RSC offloads with the host and the tap.")
@click.option("--tx-aggregation/--no-tx-aggregation", default=True, show_default=True,
              help="Let frames read together share one send section, within the host's RNDIS limits.")
@click.option("--gpa/--no-gpa", default=True, show_default=True,
              help="Send control messages and large frames by guest-physical address (GPA-direct) from "
                   "pinned guest memory when the platform has it; --no-gpa: the send buffer only.")
@click.option("--trace", "trace_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              metavar="FILE",
              help="Write a pcapng trace: the frames both ways (tcpdump -r, Wireshark) and every "
                   "VMBus/NVSP/RNDIS control message ('hvuio trace FILE' decodes them).")
@click.option("--trace-max-mb", type=click.IntRange(1, 4096), default=64, show_default=True, metavar="MB",
              help="Cap of the trace file: once reached, nothing more is written (no rotation); the "
                   "frames and messages left out are counted (trace_frames_capped, trace_control_capped).")
@click.option("--queues", type=click.IntRange(1, QUEUES_MAX), default=None, metavar="N",
              help="Queues (VMBus channels, one data-path thread and tap queue each) to ask for; the host "
                   "may give fewer. Default: min(online CPUs, the host's receive queues, 16).")
@click.option("--persist", is_flag=True,
              help="Keep the tap when the host rescinds the device (carrier off until it is offered again, then "
                   "the NIC comes up on the same tap) or stops serving it (the NIC is re-initialised); "
                   "without it either ends 'up'.")
@click.option("--watchdog", "watchdog", type=click.IntRange(3, 3600), default=int(WATCHDOG_AFTER), show_default=True,
              metavar="SECONDS",
              help="The host's channel counts as stopped when it completes nothing for this long while sends "
                   "are outstanding: 'up' stops, or with --persist re-initialises the NIC.")
@click.option("--vf", type=click.Choice(VF_CHOICES), default="auto", show_default=True,
              help="Accelerated networking: 'auto' offers SR-IOV to the host and, while it gives the NIC a "
                   "VF, moves the tap's traffic through the VF's netdev (same MAC; the addresses stay on "
                   "the tap); 'off' never offers it. Needs the data path (no effect with --no-datapath "
                   "or --once).")
@pass_app
def up(app: App, device: str, as_json: bool, netns: str | None, ifname: str | None, no_datapath: bool,
       once: bool, mtu: int, max_nvsp: str | None, busy_poll_us: int, offload: bool,
       tx_aggregation: bool, gpa: bool, trace_file: Path | None, trace_max_mb: int, queues: int | None,
       persist: bool, watchdog: int, vf: str) -> None:
    """Bring DEVICE (instance GUID or interface name) up and run it until SIGINT/SIGTERM."""
    check_mtu(mtu)
    options = UpOptions(device=device, netns=netns, ifname=ifname, datapath=not no_datapath, once=once,
                        mtu=mtu, max_nvsp=max_nvsp, busy_poll_us=busy_poll_us, offload=offload,
                        tx_aggregation=tx_aggregation, gpa=gpa, trace=trace_file, trace_max_mb=trace_max_mb,
                        queues=queues, persist=persist, watchdog=float(watchdog), vf=vf)

    def echo(event: UpEvent) -> None:
        _tell_service(event)
        if as_json:
            line = event.json_line()
            if line is not None:
                click.echo(line)
            return
        for text in _up_text(event, once):
            click.echo(text)

    run_up(app.sysroot, options, on_event=echo)


def _tell_service(event: UpEvent) -> None:
    """Ready once the NIC serves (its tap runs, or control traffic only), stopping once it is down:
    what systemd's Type=notify waits for (hvuio.status.notify_service; nothing without one)."""
    if isinstance(event, DatapathRunning):
        notify_service(ready=True, status=f"data path running on tap {event.tap}")
    elif isinstance(event, Serving):
        notify_service(ready=True, status="serving control traffic (no data path)")
    elif isinstance(event, Down):
        notify_service(stopping=True, status="down")


def _up_text(event: UpEvent, once: bool) -> list[str]:
    """The lines `up` prints for one event without --json."""
    if isinstance(event, Ready):
        return [render_info(event.nic)]
    if isinstance(event, Serving):
        return ["Serving control traffic; Ctrl-C to stop."]
    if isinstance(event, DatapathRunning):
        where = " in " + event.netns if event.netns else ""
        return [f"Data path running on tap {event.tap}{where}; Ctrl-C to stop."]
    lines = [f"Down{' (signal ' + str(event.signal) + ')' if event.signal else ''}."]
    if not once:
        lines.append(render_counters(event.counters))
    return lines
