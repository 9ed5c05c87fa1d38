"""CLI commands about VMBus devices: list, bind, unbind, doctor.

Thin: parse options, call hvuio.device, echo. The group adds these commands (hvuio/cli/__init__.py);
this module takes the App from hvuio/cli/app.py. Errors are HvuioError subclasses rendered by
`hvuio.cli.main`. Works the same on a real machine and on the emulator's tree (--sysroot).
"""

from __future__ import annotations

import json

import click

from hvuio.cli.app import App, pass_app


@click.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_app
def list_devices(app: App, as_json: bool) -> None:
    """List VMBus devices: class, driver, interface, MAC, UIO node and maps, channels."""
    from hvuio.device.sysfs import VmbusDevice, sys_path

    devices = [d.to_dict() for d in VmbusDevice.all(app.sysroot)]
    if as_json:
        click.echo(json.dumps({"devices": devices}, indent=2))
        return
    if not devices:
        bus = sys_path(app.sysroot, "/sys/bus/vmbus/devices")
        click.echo(f"No VMBus devices under {bus} (not a Hyper-V guest? try 'hvuio doctor').")
        return
    header = f"{'DEVICE':36}  {'RELID':>5}  {'CLASS':10}  {'DRIVER':16}  {'IFACE':10}  {'MAC':17}  {'UIO':6}  CHANNELS"
    click.echo(header)
    for d in devices:
        net = d["netdevs"][0] if d["netdevs"] else {"name": "-", "mac": "-"}
        uio = d["uio"]["name"] if d["uio"] else "-"
        chans = ",".join(
            f"{c['relid']}" + ("" if c["monitor_id"] is not None else "*") for c in d["channels"]
        )
        click.echo(f"{d['device_id']:36}  {d['relid']:>5}  {d['class']:10}  {d['driver'] or '-':16}  "
                   f"{net['name']:10}  {net['mac'] or '-':17}  {uio:6}  {chans}")
        if d["uio"] and app.verbose:
            for m in d["uio"]["maps"]:
                click.echo(f"{'':40}map{m['index']} {m['name']:14} size {m['size']:#x}")
    click.echo("(* = channel not monitored: signalled with write(1))")


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
@click.pass_context
def doctor(ctx: click.Context, as_json: bool) -> None:
    """Check that this machine can run hvuio, which TX path and how many queues a NIC can get,
    and what to do next.

    With --sysroot the kernel version, CPUs and hypervisor facts come from the tree where it has
    them; a finding says when a fact came from the running machine instead."""
    from hvuio.device import doctor as doc
    from hvuio.device.platform import guest_memory_report

    app: App = ctx.find_object(App)
    tx = guest_memory_report(app.sysroot)
    findings, step = doc.diagnose(app.sysroot, tx)
    if as_json:
        click.echo(json.dumps(doc.as_json(findings, step, tx), indent=2))
    else:
        marks = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL", "info": "info"}
        for f in findings:
            click.echo(f"[{marks.get(f.status, f.status)}] {f.message}")
            if f.hint:
                click.echo(f"       hint: {f.hint}")
        click.echo(f"Next: {step}")
    if doc.failed(findings):
        ctx.exit(doc.EXIT_FAILED)
