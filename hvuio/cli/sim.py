"""`hvuio sim`: run the emulated guest kernel (VMBus + uio_hv_generic) under a sysroot.

`hvuio --sysroot DIR sim start --kernel 6.17 --nics 2` builds the tree (with `--guest-memory MIB`
of guest-physical memory, default 64, 0 = none: hvuio.sim.kernel.memory) and runs the kernel
emulation and the emulated host (hvuio.sim.vsp; --no-host for the kernel alone, --pcap-out /
--pcap-in / --wire for the network behind it, --vf for a VF per NIC; --vlan-oob for 802.1Q
tags out of band, a trunk-mode port; --guest-memory-mode proc for a foreign guest process with
IOVA = VA; --rx-layout for where received frames sit in a section, docs/EMULATOR.md) daemonised (it holds a lock on
`DIR/run/hvuio-sim/kernel.pid` while it runs; log `DIR/sim-kernel.log`), or in the foreground
with --foreground until SIGINT/SIGTERM; with --wire it prints the host's namespace and addresses.
`hvuio --sysroot DIR sim exec -- CMD` runs an unchanged driver against the tree (hvuio.sim.exec).
`hvuio --sysroot DIR sim stop` stops the lock's holder; the kernel removes its tree on the way
out, and `sim stop` removes what a killed daemon left (and says so). A
sysroot is created with mode 0700, and an existing one must be a directory that only root or the
caller can write (hvuio.safefs). The sysroot is the group's global --sysroot (or HVUIO_SYSROOT),
the same one every other command works against (`hvuio --sysroot DIR list`); the `sim` commands
refuse `/`. `hvuio sim status|link|indicate|rescind|reoffer|stall|vf add|remove` talk to the running host through its control socket
(hvuio.sim.vsp.control).

What lives here: the `sim` click group (added to the group by hvuio/cli/__init__.py), its option
checks and the lines it prints. Thin: starting, running and stopping the daemon is
hvuio/sim/daemon.py's; the emulation itself is hvuio.sim.kernel and hvuio.sim.vsp.
"""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import click

from hvuio.cli.app import App, pass_app
from hvuio.errors import UsageError
from hvuio.safefs import check_dir


def _root(app: App) -> Path:
    """The emulator's sysroot as given (never resolved: a symlinked sysroot is refused, not
    followed), checked like sshd's StrictModes when it exists (hvuio.safefs)."""
    root = Path(os.path.abspath(app.sysroot))
    if root == Path("/"):
        raise UsageError("the emulator needs its own --sysroot directory, not /",
                         "Pass e.g. --sysroot /run/hvsim (it is created, mode 0700, if missing).")
    if os.path.lexists(root):
        check_dir(root)
    return root


@click.group()
def sim() -> None:
    """Run the emulated Hyper-V guest kernel (sysfs tree, /dev/uioN) under a sysroot."""


@sim.command("start")
@click.option("--kernel", default="6.17", show_default=True, help="Kernel profile to emulate.")
@click.option("--nics", type=click.IntRange(0, 64), default=1, show_default=True,
              help="Number of synthetic NICs the emulated VM has (0 to 64).")
@click.option("--guest-memory", "guest_memory_mib", type=int, default=64, show_default=True, metavar="MIB",
              help="Guest-physical memory the guest may take for GPA-direct sends, in MiB (a multiple "
                   "of 2; 0 = none, like a VM without huge pages).")
