#!/usr/bin/env python3
"""Soak: N minutes of mixed traffic through the emulator, then an accounting check.

The path is the one `hvuio demo` builds (hvuio.demo.DemoStack): guest tap netns <-> `hvuio up` <->
emulated host <-> host tap netns. For --minutes it runs, in rounds:
  * iperf3 TCP guest->host and host->guest (four streams, -R alternating), or the Python sender
    of bench_e2e.py when iperf3 is missing;
  * a UDP flood of 64-byte datagrams guest->host (iperf3 -u -b 0) — drops at a full tap or ring
    are expected and must be counted, never silent;
  * ping -i 0.01 all along;
  * with --flap SECONDS, the emulated host takes the link down and up again every SECONDS.
Every --sample seconds it records the resident memory, open fds and threads of `hvuio up` and of
this process (the emulated host). At the end, after the traffic has stopped and the queues have
drained, it checks:
  1. guest -> host: every RNDIS packet the guest sent reached the host as a frame
     (guest tx_packets == host frames_from_guest), and no send failed (tx_errors == 0);
  2. host -> guest: the guest took every receive range the host filled (frames_to_guest ==
     rx_ranges; a coalesced frame is one range per fragment), each ended written to the tap or
     counted as a drop (rx_ranges == rx_ranges_written + rx_range_drops), and the guest saw no
     malformed data (rx_bad_xfer == rx_bad_nvs == rx_bad_rndis == rx_rsc_drop == 0);
  3. nothing is left in flight: send sections and GPA slots in use, queued completions all 0;
  4. from a third into the run (every kind of traffic has run by then, so what is made once
     exists: touched buffers and maps, a netlink socket per thread that sets the tap's carrier) to
     the end, the fds and threads of both processes did not grow and resident memory grew by less
     than --rss-slack MiB; the start and the differences are printed;
  5. a byte-exact TCP transfer (--end-mib MiB, sha256 on both sides) after the soak.
Exit 0 when all hold, 1 otherwise; prints the counters and the trend. Needs root.
Run: sudo .venv/bin/python scripts/soak.py --minutes 10 [--flap 30]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_e2e import tcp  # noqa: E402

from hvuio.demo import GUEST_IP, HOST_IP, DemoStack, require_root, tcp_transfer  # noqa: E402
from hvuio.netdev import netns  # noqa: E402

GUEST_RX_DROPS = ("rx_oversize", "rx_tap_drop", "rx_bad_rndis", "rx_rsc_drop")
GUEST_RX_MALFORMED = ("rx_bad_xfer", "rx_bad_nvs", "rx_bad_rndis", "rx_rsc_drop")


def proc_sample(pid: int) -> dict[str, int]:
    """Resident KiB, open fds and threads of `pid`."""
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    return {"rss_kib": rss, "fds": len(os.listdir(f"/proc/{pid}/fd")),
            "threads": len(os.listdir(f"/proc/{pid}/task"))}


def steady_sample(pid: int, looks: int = 5) -> dict[str, int]:
    """proc_sample at rest: the fewest fds and threads of a few looks 0.2 s apart (a status file
    being rewritten holds one more fd for a moment; that is not a leak)."""
    seen = [proc_sample(pid)]
    for _ in range(looks - 1):
        time.sleep(0.2)
        seen.append(proc_sample(pid))
    return {"rss_kib": seen[-1]["rss_kib"], "fds": min(x["fds"] for x in seen),
            "threads": min(x["threads"] for x in seen)}


def open_fds(pid: int) -> list[str]:
    out = []
    for fd in sorted(os.listdir(f"/proc/{pid}/fd"), key=int):
        try:
            out.append(f"{fd} -> {os.readlink(f'/proc/{pid}/fd/{fd}')}")
        except OSError:
            pass
    return out


def udp_flood(src: str, dst: str, dst_ip: str, seconds: float) -> None:
    if shutil.which("iperf3") is None:
        return
    server = netns.popen(dst, ["iperf3", "-s", "-1", "-p", "5304"])
    time.sleep(0.3)
    try:
        netns.run(src, ["iperf3", "-c", dst_ip, "-p", "5304", "-u", "-l", "64", "-b", "0", "-t", str(seconds)],
                  timeout=seconds + 60, check=False)
    finally:
        try:
            server.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


class Pinger(threading.Thread):
    """ping -i 0.01 until stopped; counts requests and replies."""

    def __init__(self, ns: str, ip: str) -> None:
        super().__init__(daemon=True)
        self.proc = netns.popen(ns, ["ping", "-n", "-q", "-i", "0.01", ip])
        self.summary = ""

    def run(self) -> None:
        out, _ = self.proc.communicate()
        self.summary = next((line for line in out.splitlines() if "transmitted" in line), out.strip())

    def stop(self) -> str:
        self.proc.send_signal(2)  # SIGINT: ping prints its summary
        self.join(timeout=10)
        return self.summary


def settle(stack: DemoStack, seconds: float = 3.0) -> dict[str, int]:
    """The guest's counters once two status-file rewrites in a row agree (traffic drained)."""
    deadline = time.monotonic() + seconds + 10
    last: dict[str, int] = {}
    time.sleep(seconds)
    while time.monotonic() < deadline:
        now = stack.live_counters()
        if now and now == last:
            return now
        last = now
        time.sleep(0.6)
    return last


