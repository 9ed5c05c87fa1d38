"""`hvuio demo`: the whole stack on the emulator in one command (root), then everything removed.

What lives here: the click command (added to the group by hvuio/cli/__init__.py) and the
rendering of hvuio.demo.run_demo's result (the negotiated parameters block of
hvuio/cli/render.py, ping summary, each TCP stream's throughput and sha256 check, each queue's
packets and bytes, data-path and host counters)
as text or JSON, and the --keep mode that leaves the stack up until Ctrl-C, printing the
commands to poke at it. The work is hvuio/demo.py's (imported inside the command so `hvuio --help`
stays cheap).

What must not live here: building namespaces, the emulator or traffic (hvuio/demo.py).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import click

from hvuio.cli.app import App, pass_app
from hvuio.cli.render import render_info


def _counters_block(title: str, counters: dict[str, Any]) -> list[str]:
    shown = {k: v for k, v in sorted(counters.items()) if isinstance(v, int) and v}
    lines = [f"{title}:"]
    if not shown:
        return [f"{title}: all zero"]
    width = max(len(k) for k in shown)
    lines += [f"  {k:<{width}}  {v}" for k, v in shown.items()]
    return lines


def _queue_lines(stats: dict[str, Any]) -> list[str]:
    """One line per queue: its packets and bytes both ways (the `hvuio stats` names)."""
    lines = []
    k = 0
    while f"tx_queue_{k}_packets" in stats:
        lines.append(f"Queue {k}: tx {stats[f'tx_queue_{k}_packets']} packets / {stats[f'tx_queue_{k}_bytes']} bytes, "
                     f"rx {stats[f'rx_queue_{k}_packets']} packets / {stats[f'rx_queue_{k}_bytes']} bytes")
        k += 1
    return lines


def step_line(step: dict[str, Any], as_json: bool) -> str:
    """The line of one lifecycle event (hvuio/demo_lifecycle.py's Step) as it ends."""
    if as_json:
        return json.dumps({"lifecycle": step}, sort_keys=True)
    if not step["ok"]:
        return f"FAIL {step['event']:<15} {step['what']}: {step['error']}"
    tcp = step["tcp"]
    return (f"ok   {step['event']:<15} {step['what']}: taken in {step['taken_s']:.1f} s, ping again after "
            f"{step['recovery_s']:.1f} s, the TCP connection echoed {tcp['bytes']} bytes exactly, same tap and addresses")


def render(result: dict[str, Any]) -> str:
    """The human-readable report of one demo run."""
    out = [f"hvuio demo: emulated kernel {result['kernel']}, guest tap {result['tap']} in "
           f"{result['guest_netns']}, host network {result['host_ifname']} in {result['host_netns']}", "",
           "Negotiated (hvuio up):", render_info(result["nic"]), ""]
    p = result["ping"]
    out.append(f"Ping {p.get('sent', '?')} sent, {p.get('received', '?')} received; {p.get('summary', 'no rtt summary')}")
    if "ping_full" in result:
        f = result["ping_full"]
        out.append(f"Ping {f.get('sent', '?')} sent, {f.get('received', '?')} received with {f.get('payload')}-byte "
                   f"payloads (the full MTU, don't fragment); {f.get('summary', 'no rtt summary')}")
    streams = result.get("tcp_streams") or [result["tcp"]]
    for k, t in enumerate(streams):
        exact = "byte-exact (sha256 match)" if t["exact"] else "MISMATCH"
        name = "TCP " if len(streams) == 1 else f"TCP stream {k} (port {t.get('port')})"
        out.append(f"{name} {t['received']['bytes']} bytes in {t['received']['seconds']:.2f} s = "
                   f"{t['mbit_s']:.1f} Mbit/s, {exact}, sha256 {t['received']['sha256'][:16]}…")
    if len(streams) > 1:
        out.append(f"TCP  {len(streams)} streams in parallel: {result.get('tcp_mbit_s', 0.0):.1f} Mbit/s together")
    out += _queue_lines(result.get("stats", {}))
    out.append("")
    out += _counters_block("Data path counters (hvuio up)", result.get("datapath_counters", {}))
    out += _counters_block("Emulated host counters", result.get("host_counters", {}))
    out += _counters_block("Emulated host NVSP counters", result.get("host_nvsp_counters", {}))
    out += _counters_block("Host network counters", result.get("host_network_counters", {}))
    if "trace" in result:
        tr = result["trace"]
        capped = tr.get("trace_frames_capped", 0) + tr.get("trace_control_capped", 0)
        out.append(f"Trace {tr['file']}: {tr.get('trace_frames', 0)} frames, {tr.get('trace_control', 0)} control "
                   f"messages, {tr.get('trace_bytes', 0)} bytes" + (f", {capped} left out at the cap" if capped else "")
                   + f" ('hvuio trace {tr['file']}').")
    if "lifecycle" in result:
        held = sum(1 for step in result["lifecycle"] if step["ok"])
        out.append(f"Lifecycle: {held} of {len(result['lifecycle'])} events held (lines above).")
    out.append("Cleaned up: namespaces, taps, processes and the sysroot are gone.")
    return "\n".join(out)


def _wait_for_ctrl_c(stack: Any) -> None:
    from hvuio.demo import GUEST_IP, HOST_IP

    click.echo(f"""
Left running (--keep). Try, in another shell:
  ip netns exec {stack.guest_ns} ping {HOST_IP}            # guest tap -> emulator -> host network
  ip netns exec {stack.host_ns} ping {GUEST_IP}
  ip -n {stack.guest_ns} -s link show {stack.tap}            # the guest tap and its counters
  hvuio --sysroot {stack.sysroot} status                      # data-path counters of the running 'hvuio up'
  hvuio --sysroot {stack.sysroot} list                        # the emulated VMBus device (bound to uio_hv_generic)
Press Ctrl-C here to stop and clean everything up.""")
    sys.stdout.flush()  # a pipe is block-buffered: whoever watches must see the commands now
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if os.getpid() != _MAIN_PID:  # a forked pyroute2 helper (see _raise_interrupt)
            os._exit(128 + signum)
        stop.set()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stop.wait(0.5):
            if stack.up_proc is not None and stack.up_proc.poll() is not None:
                click.echo("hvuio up exited; cleaning up.")
                break
    finally:
        for s, h in old.items():
            signal.signal(s, h)


_MAIN_PID = os.getpid()


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    # pyroute2 forks (without exec) to work inside a namespace and stops those children with
    # SIGTERM: a child that inherited this handler must just exit, not unwind our stack (which
    # would run the demo's cleanup in the child and delete the namespaces under the parent).
    if os.getpid() != _MAIN_PID:
        os._exit(128 + signum)
    raise KeyboardInterrupt(f"signal {signum}")


@click.command()
@click.option("--kernel", default="6.17", show_default=True, help="Emulated kernel profile (see 'hvuio sim start').")
@click.option("--mtu", type=int, default=1500, show_default=True,
              help="MTU of the guest NIC and the host network: 68 up to 9202 (the emulated host's largest "
                   "frame), with --no-gpa up to the send section size - 58.")
@click.option("--tcp-mib", type=click.IntRange(1, 4096), default=32, show_default=True,
              help="MiB sent through the TCP transfer (through each stream with --queues).")
@click.option("--keep", is_flag=True, help="Leave the stack running after the checks until Ctrl-C.")
@click.option("--queues", type=click.IntRange(1, 64), default=2, show_default=True,
              help="Queues (channels) 'hvuio up' asks for; the TCP transfer runs as that many parallel "
                   "streams, each steered by the host's RSS to its own queue.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON document (with --lifecycle, "
                                                       "each event's line before it).")
@click.option("--lifecycle", is_flag=True,
              help="After the checks, put the NIC through what a host does to it (MTU change from the tap, "
                   "network change, link flap, VF removed and returned, rescind and re-offer, a silently "
                   "stopped channel; 'hvuio up --persist'), checking ping and a TCP connection opened "
                   "before the first event after each; one line per event.")
@click.option("--gpa/--no-gpa", default=True, show_default=True,
              help="Let 'hvuio up' send by guest-physical address from the emulator's guest memory; "
                   "--no-gpa: the send buffer only.")
@click.option("--trace", "trace_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              metavar="FILE", help="Let 'hvuio up' write a pcapng trace of the frames and control messages "
                                   "('hvuio trace FILE' decodes it; tcpdump -r reads the frames).")
@click.option("--trace-max-mb", type=click.IntRange(1, 4096), default=64, show_default=True, metavar="MB",
              help="Cap of the trace file: once reached, nothing more is written (counted, no rotation).")
@pass_app
def demo(app: App, kernel: str, mtu: int, tcp_mib: int, keep: bool, as_json: bool, gpa: bool,
         trace_file: Path | None, trace_max_mb: int, queues: int, lifecycle: bool) -> None:
    """Run the emulator demo: namespaces, emulated NIC, bind, up, ping and TCP across, clean up (root)."""
    from hvuio.demo import max_guest_mtu, require_root, run_demo
    from hvuio.errors import UsageError
    from hvuio.sim.host.profile import ETH_HEADER_LEN, MAX_NDIS_MTU, SEND_SECTION_SIZE
    from hvuio.sim.kernel.profiles import PROFILES
    from hvuio.up import check_mtu

    if kernel not in PROFILES:
        raise UsageError(f"unknown kernel profile {kernel!r}", f"Known profiles: {', '.join(PROFILES)}.")
    check_mtu(mtu)
    host_limit = MAX_NDIS_MTU - ETH_HEADER_LEN
    if mtu > host_limit:
        raise UsageError(f"--mtu {mtu} is larger than the {host_limit} bytes the emulated host allows "
                         f"(frames up to {MAX_NDIS_MTU} bytes, as OpenVMM)", f"Use --mtu {host_limit} or less.")
    limit = max_guest_mtu(SEND_SECTION_SIZE)
    if not gpa and mtu > limit:
        raise UsageError(f"--mtu {mtu} is larger than the {limit} bytes a {SEND_SECTION_SIZE}-byte send section "
                         "can carry after the RNDIS and Ethernet headers (--no-gpa)",
                         f"Use --mtu {limit} or less, or leave GPA-direct on.")
    require_root()
    if not as_json:
        click.echo(f"Starting: namespaces, emulated kernel {kernel} + host, bind, 'hvuio up' (MTU {mtu})…")
    # SIGTERM and SIGINT unwind as KeyboardInterrupt, so the finally blocks remove everything
    global _MAIN_PID
    _MAIN_PID = os.getpid()
    old = signal.signal(signal.SIGTERM, _raise_interrupt)
    old_int = signal.signal(signal.SIGINT, _raise_interrupt)
    try:
        result = run_demo(kernel=kernel, mtu=mtu, tcp_bytes=tcp_mib * 1024 * 1024,
                          on_ready=_wait_for_ctrl_c if keep else None, gpa=gpa, trace=trace_file,
                          trace_max_mb=trace_max_mb, queues=queues, lifecycle=lifecycle,
                          on_step=lambda step: click.echo(step_line(step.to_dict(), as_json)))
    finally:
        signal.signal(signal.SIGTERM, old)
        signal.signal(signal.SIGINT, old_int)
    if as_json:
        click.echo(json.dumps(result, sort_keys=True))
    else:
        click.echo(render(result))