@click.option("--foreground", is_flag=True, help="Run in this process until interrupted.")
@click.option("--no-host", is_flag=True, help="Kernel only: no emulated Hyper-V host (VSP) answers the NICs.")
@click.option("--pcap-out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the frames the guest sends to this pcap file.")
@click.option("--pcap-in", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Deliver the frames of this pcap file to the guest once its packet filter is set.")
@click.option("--wire", is_flag=True,
              help="Connect the host to a tap with 198.18.0.1/24 in a new network namespace (root).")
@click.option("--guest-memory-mode", type=click.Choice(["file", "proc"]), default="file", show_default=True,
              help="How the host reads GPA-direct pages: 'file', the emulated VM's guest memory; 'proc', an "
                   "emulator convenience for a foreign guest process with IOVA = VA (e.g. DPDK netvsc): page "
                   "numbers are its virtual addresses, read from /proc/<pid>/mem.")
@click.option("--vf", is_flag=True,
              help="Accelerated networking (with --wire): every NIC gets a VF, a veth whose guest end hvvf<N> "
                   "carries the NIC's MAC here and, in the emulated tree, a PCI pass-through device naming that "
                   "veth as its VF ('hvuio list' pairs them); the host advertises it to a guest that offers "
                   "SR-IOV and sends its frames there once the guest switches the data path.")
@click.option("--vlan-oob", is_flag=True,
              help="Deliver the network's 802.1Q tags to the guest out of band (per-packet info), as a "
                   "trunk-mode Hyper-V port does.")
@click.option("--rx-layout", type=click.Choice(["openvmm", "compact"]), default="openvmm", show_default=True,
              help="Where the host puts a received frame in its receive section: 'openvmm', as OpenVMM's netvsp "
                   "(the range is the whole section, the frame at byte 256, checksum info always); 'compact', "
                   "the frame right after its RNDIS header, the range as long as the message.")
@pass_app
def sim_start(app: App, kernel: str, nics: int, guest_memory_mib: int, foreground: bool, no_host: bool,
              pcap_out: Path | None, pcap_in: Path | None, wire: bool, guest_memory_mode: str,
              vlan_oob: bool, rx_layout: str, vf: bool) -> None:
    """Build the tree and start the emulated kernel and host."""
    if wire and (pcap_out is not None or pcap_in is not None):
        raise UsageError("--wire and --pcap-in/--pcap-out exclude each other", "Pick one network.")
    if vf and (not wire or no_host):
        raise UsageError("--vf needs the host's network namespace", "Add --wire (and drop --no-host).")
    from hvuio.sim import daemon
    from hvuio.sim.kernel.memory import MIB, check_size_mib

    refused = check_size_mib(guest_memory_mib)
    if refused is not None:
        raise UsageError(f"--guest-memory: {refused}",
                         "Pass a multiple of 2 MiB, e.g. --guest-memory 64, or 0 for a VM without huge pages.")
    guest_memory = guest_memory_mib * MIB
    from hvuio.sim.kernel.profiles import PROFILES

    if no_host and vlan_oob:
        raise UsageError("--vlan-oob is a host option and --no-host starts no host", "Drop one of them.")
    host = None if no_host else daemon.NetworkChoice(pcap_out=pcap_out, pcap_in=pcap_in, wire=wire,
                                                     guest_memory_mode=guest_memory_mode, rx_layout=rx_layout,
                                                     vlan_oob=vlan_oob, vf=vf)
    if kernel not in PROFILES:
        raise UsageError(f"unknown kernel profile {kernel!r}", f"Known profiles: {', '.join(PROFILES)}.")
    root = _root(app)
    daemon.prepare_sysroot(root)
    if foreground:
        daemon.run(root, kernel, nics, host=host, guest_memory=guest_memory)
        return
    pid = daemon.start_daemon(root, kernel, nics, host=host, guest_memory=guest_memory)
    click.echo(f"sim kernel {kernel} started (pid {pid}) under {root}; use: hvuio --sysroot {shlex.quote(str(root))} list")
    name = daemon.recorded_netns(root) if wire else None
    if name is not None:
        click.echo(daemon.describe_wire(name))


@sim.command("exec", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@pass_app
def sim_exec(app: App, command: tuple[str, ...]) -> None:
    """Run COMMAND (after --) with the emulated /sys/bus/vmbus, /sys/class/uio and /dev/uioN.

    COMMAND replaces this process in a private mount namespace (root needed): any unchanged
    uio_hv_generic driver (DPDK's netvsc PMD, hvuio up without --sysroot) runs against the
    emulator; the exit status is COMMAND's."""
    from hvuio.sim.exec import exec_in_tree

    exec_in_tree(_root(app), list(command))


@sim.command("stop")
@click.option("--timeout", type=float, default=10.0, show_default=True,
              help="Seconds to wait for the emulator to exit before giving up.")
@pass_app
def sim_stop(app: App, timeout: float) -> None:
    """Stop the emulated kernel started with 'sim start'; its tree is removed.

    Only the daemon that holds the sysroot's pid-file lock is signalled (never a pid read from a
    file); when that daemon died, what it left (the tree, its network namespace) is removed."""
    from hvuio.sim.daemon import DaemonGone, remove_leftovers, sim_command, stop_daemon

    root = _root(app)
    try:
        pid = stop_daemon(root, timeout)
    except DaemonGone as gone:
        removed = remove_leftovers(root)
        if not removed:
            raise UsageError(f"no sim kernel runs under {root}",
                             f"Start one with '{sim_command(root, 'start')}'.") from None
        click.echo(f"sim kernel under {root} had died ({gone}); removed what it left: {', '.join(removed)}")
        return
    removed = remove_leftovers(root)   # a daemon being killed as we signalled it cleans up nothing
    if removed:
        click.echo(f"sim kernel (pid {pid}) ended without removing its tree (killed?); removed what it left: "
                   f"{', '.join(removed)}")
        return
    click.echo(f"sim kernel (pid {pid}) stopped; tree under {root} removed")


@sim.command("link")
@click.argument("device")
@click.argument("state", type=click.Choice(["up", "down"]))
@pass_app
def sim_link(app: App, device: str, state: str) -> None:
    """Scripted link change of a simulated NIC (GUID or interface name): an RNDIS indication."""
    from hvuio.sim.vsp.control import request

    request(_root(app), {"cmd": "link", "device": device, "up": state == "up"})
    click.echo(f"{device}: link {state}")


@sim.command("indicate")
@click.argument("device")
@click.argument("status", type=click.Choice(["network-change", "media-connect", "link-speed"]))
@click.option("--mbps", type=click.IntRange(0, 429_496), default=None,
              help="The new link speed in Mbit/s (link-speed only).")
@pass_app
def sim_indicate(app: App, device: str, status: str, mbps: int | None) -> None:
    """Scripted RNDIS indication to an open simulated NIC: a network change, a repeated media
    connect while the link is up (the guest notifies its peers), or a link speed change (--mbps)."""
    from hvuio.sim.vsp.control import request

    if (status == "link-speed") != (mbps is not None):
        raise UsageError("--mbps goes with link-speed, and link-speed needs it",
                         "Run e.g. 'hvuio sim indicate DEVICE link-speed --mbps 1000'.")
    req: dict[str, object] = {"cmd": "indicate", "device": device, "status": status.replace("-", "_")}
    if mbps is not None:
        req["mbps"] = mbps
    request(_root(app), req)
    click.echo(f"{device}: indicated {status}" + ("" if mbps is None else f" {mbps} Mbit/s"))


@sim.command("rescind")
@click.argument("device")
@pass_app
def sim_rescind(app: App, device: str) -> None:
    """Host rescind of a simulated NIC: the guest sees EIO/EOF, the device disappears."""
    from hvuio.sim.vsp.control import request

    request(_root(app), {"cmd": "rescind", "device": device})
    click.echo(f"{device}: rescinded")


@sim.command("reoffer")
@click.argument("device")
@pass_app
def sim_reoffer(app: App, device: str) -> None:
    """Offer a rescinded NIC again: a new VMBus device (new relid), same GUID and MAC, bound to
    its default driver like any new offer (the guest binds it again)."""
    from hvuio.sim.vsp.control import request

    reply = request(_root(app), {"cmd": "reoffer", "device": device})
    click.echo(f"{device}: re-offered as {reply['guid']} relid {reply['relid']} mac {reply['mac']}")


@sim.command("stall")
@click.argument("device")
@click.option("--control", is_flag=True,
              help="Leave only its RNDIS control requests unanswered; data is still served.")
@pass_app
def sim_stall(app: App, device: str, control: bool) -> None:
    """The host stops serving an open NIC without telling the guest (as a real host's channel
    worker ends on a protocol error); only closing and re-opening the device starts afresh.
    With --control it only stops answering control requests (an emulator fault injection)."""
    from hvuio.sim.vsp.control import request

    request(_root(app), {"cmd": "stall", "device": device, "control": control})
    if control:
        click.echo(f"{device}: host stopped answering control requests (data is still served)")
    else:
        click.echo(f"{device}: host stopped serving the channel (the guest is not told)")


@sim.group("vf")
def sim_vf() -> None:
    """Accelerated networking of a NIC started with 'sim start --wire --vf': take its VF away, bring it back."""


@sim_vf.command("remove")
@click.argument("device")
@pass_app
def sim_vf_remove(app: App, device: str) -> None:
    """The host loses DEVICE's VF: the guest hears 'data path synthetic' (if it had switched) and 'VF
    removed' (as OpenVMM orders them), then the PCI pass-through device and the VF's veth go."""
    from hvuio.sim.vsp.control import request

    request(_root(app), {"cmd": "vf", "device": device, "op": "remove"})
    click.echo(f"{device}: VF removed")


@sim_vf.command("add")
@click.argument("device")
@pass_app
def sim_vf_add(app: App, device: str) -> None:
    """The host gets DEVICE's VF back: a new veth with the NIC's MAC and its PCI pass-through device,
    then the association."""
    from hvuio.sim.vsp.control import request

    request(_root(app), {"cmd": "vf", "device": device, "op": "add"})
    click.echo(f"{device}: VF added")


@sim.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON reply.")
@pass_app
def sim_status(app: App, as_json: bool) -> None:
    """Per-NIC view of the emulated host: open, link, NVSP state, counters, fault."""
    from hvuio.sim.vsp.control import request

    devices = request(_root(app), {"cmd": "status"})["devices"]
    if as_json:
        click.echo(json.dumps(devices, indent=1, sort_keys=True))
        return
    for guid, d in devices.items():
        state = d.get("nvsp_state", "closed") if d["open"] else "closed"
        click.echo(f"{d['ifname'] or guid} {guid} {d['uio'] or '-'} {state} link {'up' if d['link_up'] else 'down'}"
                   + (f" FAULT: {d['fault']}" if d["fault"] else ""))
        rss = d.get("rss")
        if rss is not None:
            click.echo(f"  rss {'on' if rss['enabled'] else 'off'}"
                       + (f" hash {','.join(rss['hash_types']) or '-'} table {rss['table_size']}" if rss["enabled"] else "")
                       + f" queues {rss['queues']}")
        counters = d["counters"]
        click.echo("  " + " ".join(f"{k}={v}" for k, v in counters.items() if v))
