#!/usr/bin/env python3
"""End-to-end benchmark: a plain veth pair vs the hvuio path, side by side, in one run.

(a) veth: two namespaces joined by a veth pair (the kernel's fastest namespace-to-namespace link);
(b) hvuio: guest tap netns <-> `hvuio up` (C data path) <-> emulated host (its C data path) <-> host tap
    netns, built by hvuio.demo.DemoStack exactly as `hvuio demo` builds it.

Measured on both, sender in the "guest" namespace unless stated:
  * TCP throughput, guest -> host and host -> guest: iperf3 when installed (one stream, --time
    SECONDS), else a Python socket sender/receiver (says which);
  * small packets: UDP 64-byte datagrams received per second (iperf3 -u -l 64 -b 0 when installed,
    else a Python blaster), and the loss iperf3 reports;
  * latency: ping -i 0.01 -c 200 (avg, p50, p99 of the per-reply times).
Prints a table and the ratios hvuio/veth. Needs root. Run: sudo python scripts/bench_e2e.py
Optional: --profile-host SECONDS samples this process (the emulated host) with py-spy during an
extra TCP run and prints the top functions (needs `pip install py-spy`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hvuio.netdev import netns  # noqa: E402
from hvuio.demo import GUEST_IP, HOST_IP, DemoStack, require_root  # noqa: E402

VETH_GUEST, VETH_HOST = "198.18.1.2/24", "198.18.1.1/24"

_PY_TCP_SINK = r"""
import json, socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 5301)); s.listen(1); print("listening", flush=True)
c, _ = s.accept(); buf = bytearray(1 << 20); n = 0; t0 = None
while True:
    k = c.recv_into(buf)
    if t0 is None: t0 = time.monotonic()
    if not k: break
    n += k
print(json.dumps({"bytes": n, "seconds": time.monotonic() - t0}), flush=True)
"""
_PY_TCP_SOURCE = r"""
import socket, sys, time
c = socket.create_connection((sys.argv[1], 5301)); data = b"\xa5" * (1 << 20); end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end: c.sendall(data)
c.close()
"""
_PY_UDP_SINK = r"""
import json, socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 24)
s.bind((sys.argv[1], 5302)); s.settimeout(3.0); print("listening", flush=True); n = 0; t0 = t1 = None
while True:
    try: d = s.recv(2048)
    except socket.timeout: break
    t1 = time.monotonic(); t0 = t0 or t1; n += 1
print(json.dumps({"datagrams": n, "seconds": (t1 - t0) if t0 else 0.0}), flush=True)
"""
_PY_UDP_SOURCE = r"""
import json, socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.connect((sys.argv[1], 5302)); d = b"x" * 64; n = 0
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    for _ in range(256):
        try: s.send(d); n += 1
        except OSError: pass
