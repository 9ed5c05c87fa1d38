#!/usr/bin/env python3
"""Multi-queue benchmark: veth, hvuio with 1 queue and hvuio with 2 queues, side by side in one run.

Three paths, measured in the same run with the same tools, group by group (TCP one stream, TCP
-P 4, UDP, ping: each group on veth, then 1 queue, then 2 queues, each hvuio stack started for it
and stopped after it, so no idle stack polls while another path is measured):
  (a) veth: two namespaces joined by a veth pair;
  (b) hvuio, `hvuio up --queues 1`, and (c) hvuio, `hvuio up --queues 2`: guest tap netns <-> `hvuio
      up` (one C pump per queue) <-> emulated host (its C pump, in this process) <-> host tap netns,
      built by hvuio.demo.DemoStack as `hvuio demo --queues N` builds it.

On each path (sender in the guest namespace for "g->h", in the host namespace for "h->g"):
  * TCP: iperf3, one stream and `-P 4` (four streams), both directions, --seconds each;
  * UDP 64 B: `iperf3 -u -l 64 -b 0`, datagrams *received* per second and the loss, both directions;
  * latency: `ping -i 0.01 -c PINGS` guest -> host, p50 and p99 of the per-reply times.
Then the table with each hvuio path against veth and the goals (TCP >= 60% of veth both ways,
UDP 64 B >= 50%, ping p50 <= 2x veth), and where the time goes on each hvuio path: during one more
`-P 4` TCP run each way and one UDP run, the CPU of every thread of the emulator (this process)
and of `hvuio up` (from /proc/<pid>/task/*/stat, as % of one core over the run), the whole
machine's CPU split (/proc/stat: user, system, softirq, idle; veth too), and with `perf` (when
`perf stat -e cpu-clock` works here) during one more `-P 4` guest->host run: the top threads of
the machine, the top symbols of the emulator and `hvuio up`, and per thread of theirs the share
of its samples in its poll loop and in copies.

Needs root and iperf3 (scripts/setup-machine.sh). One command prints everything:

    sudo .venv/bin/python scripts/bench_mq.py               # --seconds 5 --pings 200
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_e2e import VETH_GUEST, VETH_HOST, latency, udp64  # noqa: E402
from hvuio.demo import GUEST_IP, HOST_IP, DemoStack, require_root  # noqa: E402
from hvuio.netdev import netns  # noqa: E402

#: (column, what) of the table, in order
METRICS = (("tcp1_gh", "TCP 1 stream g->h Mbit/s"), ("tcp1_hg", "TCP 1 stream h->g Mbit/s"),
           ("tcp4_gh", "TCP -P 4 g->h Mbit/s"), ("tcp4_hg", "TCP -P 4 h->g Mbit/s"),
           ("udp_gh", "UDP 64 B g->h rcvd/s"), ("udp_hg", "UDP 64 B h->g rcvd/s"))
IPERF_PORT = "5303"


def tcp(src: str, dst: str, dst_ip: str, seconds: float, streams: int) -> float:
    """Mbit/s received in `dst` (iperf3, `streams` parallel streams)."""
    server = netns.popen(dst, ["iperf3", "-s", "-1", "-p", IPERF_PORT])
    time.sleep(0.3)  # iperf3 prints nothing useful before a client connects
    try:
        out = netns.run(src, ["iperf3", "-c", dst_ip, "-p", IPERF_PORT, "-t", str(seconds), "-P", str(streams),
                              "-J"], timeout=seconds + 60).stdout
    finally:
        server.communicate(timeout=30)
    return float(json.loads(out)["end"]["sum_received"]["bits_per_second"]) / 1e6


#: what is measured together on every path before the next group starts
PHASES = ("TCP one stream", "TCP -P 4", "UDP 64 B", "ping")


def measure(phase: str, name: str, guest: str, host: str, guest_ip: str, host_ip: str,
            a: argparse.Namespace) -> dict[str, Any]:
    """One group of measurements on one path."""
    print(f"[{name}] {phase} …", flush=True)
    r: dict[str, Any] = {}
    if phase.startswith("TCP"):
        streams = 1 if phase == "TCP one stream" else 4
        r[f"tcp{streams}_gh"] = tcp(guest, host, host_ip, a.seconds, streams)
        r[f"tcp{streams}_hg"] = tcp(host, guest, guest_ip, a.seconds, streams)
    elif phase == "UDP 64 B":
        r["udp_gh"], r["udp_gh_loss"] = udp64(guest, host, host_ip, a.seconds, True)
        r["udp_hg"], r["udp_hg_loss"] = udp64(host, guest, guest_ip, a.seconds, True)
    else:
        r["ping"] = latency(guest, host_ip, a.pings)
    return r


# ------------------------------------------------------------------------------------ where time goes

def _threads(pid: int) -> dict[int, tuple[str, float]]:
    """tid -> (name, utime + stime in seconds) of every thread of `pid`; names of this process's
    Python threads as Python knows them, else the kernel's comm."""
    names = {t.native_id: t.name for t in threading.enumerate()} if pid == os.getpid() else {}
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, tuple[str, float]] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            comm = (task / "comm").read_text().strip()
        except OSError:
            continue
        tid = int(task.name)
        out[tid] = (names.get(tid) or comm, (int(fields[11]) + int(fields[12])) / tick)
    return out