def check(guest: dict[str, int], host: dict[str, Any], inflight: dict[str, int]) -> list[tuple[str, bool, str]]:
    hc = host["counters"]
    out: list[tuple[str, bool, str]] = []
    out.append(("guest->host frames", guest.get("tx_packets", -1) == hc["frames_from_guest"],
                f"guest tx_packets {guest.get('tx_packets')} vs host frames_from_guest {hc['frames_from_guest']}"))
    out.append(("guest->host send failures", guest.get("tx_errors", 0) == 0, f"tx_errors {guest.get('tx_errors', 0)}"))
    # The host counts receive ranges (a coalesced frame is one range per fragment); the guest ends
    # each range it takes as written to the tap (with its whole frame) or as a counted drop.
    ranges, written, dropped = (guest.get(k, 0) for k in ("rx_ranges", "rx_ranges_written", "rx_range_drops"))
    out.append(("host->guest ranges taken", hc["frames_to_guest"] == ranges,
                f"host frames_to_guest {hc['frames_to_guest']} vs guest rx_ranges {ranges}"))
    out.append(("host->guest ranges accounted", ranges == written + dropped,
                f"rx_ranges {ranges} = written {written} + dropped {dropped} "
                f"({', '.join(f'{k} {guest.get(k, 0)}' for k in GUEST_RX_DROPS)})"))
    bad = {k: guest.get(k, 0) for k in GUEST_RX_MALFORMED}
    out.append(("host->guest malformed", not any(bad.values()), json.dumps(bad)))
    out.append(("nothing in flight", not any(inflight.values()), json.dumps(inflight)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--round", type=float, default=20.0, help="seconds of each traffic kind per round")
    ap.add_argument("--sample", type=float, default=10.0, help="seconds between resource samples")
    ap.add_argument("--flap", type=float, default=0.0, metavar="SECONDS", help="link down/up every SECONDS (0: never)")
    ap.add_argument("--rss-slack", type=float, default=16.0, metavar="MIB")
    ap.add_argument("--end-mib", type=int, default=64)
    ap.add_argument("--up-arg", action="append", default=[], metavar="ARG", help="extra `hvuio up` option")
    a = ap.parse_args()
    require_root()
    iperf = shutil.which("iperf3") is not None
    print(f"soak: {a.minutes:g} min, rounds of {a.round:g} s, traffic by {'iperf3' if iperf else 'Python'}, "
          f"flap {a.flap or 'off'}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, nproc {os.cpu_count()}",
          flush=True)
    samples: list[tuple[float, dict[str, int], dict[str, int]]] = []
    results: list[tuple[str, bool, str]] = []
    with DemoStack(up_args=tuple(a.up_arg)) as stack:
        up_pid = stack.up_pid
        assert up_pid is not None
        stop = threading.Event()

        def sampler() -> None:
            t0 = time.monotonic()
            while not stop.wait(a.sample):
                samples.append((time.monotonic() - t0, proc_sample(up_pid), proc_sample(os.getpid())))

        def flapper() -> None:
            while not stop.wait(a.flap):
                stack.env.host.set_link(stack.guid, False)
                stop.wait(1.0)
                stack.env.host.set_link(stack.guid, True)

        # warm-up, then the baseline: before this script's own threads and pipes exist, as at the end
        tcp(stack.guest_ns, stack.host_ns, HOST_IP, 3.0, iperf)
        first = (steady_sample(up_pid), steady_sample(os.getpid()))
        first_fds = (open_fds(up_pid), open_fds(os.getpid()))
        threads = [threading.Thread(target=sampler, daemon=True)]
        if a.flap:
            threads.append(threading.Thread(target=flapper, daemon=True))
        for t in threads:
            t.start()
        pinger = Pinger(stack.guest_ns, HOST_IP)
        pinger.start()
        end = time.monotonic() + a.minutes * 60
        rounds = 0
        while time.monotonic() < end:
            left = max(1.0, min(a.round, end - time.monotonic()))
            kind = rounds % 3
            if kind == 0:
                mbit = tcp(stack.guest_ns, stack.host_ns, HOST_IP, left, iperf)
                print(f"  round {rounds}: TCP guest->host {mbit:.0f} Mbit/s", flush=True)
            elif kind == 1:
                mbit = tcp(stack.host_ns, stack.guest_ns, GUEST_IP, left, iperf)
                print(f"  round {rounds}: TCP host->guest {mbit:.0f} Mbit/s", flush=True)
            else:
                udp_flood(stack.guest_ns, stack.host_ns, HOST_IP, left)
                print(f"  round {rounds}: UDP 64 B flood guest->host", flush=True)
            rounds += 1
        stop.set()
        ping_summary = pinger.stop()
        for t in threads:
            t.join(timeout=10)
        stack.env.host.set_link(stack.guid, True)
        guest = settle(stack)
        host = stack.host_status()
        inflight = {k: int(guest.get(k, 0)) for k in ("sections_in_use", "gpa_slots_in_use", "pending_completions")}
        results += check(guest, host, inflight)
        last = (steady_sample(up_pid), steady_sample(os.getpid()))
        for who, before, pid in (("hvuio up", first_fds[0], up_pid), ("emulator", first_fds[1], os.getpid())):
            now_fds = open_fds(pid)
            if len(now_fds) != len(before):
                print(f"{who} fds at the start: {before}\n{who} fds at the end: {now_fds}", flush=True)
        # the trend once every kind of traffic ran and every lazily made resource exists (buffers
        # and shared maps touched, a netlink socket per thread that sets the carrier): from a
        # third into the run to the end, nothing may grow (fds, threads) or grow much (memory)
        window = [x for x in samples if x[0] >= a.minutes * 20] or samples[-1:]
        for k, (who, f, l_) in enumerate((("hvuio up", first[0], last[0]), ("emulator", first[1], last[1]))):
            mid = window[0][1 + k] if window else f
            fds = min(x[1 + k]["fds"] for x in window) if window else f["fds"]
            threads = min(x[1 + k]["threads"] for x in window) if window else f["threads"]
            grew = (l_["rss_kib"] - mid["rss_kib"]) / 1024
            results.append((f"{who} resources", l_["fds"] <= fds and l_["threads"] <= threads and grew < a.rss_slack,
                            f"fds {f['fds']} (start) {fds} (fewest from a third in) {l_['fds']} (end), threads "
                            f"{f['threads']} {threads} {l_['threads']}, rss {f['rss_kib'] / 1024:.1f} "
                            f"{mid['rss_kib'] / 1024:.1f} {l_['rss_kib'] / 1024:.1f} MiB"))
        exact = tcp_transfer(stack.guest_ns, stack.host_ns, HOST_IP, a.end_mib << 20, seed=11)
        results.append(("end transfer byte-exact", bool(exact["exact"]),
                        f"{a.end_mib} MiB at {exact.get('mbit_s', 0):.0f} Mbit/s"))
    print(f"\nping: {ping_summary}")
    print("guest counters:", json.dumps({k: v for k, v in guest.items() if v}))
    print("host counters:", json.dumps({k: v for k, v in host["counters"].items() if v}))
    print("\ntrend (s: hvuio up rss MiB/fds/threads | emulator rss MiB/fds/threads):")
    for t, g, e in samples[:: max(1, len(samples) // 12)]:
        print(f"  {t:6.0f}: {g['rss_kib'] / 1024:6.1f} {g['fds']:4d} {g['threads']:3d} | "
              f"{e['rss_kib'] / 1024:6.1f} {e['fds']:4d} {e['threads']:3d}")
    print()
    for name, ok, detail in results:
        print(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}")
    sys.exit(0 if all(ok for _, ok, _ in results) else 1)


if __name__ == "__main__":
    main()
