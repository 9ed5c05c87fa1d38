"""CLI commands about VMBus devices: list, bind, unbind, doctor.

Thin: parse options, call hvuio.device, echo. The group adds these commands (hvuio/cli/__init__.py);
this module takes the App from hvuio/cli/app.py. Errors are HvuioError subclasses rendered by
`hvuio.cli.main`. Works the same on a real machine and on the emulator's tree (--sysroot).
"""

from __future__ import annotations

import json
from typing import Any

import click

from hvuio.cli.app import App, pass_app


@click.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output: the same facts, one object per device.")
@pass_app
def list_devices(app: App, as_json: bool) -> None:
    """List VMBus devices by interface name: MAC, the Azure VF paired with a NIC, state, NUMA
    node, channels and the CPU of each, driver, UIO node, class and instance GUID.

    A NIC bound to uio_hv_generic shows the interface it had in parentheses, and, while an
    'hvuio up --vf auto' runs it, the VF's serial and whether the data path is on it. CHANNELS is
    the count, then relid@cpu of each channel (* = not monitored: signalled with write(1))."""
    from hvuio.device.inventory import inventory
    from hvuio.device.sysfs import sys_path
    from hvuio.status import read_status

    devices = inventory(app.sysroot)
    _add_vf_use(devices, read_status(app.sysroot))
    if as_json:
        click.echo(json.dumps({"devices": devices}, indent=2))
        return
    if not devices:
        bus = sys_path(app.sysroot, "/sys/bus/vmbus/devices")
        click.echo(f"No VMBus devices under {bus} (not a Hyper-V guest? try 'hvuio doctor').")
        return
    header = ("IFACE", "MAC", "VF", "STATE", "NUMA", "CHANNELS", "DRIVER", "UIO", "CLASS", "DEVICE")
    rows = [_list_row(d) for d in devices]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]

    def line(r: tuple[str, ...]) -> str:
        return "  ".join(f"{c:{w}}" for c, w in zip(r, widths)) + "  " + r[-1]

    click.echo(line(header))
    for d, r in zip(devices, rows):
        click.echo(line(r))
        if d["uio"] and app.verbose:
            for m in d["uio"]["maps"]:
                click.echo(f"{'':4}map{m['index']} {m['name']:14} size {m['size']:#x}")
    click.echo("(CHANNELS: count, then relid@cpu; * = not monitored: signalled with write(1))")


def _add_vf_use(devices: list[dict[str, Any]], records: list[Any]) -> None:
    """`vf_use` of each NIC a running 'hvuio up' drives: its status record's VF (serial, netdev,
    data_path; None with --vf off or without such a process)."""
    by_device = {str(r.get("device", "")).lower(): r for r in records if isinstance(r, dict)}
    for d in devices:
        nic = by_device.get(d["device_id"].lower(), {}).get("nic")
        d["vf_use"] = nic.get("vf") if isinstance(nic, dict) else None


def _list_row(d: dict[str, Any]) -> tuple[str, ...]:
    """One line of `hvuio list`: the columns of its header, text."""
    if d["netdevs"]:
        iface, mac = d["netdevs"][0]["name"], d["netdevs"][0]["mac"] or "-"
    elif d["bound_from"]:
        iface, mac = f"({d['bound_from'][0]})", "-"
    else:
        iface, mac = "-", "-"
    vf, use = d["vf"], d.get("vf_use")
    vf_text = f"{vf['name']} ({vf['pci']})" if vf else "-"
    if use and use.get("serial") is not None:
        vf_text += f" serial {use['serial']}, data path {use.get('data_path')}"
    chans = " ".join(f"{c['relid']}@{'?' if c['cpu'] is None else c['cpu']}"
                     + ("" if c["monitor_id"] is not None else "*") for c in d["channels"])
    return (iface, mac, vf_text, d["state_name"] or "-", "-" if d["numa_node"] is None else str(d["numa_node"]),
            f"{d['channel_count']}: {chans}" if chans else "0", d["driver"] or "-",
            d["uio"]["name"] if d["uio"] else "-", d["class"], d["device_id"])


@click.command()
@click.argument("device")
@click.option("--force", is_flag=True, help="Bind even if the NIC carries the default route or this SSH session.")
@click.option("--timeout", type=float, default=5.0, show_default=True, help="Seconds to wait for the kernel.")
@pass_app
def bind(app: App, device: str, force: bool, timeout: float) -> None:
    """Bind a synthetic NIC (instance GUID or interface name) to uio_hv_generic."""
    from hvuio.device.bind import bind_device

    result = bind_device(app.sysroot, device, force=force, timeout=timeout)
    click.echo(result.message)


@click.command()
@click.argument("device")
@click.option("--timeout", type=float, default=5.0, show_default=True, help="Seconds to wait for the kernel.")
@pass_app
def unbind(app: App, device: str, timeout: float) -> None:
    """Give a NIC back to its previous driver (hv_netvsc unless the journal says otherwise)."""
    from hvuio.device.bind import unbind_device

    result = unbind_device(app.sysroot, device, timeout=timeout)
    if result.changed:
        names = f" (interface {', '.join(result.netdevs)})" if result.netdevs else ""
        click.echo(f"{result.guid} restored to {result.driver}{names}")
    else:
        click.echo(f"{result.guid} is not bound to uio_hv_generic (driver: {result.driver}); nothing to do")


@click.command(epilog="Exit status: 0 when no check failed (warnings allowed); 9 when a check failed "
                      "(this machine cannot run hvuio as it is); the other codes as for every command "
                      "(hvuio --help).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (the same findings, and the exit status).")
@pass_app
def doctor(app: App, as_json: bool) -> None:
    """Check that this machine can run hvuio, which TX path and how many queues a NIC can get,
    whether the pumps batch their tap I/O through an io_uring, and what to do next.

    With --sysroot the kernel version, CPUs and hypervisor facts come from the tree where it has
    them; a finding says when a fact came from the running machine instead."""
    from hvuio.device import doctor as doc
    from hvuio.device.platform import guest_memory_report

    tx = guest_memory_report(app.sysroot)
    tap = doc.tap_io_report()
    findings, step = doc.diagnose(app.sysroot, tx, tap)
    if as_json:
        click.echo(json.dumps(doc.as_json(findings, step, tx, tap), indent=2))
    else:
        marks = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL", "info": "info"}
        for f in findings:
            click.echo(f"[{marks.get(f.status, f.status)}] {f.message}")
            if f.hint:
                click.echo(f"       hint: {f.hint}")
        click.echo(f"Next: {step}")
    if doc.failed(findings):
        click.get_current_context().exit(doc.EXIT_FAILED)