def _machine() -> list[int]:
    """/proc/stat's cpu line: user nice system idle iowait irq softirq steal (jiffies)."""
    return [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]


def name_own_threads() -> None:
    """Give this process's Python threads (the emulator's) their names in the kernel too, so perf
    and /proc show `hvuio-sim-vsp-u…` rather than `python` (at most 15 bytes are kept)."""
    for t in threading.enumerate():
        try:
            Path(f"/proc/self/task/{t.native_id}/comm").write_text(t.name[:15])
        except OSError:
            pass


def cpu_during(label: str, run: Callable[[], float], unit: str, pids: dict[str, int]) -> list[str]:
    """Run `run` (returns its rate) and say what every thread of each of `pids` (name -> pid: the
    emulator, `hvuio up`) used meanwhile, as % of one core, and how the machine's CPUs were spent."""
    before = {who: _threads(pid) for who, pid in pids.items()}
    m0 = _machine()
    t0 = time.monotonic()
    rate = run()
    wall = time.monotonic() - t0
    m1 = _machine()
    after = {who: _threads(pid) for who, pid in pids.items()}
    lines = [f"  {label}: {rate:,.0f} {unit} ({wall:.1f} s wall, tool start and stop included)"]
    for who in pids:
        used = {tid: (name, t - before[who].get(tid, (name, 0.0))[1]) for tid, (name, t) in after[who].items()}
        total = sum(t for _, t in used.values())
        top = sorted(used.items(), key=lambda kv: -kv[1][1])
        lines.append(f"    {who}: {100 * total / wall:.0f}% of one core; "
                     + ", ".join(f"{name}[{tid}] {100 * t / wall:.0f}%" for tid, (name, t) in top if t / wall >= 0.02))
    d = [b - a for a, b in zip(m0, m1)]
    busy = sum(d) or 1
    user, system, idle, softirq = d[0] + d[1], d[2] + d[5], d[3] + d[4], d[6]
    cores = os.cpu_count() or 1
    lines.append(f"    machine ({cores} CPUs): user {100 * user / busy:.0f}%, system {100 * system / busy:.0f}%, "
                 f"softirq {100 * softirq / busy:.0f}%, idle {100 * idle / busy:.0f}% "
                 f"(= {cores * (busy - idle) / busy:.2f} of {cores} cores busy; other jobs included)")
    return lines


def perf_works() -> bool:
    perf = shutil.which("perf")
    if perf is None:
        return False
    proc = subprocess.run([perf, "stat", "-e", "cpu-clock", "true"], capture_output=True, text=True, check=False)
    return proc.returncode == 0 and "not supported" not in proc.stderr


