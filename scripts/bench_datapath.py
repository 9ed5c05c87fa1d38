#!/usr/bin/env python3
"""Benchmark of the guest's C pump on a real tap: frames per second per core, both directions.

What is measured: the CPU time of the thread that runs the pump (CLOCK_THREAD_CPUTIME_ID, not
wall time) while it moves frames between a real tap (IFF_TAP | IFF_VNET_HDR, in a network
namespace of its own) and the channel's rings, and the frames it moved (its counters).

- host->tap: the fake host (hvuio.sim.vsp.ring, pure Python, untimed) fills the inbound ring with
  transfer-page packets (one range = one RNDIS packet = one frame); the timed `DataPath.rx` call
  copies each range out, parses it, writes the frame to the tap (the kernel's receive path runs
  in the writer's context and counts: the frame is addressed to the tap's MAC with an unclaimed
  EtherType, so the stack drops it early) and queues the receive completions.
- tap->host: a second thread transmits frames on the tap through an AF_PACKET socket (the kernel's
  transmit path queues them for the tap's reader); meanwhile the pump thread waits, so work the
  kernel does for the pump's reads while frames arrive is charged to it; the timed part is that
  wait plus the `DataPath.tx` call that reads the frames into send sections and sends NVS 107.
  The fake host then completes the sections (untimed).

`--tap-io` runs the same measurement once per tap I/O mode of the data path (hvuio.native.datapath
TAP_IO_MODES) side by side.

Needs root (a network namespace and a tap). Usage:
    python scripts/bench_datapath.py [--rounds N] [--sizes 64,1514] [--tap-io readv,uring]
"""

from __future__ import annotations

import argparse
import ctypes
import os
import platform
import socket
import struct
import subprocess
import sys
import threading
import time

from hvuio.native.datapath import TAP_IO_MODES, DataPath, Status
from hvuio.native.ring import Direction, Ring
from hvuio.netdev.tap import Tap
from hvuio.sim.vsp.ring import HostRingReader, HostRingWriter

HDR = 4096
RING_DATA = 1 << 20
SECTION = 2048
RECV_SECTIONS = 4096
SEND_SECTIONS = 1024
RX_BATCH = 4096      # transfer-page packets per round
TX_BATCH = 1000      # frames per round (the tap's queue is made longer than that)
TAP_QUEUE = 4096
TAP_MAC = bytes.fromhex("020000000b01")
ETHERTYPE = 0x88B5   # IEEE local experimental: no protocol handler claims it
CLONE_NEWNET = 0x40000000


def rndis(frame: bytes) -> bytes:
    return struct.pack("<11I", 1, 44 + len(frame), 36, len(frame), 0, 0, 0, 0, 0, 0, 0) + frame


def frame_of(size: int) -> bytes:
    head = TAP_MAC + bytes.fromhex("020000000b02") + struct.pack("!H", ETHERTYPE)
    return head + bytes(i & 0xFF for i in range(size - len(head)))


