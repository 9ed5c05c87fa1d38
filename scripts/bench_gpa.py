#!/usr/bin/env python3
"""TCP through the emulator at MTU 1500 and 9000, GPA-direct on and off, beside veth, in one run.

For each MTU: a veth pair between two namespaces at that MTU (the kernel's fastest link), then the
hvuio path built by hvuio.demo.DemoStack exactly as `hvuio demo` builds it, once with GPA-direct
(the default) and once with `hvuio up --no-gpa` (send buffer only). Measured: TCP guest->host and
host->guest (iperf3, one stream, --seconds; the Python sender/receiver of bench_e2e.py when iperf3
is missing), the tap MTU `hvuio up` chose, and the guest pump's tx_gpa / tx_sends counters, which
show how many RNDIS packets went GPA-direct and how many sends carried them.

Prints one table with the ratio hvuio/veth of the same MTU. Needs root. Run:
    sudo .venv/bin/python scripts/bench_gpa.py [--seconds 5] [--mtu 1500 --mtu 9000]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_e2e import VETH_GUEST, VETH_HOST, tcp  # noqa: E402

from hvuio.demo import GUEST_IP, HOST_IP, DemoStack, require_root  # noqa: E402
from hvuio.netdev import netns  # noqa: E402


def veth_run(mtu: int, seconds: float, iperf: bool) -> dict[str, Any]:
    with netns.Cleanup() as c:
        g, h = c.namespace("bg", ipv6=False), c.namespace("bh", ipv6=False)
        netns.add_veth("hvu-vg", g, "hvu-vh", h)
        for ns, dev in ((g, "hvu-vg"), (h, "hvu-vh")):
            netns.run(ns, ["ip", "link", "set", dev, "mtu", str(mtu)])
        netns.add_address(g, "hvu-vg", VETH_GUEST)
        netns.add_address(h, "hvu-vh", VETH_HOST)
        gi, hi = VETH_GUEST.split("/")[0], VETH_HOST.split("/")[0]
        return {"tcp_tx": tcp(g, h, hi, seconds, iperf), "tcp_rx": tcp(h, g, gi, seconds, iperf), "mtu": mtu}


def hvuio_run(mtu: int, gpa: bool, seconds: float, iperf: bool) -> dict[str, Any]:
    up_args = () if gpa else ("--no-gpa",)
    with DemoStack(mtu=mtu, up_args=up_args) as stack:
        tap_mtu = int(netns.run(stack.guest_ns, ["cat", f"/sys/class/net/{stack.tap}/mtu"]).stdout)
        r: dict[str, Any] = {"tcp_tx": tcp(stack.guest_ns, stack.host_ns, HOST_IP, seconds, iperf),
                             "tcp_rx": tcp(stack.host_ns, stack.guest_ns, GUEST_IP, seconds, iperf),
                             "mtu": tap_mtu}
        time.sleep(0.6)  # the status file is rewritten every 0.5 s
        counters = stack.live_counters()
        r["tx_gpa"] = counters.get("tx_gpa", 0)
        r["tx_packets"] = counters.get("tx_packets", 0)
        r["tx_sends"] = counters.get("tx_sends", 0)
        return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5.0, help="duration of each TCP run")
    ap.add_argument("--mtu", type=int, action="append", help="MTU to measure (repeat); default 1500 and 9000")
    ap.add_argument("--python", action="store_true", help="use the Python sender/receiver even if iperf3 exists")
    a = ap.parse_args()
    require_root()
    mtus = a.mtu or [1500, 9000]
    iperf = shutil.which("iperf3") is not None and not a.python
    cpu_model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), platform.processor())
    print(f"bench_gpa: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, nproc {os.cpu_count()}, "
          f"CPU {cpu_model!r}, kernel {platform.release()}, Python {platform.python_version()}; "
          f"traffic: {'iperf3 (one stream)' if iperf else 'Python sender/receiver'}; load {os.getloadavg()[0]:.2f}",
          flush=True)
    rows: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
    for mtu in mtus:
        print(f"[veth mtu {mtu}] …", flush=True)
        base = veth_run(mtu, a.seconds, iperf)
        for gpa in (True, False):
            label = f"hvuio mtu {mtu} {'gpa' if gpa else 'no-gpa'}"
            print(f"[{label}] …", flush=True)
            rows.append((label, base, hvuio_run(mtu, gpa, a.seconds, iperf)))
    print(f"\n{'path':26} {'tap mtu':>7} {'g->h Mbit/s':>12} {'of veth':>8} {'h->g Mbit/s':>12} {'of veth':>8} "
          f"{'tx_gpa':>9} {'pkts/send':>9}")
    for mtu in mtus:
        base = next(b for _, b, _ in rows if b["mtu"] == mtu)
        print(f"{'veth mtu ' + str(mtu):26} {mtu:7d} {base['tcp_tx']:12.1f} {'':>8} {base['tcp_rx']:12.1f}")
        for label, b, r in rows:
            if b is not base:
                continue
            per = r["tx_packets"] / r["tx_sends"] if r["tx_sends"] else 0.0
            print(f"{label:26} {r['mtu']:7d} {r['tcp_tx']:12.1f} {r['tcp_tx'] / b['tcp_tx']:8.1%} "
                  f"{r['tcp_rx']:12.1f} {r['tcp_rx'] / b['tcp_rx']:8.1%} {r['tx_gpa']:9d} {per:9.2f}")


if __name__ == "__main__":
    main()