def perf_profile(run: Callable[[], float], seconds: float, pids: dict[str, int]) -> list[str]:
    """`perf record -a -e cpu-clock` during `run`: the share of every thread of the machine (other
    jobs included), then the top symbols of the emulator and `hvuio up` (`pids`: name -> pid)."""
    with tempfile.TemporaryDirectory(prefix="hvuio-bench-perf-") as tmp:
        data = str(Path(tmp) / "perf.data")
        rec = subprocess.Popen(["perf", "record", "-q", "-a", "-e", "cpu-clock", "-F", "999", "-o", data,
                                "--", "sleep", str(seconds)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        rate = run()
        rec.wait(timeout=seconds + 60)
        out: list[str] = [f"  ({rate:,.0f} Mbit/s meanwhile; " + ", ".join(f"{k} pid {v}" for k, v in pids.items())
                          + ")"]
        only = ",".join(str(p) for p in pids.values())
        for title, args, n in (("every thread of the machine", ["--sort", "pid"], 12),
                               ("symbols of the emulator and hvuio up", ["--pid", only, "--sort", "comm,dso,sym"], 25)):
            rep = subprocess.run(["perf", "report", "-i", data, "--stdio", "--percent-limit", "0.7", *args],
                                 capture_output=True, text=True, check=False)
            rows = [line for line in rep.stdout.splitlines() if line.strip() and not line.startswith("#")]
            out.append(f"  {title} (% of all samples):")
            out += [f"    {' '.join(line.split())}" for line in rows[:n]]
        rep = subprocess.run(["perf", "report", "-i", data, "--stdio", "--pid", only, "--sort", "comm,sym",
                              "--percent-limit", "0"], capture_output=True, text=True, check=False)
        out.append("  per thread of the emulator and hvuio up: its samples, those in its poll loop "
                   "(ppoll and what it calls), those copying:")
        out += [f"    {line}" for line in split_threads(rep.stdout)]
        return out


#: kernel and libc symbols of a ppoll() on the tap, the eventfds and the wake pipe (the pumps' poll
#: loop), and of copying bytes (user <-> kernel, memmove)
POLL_SYMBOLS = ("do_sys_poll", "tun_chr_poll", "eventfd_poll", "pipe_poll", "sock_poll", "fdget", "fput", "ppoll",
                "__x64_sys_ppoll", "set_user_sigmask", "poll_freewait", "__pollwait", "poll_select_set_timeout",
                "__vdso_clock_gettime", "restore_saved_sigmask", "poll_schedule_timeout")
COPY_PREFIXES = ("__memmove", "__memcpy", "memcpy", "_copy_to_iter", "_copy_from_iter", "_copy_from_user",
                 "_copy_to_user", "copy_user", "rep_movs", "copy_page")


def split_threads(report: str) -> list[str]:
    """`perf report --sort comm,sym` rows summed per thread name into (all, poll loop, copies)."""
    per: dict[str, list[float]] = {}
    for line in report.splitlines():
        parts = line.split()
        if len(parts) < 4 or not parts[0].endswith("%") or line.lstrip().startswith("#"):
            continue
        share, comm, sym = float(parts[0][:-1]), parts[1], parts[-1]
        acc = per.setdefault(comm, [0.0, 0.0, 0.0])
        acc[0] += share
        acc[1] += share if sym in POLL_SYMBOLS else 0.0
        acc[2] += share if sym.startswith(COPY_PREFIXES) else 0.0
    return [f"{comm}: {a:.1f}% of all samples; poll loop {p:.1f}% ({p / a:.0%} of its own), copies {c:.1f}% "
            f"({c / a:.0%})" for comm, (a, p, c) in sorted(per.items(), key=lambda kv: -kv[1][0]) if a >= 0.5]


# ------------------------------------------------------------------------------------------- report

def table(results: dict[str, dict[str, Any]]) -> list[str]:
    v = results["veth"]
    paths = [p for p in results if p != "veth"]
    head = f"{'metric':28} {'veth':>10}" + "".join(f" {p:>10} {'/veth':>7}" for p in paths)
    lines = [head, "-" * len(head)]
    for key, label in METRICS:
        lines.append(f"{label:28} {v[key]:10.0f}" + "".join(
            f" {results[p][key]:10.0f} {results[p][key] / v[key]:7.1%}" for p in paths))
    for key, label in (("udp_gh_loss", "UDP 64 B g->h loss %"), ("udp_hg_loss", "UDP 64 B h->g loss %")):
        lines.append(f"{label:28} {v[key]:10.1f}" + "".join(f" {results[p][key]:10.1f} {'':>7}" for p in paths))
    for q in ("p50", "p99", "avg"):
        lines.append(f"{'ping ' + q + ' ms':28} {v['ping'][q]:10.3f}" + "".join(
            f" {results[p]['ping'][q]:10.3f} {results[p]['ping'][q] / v['ping'][q]:6.1f}x" for p in paths))
    return lines


def goals(results: dict[str, dict[str, Any]]) -> list[str]:
    v = results["veth"]
    lines = []
    for p in (p for p in results if p != "veth"):
        x = results[p]
        checks = [(f"TCP {s} {d} >= 60% of veth", x[f"tcp{n}_{d}"] / v[f"tcp{n}_{d}"], 0.60)
                  for n, s in ((1, "1 stream"), (4, "-P 4")) for d in ("gh", "hg")]
        checks += [(f"UDP 64 B {d} >= 50% of veth", x[f"udp_{d}"] / v[f"udp_{d}"], 0.50) for d in ("gh", "hg")]
        parts = [f"{what}: {ratio:.0%} {'met' if ratio >= goal else 'MISSED'}" for what, ratio, goal in checks]
        p50 = x["ping"]["p50"] / v["ping"]["p50"]
        parts.append(f"ping p50 <= 2x veth: {p50:.1f}x {'met' if p50 <= 2 else 'MISSED'}")
        lines.append(f"  {p}: " + "; ".join(parts))
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5.0, help="duration of each TCP/UDP run (default 5)")
    ap.add_argument("--pings", type=int, default=200, help="echo requests per path (default 200)")
    ap.add_argument("--no-perf", action="store_true", help="skip the perf profile")
    ap.add_argument("--up-arg", action="append", default=[], metavar="ARG",
                    help="extra option for `hvuio up` (repeat per word), e.g. --up-arg=--busy-poll --up-arg=0")
    a = ap.parse_args()
    require_root()
    if shutil.which("iperf3") is None:
        raise SystemExit("bench_mq needs iperf3 (scripts/setup-machine.sh installs it)")
    cpu_model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), platform.processor())
    use_perf = not a.no_perf and perf_works()
    load_start = os.getloadavg()[0]
    print(f"bench_mq: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, nproc {os.cpu_count()}, "
          f"CPU {cpu_model!r}, kernel {platform.release()}, Python {platform.python_version()}, "
          f"load {os.getloadavg()[0]:.2f}; iperf3, {a.seconds:g} s per run; hvuio up options: "
          f"{' '.join(a.up_arg) or '(defaults)'}; perf: {'cpu-clock' if use_perf else 'not used'}", flush=True)
    results: dict[str, dict[str, Any]] = {"veth": {}, "hvuio 1q": {}, "hvuio 2q": {}}
    where: list[str] = []

    @contextlib.contextmanager
    def hvuio(queues: int) -> Iterator[DemoStack]:
        with DemoStack(queues=queues, up_args=tuple(a.up_arg)) as s:
            if s.nic.get("queues") != queues:
                raise SystemExit(f"hvuio up got {s.nic.get('queues')} queues, {queues} asked")
            yield s

    with netns.Cleanup() as c:
        g, h = c.namespace("bg", ipv6=False), c.namespace("bh", ipv6=False)
        netns.add_veth("hvu-vg", g, "hvu-vh", h)
        vg, vh = VETH_GUEST.split("/")[0], VETH_HOST.split("/")[0]
        netns.add_address(g, "hvu-vg", VETH_GUEST)
        netns.add_address(h, "hvu-vh", VETH_HOST)
        # each group on the three paths back to back (a path's stack only while it is measured),
        # so a ratio compares figures taken within a minute of each other on this shared machine
        for phase in PHASES:
            results["veth"].update(measure(phase, "veth", g, h, vg, vh, a))
            for queues in (1, 2):
                with hvuio(queues) as s:
                    results[f"hvuio {queues}q"].update(measure(phase, f"hvuio {queues}q", s.guest_ns, s.host_ns,
                                                               GUEST_IP, HOST_IP, a))
        print("[veth] where the time goes …", flush=True)
        where.append("veth:")
        where += cpu_during("TCP -P 4 g->h", lambda: tcp(g, h, vh, a.seconds, 4), "Mbit/s", {})
        where += cpu_during("UDP 64 B g->h", lambda: udp64(g, h, vh, a.seconds, True)[0], "datagrams/s rcvd", {})
    for queues in (1, 2):
        name = f"hvuio {queues}q"
        print(f"[{name}] where the time goes …", flush=True)
        with hvuio(queues) as s:
            assert s.up_pid is not None
            name_own_threads()
            pids = {"emulator": os.getpid(), "hvuio up": s.up_pid}
            where.append(f"{name}:")
            for label, src, dst, ip in (("TCP -P 4 g->h", s.guest_ns, s.host_ns, HOST_IP),
                                        ("TCP -P 4 h->g", s.host_ns, s.guest_ns, GUEST_IP)):
                where += cpu_during(label, lambda: tcp(src, dst, ip, a.seconds, 4), "Mbit/s", pids)
            where += cpu_during("UDP 64 B g->h", lambda: udp64(s.guest_ns, s.host_ns, HOST_IP, a.seconds, True)[0],
                                "datagrams/s rcvd", pids)
            if use_perf:
                where.append(f"  perf record -a -e cpu-clock during TCP -P 4 g->h ({name}):")
                where += perf_profile(lambda: tcp(s.guest_ns, s.host_ns, HOST_IP, a.seconds, 4), a.seconds, pids)
            counters = s.live_counters()
            where.append("  guest per-queue packets (tx/rx): " + ", ".join(
                f"q{k} {counters.get(f'tx_queue_{k}_packets', 0)}/{counters.get(f'rx_queue_{k}_packets', 0)}"
                for k in range(queues)))
    load_end = os.getloadavg()[0]
    print(f"\nload average (1 min): {load_start:.2f} at the start, {load_end:.2f} at the end (other jobs included)")
    print("\n".join(table(results)))
    print("\nGoals (each hvuio path against the veth of this run):")
    print("\n".join(goals(results)))
    print("\nWhere the time goes (% of one core over each run):")
    print("\n".join(where))


if __name__ == "__main__":
    main()