print(json.dumps({"sent": n}), flush=True)
"""


def _json_tail(text: str) -> dict[str, Any]:
    return dict(json.loads([line for line in text.splitlines() if line.startswith("{")][-1]))


def _sink(ns: str, code: str, ip: str) -> subprocess.Popen[str]:
    proc = netns.popen(ns, netns.python_argv("-c", code, ip))
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if line != "listening":
        proc.kill()
        raise SystemExit(f"sink did not start: {line!r} {proc.communicate()[1]}")
    return proc


def _iperf3_server(ns: str) -> subprocess.Popen[str]:
    proc = netns.popen(ns, ["iperf3", "-s", "-1", "-p", "5303"])
    time.sleep(0.3)  # iperf3 prints nothing useful before a client connects
    return proc


def tcp(src: str, dst: str, dst_ip: str, seconds: float, iperf: bool) -> float:
    """Mbit/s received in `dst`."""
    if iperf:
        server = _iperf3_server(dst)
        try:
            out = netns.run(src, ["iperf3", "-c", dst_ip, "-p", "5303", "-t", str(seconds), "-J"],
                            timeout=seconds + 60).stdout
        finally:
            server.communicate(timeout=30)
        return float(json.loads(out)["end"]["sum_received"]["bits_per_second"]) / 1e6
    sink = _sink(dst, _PY_TCP_SINK, dst_ip)
    netns.run(src, netns.python_argv("-c", _PY_TCP_SOURCE, dst_ip, str(seconds)), timeout=seconds + 60)
    got = _json_tail(sink.communicate(timeout=60)[0])
    return float(got["bytes"]) * 8 / float(got["seconds"]) / 1e6


def udp64(src: str, dst: str, dst_ip: str, seconds: float, iperf: bool) -> tuple[float, float]:
    """(datagrams/s received, loss %) of 64-byte UDP datagrams sent as fast as possible."""
    if iperf:
        server = _iperf3_server(dst)
        try:
            out = netns.run(src, ["iperf3", "-c", dst_ip, "-p", "5303", "-u", "-l", "64", "-b", "0",
                                  "-t", str(seconds), "-J"], timeout=seconds + 60).stdout
        finally:
            server.communicate(timeout=30)
        s = json.loads(out)["end"]["sum"]
        received = s["packets"] - s["lost_packets"]
        return received / s["seconds"], float(s["lost_percent"])
    sink = _sink(dst, _PY_UDP_SINK, dst_ip)
    sent = _json_tail(netns.run(src, netns.python_argv("-c", _PY_UDP_SOURCE, dst_ip, str(seconds)),
                                timeout=seconds + 60).stdout)["sent"]
    got = _json_tail(sink.communicate(timeout=60)[0])
    rate = got["datagrams"] / seconds
    return rate, 100.0 * (1 - got["datagrams"] / sent) if sent else 0.0


def latency(src: str, dst_ip: str, count: int) -> dict[str, float]:
    out = netns.run(src, ["ping", "-n", "-i", "0.01", "-c", str(count), "-W", "2", dst_ip],
                    timeout=120, check=False).stdout
    times = sorted(float(t) for t in re.findall(r"time=([\d.]+) ms", out))
    if not times:
        return {"avg": float("nan"), "p50": float("nan"), "p99": float("nan"), "replies": 0}

    def p(q: float) -> float:
        return times[min(len(times) - 1, int(q * len(times)))]

    return {"avg": statistics.fmean(times), "p50": p(0.50), "p99": p(0.99), "replies": len(times)}


def measure(name: str, guest: str, host: str, guest_ip: str, host_ip: str, a: argparse.Namespace,
            iperf: bool) -> dict[str, Any]:
    print(f"[{name}] TCP guest->host …", flush=True)
    r: dict[str, Any] = {"tcp_tx": tcp(guest, host, host_ip, a.seconds, iperf)}
    print(f"[{name}] TCP host->guest …", flush=True)
    r["tcp_rx"] = tcp(host, guest, guest_ip, a.seconds, iperf)
    print(f"[{name}] UDP 64 B …", flush=True)
    r["udp_pps"], r["udp_loss"] = udp64(guest, host, host_ip, a.seconds, iperf)
    print(f"[{name}] ping …", flush=True)
    r["ping"] = latency(guest, host_ip, a.pings)
    return r


def _cpu_seconds(pid: int) -> dict[str, float]:
    """utime + stime per thread of `pid` (name: Python thread name when it is ours, else comm)."""
    import threading

    names = {t.native_id: t.name for t in threading.enumerate()} if pid == os.getpid() else {}
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        name = names.get(int(task.name)) or (task / "comm").read_text().strip()
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def cpu_during_tcp(stack: DemoStack, seconds: float, iperf: bool) -> str:
    """CPU seconds per thread of the emulator (this process) and of `hvuio up` during one TCP run."""
    assert stack.up_pid is not None
    before_e, before_g = _cpu_seconds(os.getpid()), _cpu_seconds(stack.up_pid)
    t0 = time.monotonic()
    mbit = tcp(stack.guest_ns, stack.host_ns, HOST_IP, seconds, iperf)
    wall = time.monotonic() - t0
    after_e, after_g = _cpu_seconds(os.getpid()), _cpu_seconds(stack.up_pid)
    lines = [f"  TCP guest->host {mbit:.1f} Mbit/s over {wall:.1f} s wall (sender start/stop included)"]
    for who, b, a in (("emulator (Python host + kernel)", before_e, after_e), ("hvuio up (guest)", before_g, after_g)):
        used = {k: a.get(k, 0.0) - b.get(k, 0.0) for k in a}
        total = sum(used.values())
        lines.append(f"  {who}: {total:.2f} CPU s = {100 * total / wall:.0f}% of one core")
        lines += [f"    {k:28} {v:6.2f} s" for k, v in sorted(used.items(), key=lambda kv: -kv[1]) if v >= 0.05]
    return "\n".join(lines)


def profile_host(stack: DemoStack, seconds: float, iperf: bool) -> str:
    """py-spy of this process (emulated host + kernel threads) while a TCP run goes on."""
    spy = shutil.which("py-spy")
    if spy is None:
        return "py-spy not installed (pip install py-spy): host not profiled"
    out = Path(f"/tmp/hvuio-bench-pyspy-{os.getpid()}.txt")
    prof = subprocess.Popen([spy, "record", "--pid", str(os.getpid()), "--duration", str(int(seconds)),
                             "--format", "raw", "--output", str(out), "--nonblocking"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    tcp(stack.guest_ns, stack.host_ns, HOST_IP, seconds, iperf)
    prof.wait(timeout=seconds + 60)
    if not out.exists():
        return "py-spy produced no output"
    leaf: dict[str, int] = {}
    total = 0
    for line in out.read_text().splitlines():
        stack_text, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = stack_text.split(";")
        total += int(count)
        # attribute to the innermost frame in hvuio (where Python time is spent), else the leaf
        own = [f for f in frames if "hvuio" in f]
        key = (own[-1] if own else frames[-1]).split(" (")[0] + " (" + (own[-1] if own else frames[-1]).split(" (")[-1]
        leaf[key] = leaf.get(key, 0) + int(count)
    out.unlink()
    top = sorted(leaf.items(), key=lambda kv: -kv[1])[:15]
    return "\n".join(f"  {100 * n / total:5.1f}%  {k}" for k, n in top) + f"\n  ({total} samples, all threads)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5.0, help="duration of each TCP/UDP run")
    ap.add_argument("--pings", type=int, default=200)
    ap.add_argument("--python", action="store_true", help="use the Python sender/receiver even if iperf3 exists")
    ap.add_argument("--profile-host", type=float, default=0.0, metavar="SECONDS")
    ap.add_argument("--up-arg", action="append", default=[], metavar="ARG",
                    help="extra option for `hvuio up` (repeat per word), e.g. --up-arg=--busy-poll --up-arg=0")
    a = ap.parse_args()
    require_root()
    iperf = shutil.which("iperf3") is not None and not a.python
    tool = "iperf3 (one stream)" if iperf else "Python socket sender/receiver and UDP blaster"
    cpu_model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    print(f"bench_e2e: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, nproc {os.cpu_count()}, CPU {cpu_model!r}, "
          f"kernel {platform.release()}, Python {platform.python_version()}; traffic: {tool}; "
          f"load {os.getloadavg()[0]:.2f}", flush=True)
    results: dict[str, dict[str, Any]] = {}
    with netns.Cleanup() as c:
        g, h = c.namespace("bg", ipv6=False), c.namespace("bh", ipv6=False)
        netns.add_veth("hvu-vg", g, "hvu-vh", h)
        netns.add_address(g, "hvu-vg", VETH_GUEST)
        netns.add_address(h, "hvu-vh", VETH_HOST)
        results["veth"] = measure("veth", g, h, VETH_GUEST.split("/")[0], VETH_HOST.split("/")[0], a, iperf)
    if a.up_arg:
        print("hvuio up options:", " ".join(a.up_arg), flush=True)
    with DemoStack(up_args=tuple(a.up_arg)) as stack:
        results["hvuio"] = measure("hvuio", stack.guest_ns, stack.host_ns, GUEST_IP, HOST_IP, a, iperf)
        host = stack.host_status()
        stack.env.host.wait_for(lambda: False, timeout=0.6)   # the status file is rewritten every 0.5 s
        guest = stack.live_counters()
        tap_stats = {k: int(netns.run(stack.guest_ns, ["cat", f"/sys/class/net/{stack.tap}/statistics/{k}"]).stdout)
                     for k in ("tx_packets", "tx_dropped", "rx_packets", "rx_dropped")}
        cpu = cpu_during_tcp(stack, a.seconds, iperf)
        prof = profile_host(stack, a.profile_host, iperf) if a.profile_host else ""
    v, x = results["veth"], results["hvuio"]
    rows = [("TCP guest->host Mbit/s", "tcp_tx", True), ("TCP host->guest Mbit/s", "tcp_rx", True),
            ("UDP 64 B datagrams/s rcvd", "udp_pps", True)]
    print(f"\n{'metric':30} {'veth':>12} {'hvuio':>12} {'hvuio/veth':>11}")
    for label, key, _ in rows:
        print(f"{label:30} {v[key]:12.1f} {x[key]:12.1f} {x[key] / v[key]:10.1%}")
    print(f"{'UDP 64 B loss %':30} {v['udp_loss']:12.1f} {x['udp_loss']:12.1f}")
    for q in ("avg", "p50", "p99"):
        print(f"{'ping ' + q + ' ms':30} {v['ping'][q]:12.3f} {x['ping'][q]:12.3f} {x['ping'][q] / v['ping'][q]:10.1f}x")
    print(f"{'ping replies':30} {v['ping']['replies']:12d} {x['ping']['replies']:12d}")
    lat_ratio = x["ping"]["avg"] / v["ping"]["avg"]
    p50_ratio = x["ping"]["p50"] / v["ping"]["p50"]
    print(f"\nhvuio / veth: TCP {x['tcp_tx'] / v['tcp_tx']:.1%} guest->host, {x['tcp_rx'] / v['tcp_rx']:.1%} "
          f"host->guest; ping {lat_ratio:.1f}x avg, {p50_ratio:.1f}x p50")
    print("guest tap statistics (kernel):", json.dumps(tap_stats))
    sends = guest.get("tx_sends", 0)
    print(f"guest pump: {guest.get('tx_packets', 0)} RNDIS packets in {sends} sends "
          f"({guest.get('tx_packets', 0) / sends if sends else 0:.2f} per send)")
    print("emulated host counters:", json.dumps({k: n for k, n in host["counters"].items() if n}))
    print("emulated host NVSP counters:", json.dumps({k: n for k, n in host.get("nvsp_counters", {}).items() if n}))
    print("\nCPU time during one more TCP guest->host run:\n" + cpu)
    if prof:
        print("\npy-spy of the emulator process during a TCP guest->host run (innermost hvuio frame):\n" + prof)


if __name__ == "__main__":
    main()