class Bench:
    """One tap, one pair of rings and buffers, one DataPath in the given tap I/O mode."""

    def __init__(self, tap: Tap, tap_io: str) -> None:
        size = HDR + RING_DATA
        self.mem = bytearray(2 * size)
        self.tx_ring = Ring(self.mem, direction=Direction.TX, offset=0, size=size, header_size=HDR)
        self.rx_ring = Ring(self.mem, direction=Direction.RX, offset=size, size=size, header_size=HDR)
        self.recv = bytearray(SECTION * RECV_SECTIONS)
        self.send = bytearray(SECTION * SEND_SECTIONS)
        self.irq_g, self.irq_h = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.irq_g.setblocking(False)
        self.irq_h.setblocking(False)
        self.dp = DataPath(tx_ring=self.tx_ring, rx_ring=self.rx_ring, recv_buf=self.recv, recv_section_size=SECTION,
                           send_buf=self.send, send_section_size=SECTION, send_section_count=SEND_SECTIONS,
                           tap_fd=tap.fileno(), irq_fd=self.irq_g.fileno(), vnet_hdr=True,
                           budget=1 << 20, tap_io=tap_io)
        self.reader = HostRingReader(self.mem, offset=0, size=size)
        self.writer = HostRingWriter(self.mem, offset=size, size=size)

    def close(self) -> None:
        self.dp.close()   # its io_uring, before the next DataPath on the same tap
        self.irq_g.close()
        self.irq_h.close()

    def drain_signals(self) -> None:
        try:
            while self.irq_h.recv(64):
                pass
        except BlockingIOError:
            pass

    def host_complete(self) -> None:
        """Completes every send in the outbound ring and lets the pump take the completions."""
        while True:
            pkts, _ = self.reader.read_batch(100000)
            if not pkts:
                break
            for p in pkts:
                if p.type != 0xB:
                    self.writer.write(0xB, struct.pack("<II", 108, 1) + bytes(32), trans_id=p.trans_id)
        self.dp.rx()
        self.drain_signals()

    def rx(self, size: int, rounds: int) -> float:
        msg = rndis(frame_of(size))
        for s in range(RECV_SECTIONS):
            self.recv[s * SECTION:s * SECTION + len(msg)] = msg
        xfer_nvs = struct.pack("<IIII", 107, 0, 0xFFFFFFFF, 0) + bytes(24)
        before = self.dp.counters()
        spent, tid = 0.0, 1
        for _ in range(rounds):
            for i in range(RX_BATCH):
                hdr = struct.pack("<HBBIII", 0xCAFE, 0, 0, 1, len(msg), (i % RECV_SECTIONS) * SECTION)
                self.writer.write(7, xfer_nvs, header=hdr, trans_id=tid)
                tid += 1
            t0 = time.thread_time()
            st = self.dp.rx()
            spent += time.thread_time() - t0
            assert st is Status.IDLE, st
            while self.reader.read_batch(100000)[0]:
                pass
            self.drain_signals()
        c = self.dp.counters()
        frames = c["rx_packets"] - before["rx_packets"]
        assert frames == rounds * RX_BATCH and c["rx_tap_drop"] == before["rx_tap_drop"], c
        return frames / spent

    def tx(self, tap: Tap, size: int, rounds: int) -> float:
        frame = frame_of(size)
        pkt = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        pkt.bind((tap.name, 0))
        go, done = threading.Event(), threading.Event()
        stop = False

        def inject() -> None:
            while True:
                go.wait()
                go.clear()
                if stop:
                    return
                for _ in range(TX_BATCH):
                    pkt.send(frame)
                done.set()

        th = threading.Thread(target=inject, daemon=True)
        th.start()
        self.host_complete()
        before = self.dp.counters()
        spent = 0.0
        try:
            for _ in range(rounds):
                t0 = time.thread_time()
                go.set()
                done.wait()
                done.clear()
                while self.dp.tx() is Status.BUDGET:
                    pass
                spent += time.thread_time() - t0
                self.host_complete()
        finally:
            stop = True
            go.set()
            th.join()
            pkt.close()
        c = self.dp.counters()
        frames = c["tx_packets"] - before["tx_packets"]
        assert frames >= rounds * TX_BATCH * 0.99, (frames, c)
        return frames / spent


def enter_netns() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise SystemExit(f"bench_datapath: cannot make a network namespace ({os.strerror(err)}); "
                         f"run it as root")


def open_tap() -> Tap:
    tap = Tap.open("hvubench0", TAP_MAC, 1500, vnet_hdr=True)
    subprocess.run(["ip", "link", "set", "dev", tap.name, "txqueuelen", str(TAP_QUEUE)], check=True)
    with open(f"/proc/sys/net/ipv6/conf/{tap.name}/disable_ipv6", "w") as f:
        f.write("1")
    tap.up()
    os.set_blocking(tap.fileno(), False)
    return tap


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--sizes", default="64,1514")
    ap.add_argument("--tap-io", default=",".join(TAP_IO_MODES),
                    help=f"tap I/O modes to measure, comma-separated ({', '.join(TAP_IO_MODES)})")
    args = ap.parse_args()
    enter_netns()
    tap = open_tap()
    print(f"# {platform.node()}: {os.cpu_count()} CPUs, kernel {platform.release()}, Python {platform.python_version()}; "
          f"{args.rounds} rounds, RX {RX_BATCH} / TX {TX_BATCH} frames each; frames/s per core of pump-thread CPU")
    io_modes = [m for m in args.tap_io.split(",") if m]
    print(f"{'frame':>6} {'tap I/O':>8} {'host->tap':>14} {'tap->host':>14}")
    for size in (int(s) for s in args.sizes.split(",")):
        for mode in io_modes:
            b = Bench(tap, mode)
            try:
                # a kernel that refuses io_uring runs readv: say so rather than mislabel the figures
                shown = mode if b.dp.tap_io == mode else f"{b.dp.tap_io}(!)"
                rx = b.rx(size, args.rounds)
                tx = b.tx(tap, size, args.rounds)
            finally:
                b.close()
            print(f"{size:>6} {shown:>8} {rx:>14,.0f} {tx:>14,.0f}", flush=True)
    tap.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
