#!/usr/bin/env python3
"""Benchmark of the C data path: frames/s through hvu_dp_rx and hvu_dp_tx.

Only the C calls are timed. The fake host (hvuio.sim.vsp.ring, pure Python) prepares each round
untimed: for RX it fills the inbound ring with transfer-page packets (one range = one RNDIS packet
= one frame) and later drains the completions; for TX it queues frames on a SOCK_DGRAM socketpair
standing in for the tap and later completes the sections. RX writes frames to /dev/null (a real
tap write costs more: the kernel then runs its receive path), TX reads them from the socketpair.

Usage: python scripts/bench_datapath.py [--rounds N] [--sizes 64,1514]
"""

from __future__ import annotations

import argparse
import os
import socket
import struct
import sys
import time

from hvuio.native.datapath import DataPath, Status
from hvuio.native.ring import Direction, Ring
from hvuio.sim.vsp.ring import HostRingReader, HostRingWriter

HDR = 4096
RING_DATA = 1 << 20
SECTION = 2048
RECV_SECTIONS = 4096
SEND_SECTIONS = 1024
RX_BATCH = 4096      # transfer-page packets per round
TX_BATCH = 400       # frames per round (an AF_UNIX datagram queue holds ~512)


def rndis(frame: bytes) -> bytes:
    return struct.pack("<11I", 1, 44 + len(frame), 36, len(frame), 0, 0, 0, 0, 0, 0, 0) + frame


def setup(tap_fd: int) -> tuple[DataPath, HostRingReader, HostRingWriter, bytearray, socket.socket, socket.socket]:
    size = HDR + RING_DATA
    mem = bytearray(2 * size)
    tx = Ring(mem, direction=Direction.TX, offset=0, size=size, header_size=HDR)
    rx = Ring(mem, direction=Direction.RX, offset=size, size=size, header_size=HDR)
    recv = bytearray(SECTION * RECV_SECTIONS)
    send = bytearray(SECTION * SEND_SECTIONS)
    irq_g, irq_h = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    irq_g.setblocking(False)
    irq_h.setblocking(False)
    dp = DataPath(tx_ring=tx, rx_ring=rx, recv_buf=recv, recv_section_size=SECTION, send_buf=send,
                  send_section_size=SECTION, send_section_count=SEND_SECTIONS, tap_fd=tap_fd,
                  irq_fd=irq_g.fileno(), budget=1 << 20)
    dp._keep = (mem, recv, send, tx, rx)  # type: ignore[attr-defined]
    return dp, HostRingReader(mem, offset=0, size=size), HostRingWriter(mem, offset=size, size=size), recv, irq_g, irq_h


def drain_signals(sock: socket.socket) -> None:
    try:
        while sock.recv(64):
            pass
    except BlockingIOError:
        pass


def bench_rx(size: int, rounds: int) -> float:
    null = os.open(os.devnull, os.O_WRONLY)
    dp, reader, writer, recv, irq_g, irq_h = setup(null)
    frame = bytes(i & 0xFF for i in range(size))
    msg = rndis(frame)
    for s in range(RECV_SECTIONS):
        recv[s * SECTION:s * SECTION + len(msg)] = msg
    xfer_nvs = struct.pack("<IIII", 107, 0, 0xFFFFFFFF, 0) + bytes(24)
    spent, frames = 0.0, 0
    tid = 1
    for _ in range(rounds):
        for i in range(RX_BATCH):
            hdr = struct.pack("<HBBIII", 0xCAFE, 0, 0, 1, len(msg), (i % RECV_SECTIONS) * SECTION)
            writer.write(7, xfer_nvs, header=hdr, trans_id=tid)
            tid += 1
        t0 = time.perf_counter()
        st = dp.rx()
        spent += time.perf_counter() - t0
        assert st is Status.IDLE, st
        frames += RX_BATCH
        while reader.read_batch(100000)[0]:
            pass
        drain_signals(irq_h)
    c = dp.counters()
    assert c["rx_packets"] == frames and c["rx_tap_drop"] == 0, c
    os.close(null)
    return frames / spent


def bench_tx(size: int, rounds: int) -> float:
    tap_g, tap_h = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    tap_g.setblocking(False)
    dp, reader, writer, _recv, irq_g, irq_h = setup(tap_g.fileno())
    frame = bytes(i & 0xFF for i in range(size))
    spent, frames = 0.0, 0
    for _ in range(rounds):
        queued = 0
        try:
            while queued < TX_BATCH:
                tap_h.send(frame, socket.MSG_DONTWAIT)
                queued += 1
        except BlockingIOError:
            pass
        t0 = time.perf_counter()
        dp.tx()
        spent += time.perf_counter() - t0
        frames += queued
        while True:
            pkts, _ = reader.read_batch(100000)
            if not pkts:
                break
            for p in pkts:
                writer.write(0xB, struct.pack("<II", 108, 1) + bytes(32), trans_id=p.trans_id)
        dp.rx()                      # frees the sections (completions): not counted in TX time
        drain_signals(irq_h)
    assert dp.counters()["tx_packets"] == frames, dp.counters()
    return frames / spent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--sizes", default="64,1514")
    args = ap.parse_args()
    print(f"{'frame':>6} {'rx frames/s':>14} {'tx frames/s':>14}")
    for size in (int(s) for s in args.sizes.split(",")):
        rx = bench_rx(size, args.rounds)
        tx = bench_tx(size, args.rounds)
        print(f"{size:>6} {rx:>14,.0f} {tx:>14,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
