#!/usr/bin/env python3
"""Ring core benchmark: packets/s and GB/s of write + read through the C ring, against a plain
memcpy of the same bytes (the physical limit).

Both loops run entirely in C (hvu_ring_bench / hvu_memcpy_bench, one call per measurement), so
Python overhead is not measured. The ring loop sends in-band packets in batches of up to 32 into
a NIC-sized ring (2 MiB including the PAGE_SIZE header) and reads each batch back with copy-out
and one close, as a poll loop would. The memcpy loop copies descriptor + payload into the data
area at a rolling offset and back out. GB/s counts payload bytes (1 GB = 1e9 bytes).

Usage: python scripts/bench_ring.py [--seconds 1.0] [--repeat 5] [--ring-size BYTES]
Results are recorded in docs/BENCHMARKS.md ("Ring core").
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

from hvuio import native
from hvuio.native.ring import bench

SIZES = (64, 1514, 65536)


def measure(payload: int, seconds: float, ring_size: int, baseline: bool) -> float:
    """Packets per second: calibrate an iteration count for ~`seconds`, then time one C call."""
    n = 1000
    while True:
        t0 = time.perf_counter()
        bench(payload, n, ring_size=ring_size, baseline=baseline)
        dt = time.perf_counter() - t0
        if dt >= seconds / 4:
            break
        n *= 4
    n = max(1, int(n * seconds / dt))
    t0 = time.perf_counter()
    moved = bench(payload, n, ring_size=ring_size, baseline=baseline)
    return moved / (time.perf_counter() - t0)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=1.0, help="target time per measurement")
    ap.add_argument("--repeat", type=int, default=5, help="measurements per cell; the median is shown")
    ap.add_argument("--ring-size", type=int, default=2 * 1024 * 1024, help="ring bytes incl. header")
    args = ap.parse_args()
    print(f"# {native.MODULE_NAME}, ring {args.ring_size} bytes (header {native.PAGE_SIZE}), "
          f"nproc {os.cpu_count()}, CPU {cpu_model()}, median of {args.repeat} alternating ring/memcpy pairs")
    print(f"{'payload':>8} | {'ring Mpkt/s':>11} | {'ring GB/s':>9} | {'memcpy Mpkt/s':>13} | "
          f"{'memcpy GB/s':>11} | {'ring/memcpy':>11} | {'ratio min..max':>14}")
    print("-" * 97)
    for size in SIZES:
        # ring and memcpy alternate, so a noisy neighbour hits both sides of each pair alike
        pairs = [(measure(size, args.seconds, args.ring_size, False),
                  measure(size, args.seconds, args.ring_size, True)) for _ in range(args.repeat)]
        ring = statistics.median(p[0] for p in pairs)
        copy = statistics.median(p[1] for p in pairs)
        ratios = [r / c for r, c in pairs]
        print(f"{size:>8} | {ring / 1e6:>11.2f} | {ring * size / 1e9:>9.2f} | {copy / 1e6:>13.2f} | "
              f"{copy * size / 1e9:>11.2f} | {statistics.median(ratios):>10.0%} | "
              f"{min(ratios):>6.0%}..{max(ratios):<6.0%}")

if __name__ == "__main__":
    main()
