#!/usr/bin/env python3
"""Build and run the libFuzzer harnesses of tests/fuzz/ (coverage-guided fuzzing of the C cores).

Each harness is one C file under tests/fuzz/, compiled with clang together with the C sources it
drives (no Python, no cffi):

    clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -I _native ...

    ring_reader   _native/ring.c                        the guest's RX ring reader
    ring_writer   _native/ring.c                        the guest's TX ring writer
    dp_rx         _native/{ring,rx,tx,tx_stage,tx_gpa,datapath,offload,monitor,vlan,trace,tapio,uring}.c   the RX pump
    dp_tx         the same                              the TX pump and its completions
    simhost_tx    _native/simhost/*.c (-I _native/simhost only)   the emulator's host path

Usage (from anywhere; builds go to --out, by default a directory under /tmp, never the repo):

    python scripts/fuzz.py                          # every harness, 60 s each, 1 job
    python scripts/fuzz.py --harness dp_rx --seconds 600 --jobs 2
    python scripts/fuzz.py --replay                 # every seed and regression input once
    python scripts/fuzz.py --make-seeds             # (re)write tests/fuzz/corpus/<harness>/seed-*
    python scripts/fuzz.py --build-only --out /tmp/fz

A run starts from tests/fuzz/corpus/<harness>/ (copied: the repo corpus is never grown) and the
regression inputs, fuzzes for --seconds (with --jobs > 1 in libFuzzer's fork mode), prints the
executions/s and the coverage (libFuzzer's `cov:` figure) and copies every crash, timeout, leak or
out-of-memory input into tests/fuzz/regressions/<harness>/ under libFuzzer's name; rename it
crash-<what-it-is> once understood, regress-<what-it-was> once fixed (then it must not crash).
Extra libFuzzer flags go after `--`. (In fork mode libFuzzer's `cov:` counts the merged corpus
and is not comparable with a one-process run's.)

Known findings (tests/fuzz/README.md): a harness checks them with KNOWN(name, ...), which aborts
unless $HVU_FUZZ_ALLOW names them; runs set it to the names in KNOWN_FINDINGS below, so that they
keep looking for new ones (--strict leaves it unset). --replay runs without it: a regression
input named crash-* is expected to reproduce until its bug is fixed.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import re
import shutil
import struct
import subprocess
import sys
import tempfile
from collections.abc import Callable

ROOT = pathlib.Path(__file__).resolve().parent.parent
FUZZ = ROOT / "tests" / "fuzz"
CORPUS = FUZZ / "corpus"
REGRESSIONS = FUZZ / "regressions"

GUEST_DP = ["ring.c", "rx.c", "tx.c", "tx_stage.c", "tx_gpa.c", "datapath.c", "offload.c", "monitor.c", "vlan.c",
            "trace.c", "tapio.c", "uring.c"]
SIMHOST = ["simhost.c", "simhost_tx.c", "simhost_gpa.c", "simhost_rx.c", "offload.c", "irq.c", "rss.c"]
HARNESSES: dict[str, tuple[str, list[str]]] = {   # name: (include dir, sources in it)
    "ring_reader": ("_native", ["ring.c"]),
    "ring_writer": ("_native", ["ring.c"]),
    "dp_rx": ("_native", GUEST_DP),
    "dp_tx": ("_native", GUEST_DP),
    "simhost_tx": ("_native/simhost", SIMHOST),
}
CFLAGS = ["-g", "-O1", "-fsanitize=fuzzer,address,undefined", "-fno-sanitize-recover=undefined"]
# Known findings the harnesses name in KNOWN(...): runs look past them (see the module docstring).
KNOWN_FINDINGS: list[str] = []        # none open (rsc-headers-over-mtu: fixed, see tests/fuzz/README.md)
MAX_LEN = 8192


# ---- toolchain -------------------------------------------------------------------------------------

def find_clang() -> str | None:
    for name in ("clang", "clang-14", "clang-15", "clang-16", "clang-17", "clang-18", "clang-13"):
        path = shutil.which(name)
        if path:
            return path
    return None


def libfuzzer_missing(clang: str) -> str | None:
    """None when clang links a -fsanitize=fuzzer,address,undefined program, else why not."""
    with tempfile.TemporaryDirectory() as tmp:
        src = pathlib.Path(tmp) / "t.c"
        src.write_text("#include <stdint.h>\n#include <stddef.h>\n"
                       "int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }\n")
        r = subprocess.run([clang, *CFLAGS, str(src), "-o", str(pathlib.Path(tmp) / "t")], capture_output=True,
                           text=True)
        if r.returncode != 0:
            return "clang cannot link libFuzzer (apt-get install libclang-rt-14-dev): " + r.stderr.strip()[-300:]
    return None


def build(name: str, out: pathlib.Path, clang: str | None = None) -> pathlib.Path:
    """Compiles harness `name` into out/<name>; returns the binary."""
    clang = clang or find_clang()
    if clang is None:
        raise SystemExit("clang not found (apt-get install clang libclang-rt-14-dev)")
    inc, sources = HARNESSES[name]
    out.mkdir(parents=True, exist_ok=True)
    binary = out / name
    cmd = [clang, *CFLAGS, "-I", str(ROOT / inc), "-I", str(FUZZ), str(FUZZ / f"{name}.c"),
           *[str(ROOT / inc / s) for s in sources], "-o", str(binary)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"building {name} failed:\n{' '.join(cmd)}\n{r.stderr[-4000:]}")
    return binary


# ---- running -----------------------------------------------------------------------------------------

def inputs(name: str) -> list[pathlib.Path]:
    out = []
    for d in (CORPUS / name, REGRESSIONS / name):
        if d.is_dir():
            out.extend(sorted(p for p in d.iterdir() if p.is_file() and not p.name.startswith(".")))
    return out


def expected_to_crash(path: pathlib.Path) -> bool:
    """A regression named crash-* reproduces a known, unfixed finding."""
    return path.parent.parent == REGRESSIONS and path.name.startswith("crash-")


def replay_one(binary: pathlib.Path, path: pathlib.Path, env: dict[str, str] | None = None) -> tuple[bool, str]:
    """Runs one input once; (crashed, the last lines of its report)."""
    r = subprocess.run([str(binary), "-runs=1", str(path)], capture_output=True, text=True, timeout=600,
                       env=env if env is not None else clean_env())
    report = [ln for ln in r.stderr.splitlines()
              if "INVARIANT" in ln or "ERROR" in ln or "SUMMARY" in ln or re.match(r"\s+#\d+ ", ln)]
    return r.returncode != 0, "\n".join(report[:14])


def clean_env(allow: bool = False) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("HVU_FUZZ_ALLOW", None)
    if allow:
        env["HVU_FUZZ_ALLOW"] = ",".join(KNOWN_FINDINGS)
    env.setdefault("ASAN_OPTIONS", "abort_on_error=1:detect_leaks=1")
    env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
    return env


def stats(text: str) -> tuple[int | None, int | None, int | None]:
    """(executions, cov, exec/s) from the last libFuzzer status line of a log."""
    execs = cov = rate = None
    for line in text.splitlines():
        m = re.search(r"#(\d+):?\s+(?:\w+\s+)?cov: (\d+).*?exec/s:? (\d+)", line)
        if m:
            execs, cov, rate = int(m.group(1)), int(m.group(2)), int(m.group(3))
    return execs, cov, rate


def run(name: str, seconds: int, jobs: int, out: pathlib.Path, strict: bool, extra: list[str]) -> list[pathlib.Path]:
    """Fuzzes one harness; returns the finding inputs copied into the regressions directory."""
    binary = build(name, out)
    work = out / f"{name}-corpus"
    work.mkdir(parents=True, exist_ok=True)
    for p in inputs(name):
        if not expected_to_crash(p):
            shutil.copy(p, work / p.name)
    arts = out / f"{name}-artifacts"
    if arts.exists():
        shutil.rmtree(arts)
    arts.mkdir(parents=True)
    cmd = [str(binary), f"-max_total_time={seconds}", f"-max_len={MAX_LEN}", "-rss_limit_mb=2048", "-timeout=60",
           f"-artifact_prefix={arts}/", "-print_final_stats=1"]
    if jobs > 1:
        cmd += [f"-fork={jobs}", "-ignore_crashes=1", "-ignore_timeouts=1", "-ignore_ooms=1"]
    cmd += [*extra, str(work)]
    log = out / f"{name}.log"
    print(f"== {name}: {seconds} s, {jobs} job(s); log {log}", flush=True)
    with open(log, "w") as fh:
        subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=clean_env(allow=not strict), cwd=out)
    text = log.read_text(errors="replace")
    execs, cov, rate = stats(text)
    found = []
    dest = REGRESSIONS / name
    for art in sorted(arts.iterdir()):
        if art.name.split("-")[0] in ("crash", "timeout", "leak", "oom", "slow"):
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copy(art, dest / art.name)
            found.append(dest / art.name)
    corpus_n = len(list(work.iterdir()))
    print(f"   {name}: {execs} executions, {rate} exec/s, cov {cov}, corpus {corpus_n} inputs, "
          f"{len(found)} finding(s)")
    for known in sorted(set(re.findall(r"known finding (\S+) seen", text))):
        print(f"   known finding {known} met again (allowed; see tests/fuzz/README.md)")
    for f in found:
        _crashed, report = replay_one(binary, f, clean_env(allow=not strict))
        print(f"   finding {f.relative_to(ROOT)}:\n" + "\n".join("      " + ln for ln in report.splitlines()))
    return found


def replay(names: list[str], out: pathlib.Path) -> int:
    """Every seed and regression input once, without HVU_FUZZ_ALLOW; 1 if one misbehaved."""
    bad = 0
    for name in names:
        binary = build(name, out)
        for p in inputs(name):
            crashed, report = replay_one(binary, p)
            want = expected_to_crash(p)
            status = ("ok" if not crashed else "CRASH") if not want else ("reproduces" if crashed else "FIXED?")
            print(f"{name:12} {p.relative_to(ROOT)}: {status}")
            if crashed != want:
                bad = 1
                if report:
                    print("\n".join("      " + ln for ln in report.splitlines()))
    return bad


# ---- seeds: a writer that mirrors the harnesses' input readers ---------------------------------------
#
# The harnesses read their input with the fz_* helpers of tests/fuzz/fuzz_common.h. W below writes
# the bytes that make each helper return the value wanted; the seed functions call W in the order
# the harness reads, so a seed drives the harness down the path it names. A zero byte (what the
# input gives past its end) is each harness's default choice.

class W:
    def __init__(self) -> None:
        self.b = bytearray()

    def u8(self, v: int) -> W:
        self.b.append(v & 0xFF)
        return self

    def u16(self, v: int) -> W:
        self.b += struct.pack("<H", v & 0xFFFF)
        return self

    def u32(self, v: int) -> W:
        self.b += struct.pack("<I", v & 0xFFFFFFFF)
        return self

    def u64(self, v: int) -> W:
        self.b += struct.pack("<Q", v & (2**64 - 1))
        return self

    def pick(self, n: int, v: int) -> W:     # fz_pick: one byte, none when n <= 1
        assert 0 <= v < max(n, 1)
        return self.u8(v) if n > 1 else self

    def range(self, n: int, v: int) -> W:    # fz_range: two bytes, none when n <= 1
        assert 0 <= v < max(n, 1), (v, n)
        return self.u16(v) if n > 1 else self

    def chance(self, yes: bool) -> W:        # fz_chance(k): a zero byte says yes
        return self.u8(0 if yes else 255)

    def rare(self, yes: bool) -> W:          # fz_rare(k): a 255 byte says yes
        return self.u8(255 if yes else 0)

    def copy(self, data: bytes, n: int) -> W:
        self.b += (bytes(data) + bytes(n))[:n]
        return self

    def blob(self, n: int, head: bytes = b"") -> W:   # fz_blob: at most 8 bytes come from the input
        return self.copy(head, min(n, 8))

    def bytes(self) -> bytes:
        return bytes(self.b)


def pad8(n: int) -> int:
    return (n + 7) & ~7


def byte_where(pred: Callable[[int], bool]) -> int:
    """The first byte value a harness decodes as wanted (several fields share one byte)."""
    return next(v for v in range(256) if pred(v))


# ---- ring_reader / ring_writer -------------------------------------------------------------------

RING_D = [64, 136, 256, 1000, 4096, 8192, 12288, 16384]
TYPE_IDX = {6: 0, 7: 1, 9: 2, 11: 3}


class RR:
    """ring_reader: host and guest operations (host op bytes < 0x80, guest 0x80 | sub)."""

    def __init__(self, d: int, start: int, big_hdr: bool = False) -> None:
        self.w, self.d = W(), d
        self.w.u8(RING_D.index(d) | (0x80 if big_hdr else 0)).u16(start)
        self.hw = self.r = start & ~7
        self.used = 0

    def packet(self, ptype: int, plen: int, *, flag: int = 0, h8: int = 0, tid: int = 1, head: bytes = b"",
               publish: bool = True) -> RR:
        total = pad8(16 + plen) + 8
        assert plen < self.d and total < self.d and self.d - self.used > total, "the seed's packet must fit"
        self.w.u8(0).u8(TYPE_IDX[ptype] | flag << 3).range(self.d, plen).chance(plen < 256)
        self.w.u8(h8).u64(tid).rare(False).blob(plen, head).chance(publish)
        self.used += total
        return self

    def publish(self) -> RR:
        self.w.u8(3)
        return self

    def bad_write_index(self, v: int) -> RR:
        self.w.u8(4).u32(v).chance(False)
        return self

    def features(self, pending: int, feat: int) -> RR:
        self.w.u8(6).chance(True).u32(pending).u8(feat)
        return self

    def g(self, sub: int) -> RR:
        self.w.u8(0x80 | sub)
        return self

    def drained(self) -> RR:   # the seed's guest read and closed everything
        self.used = 0
        return self

    def copyout(self, sel: int = 0, extra: int = 0) -> RR:
        self.g(1).w.pick(4, sel)
        if sel == 2:
            self.w.u8(extra)
        elif sel == 3:
            self.w.u16(extra)
        return self

    def batch(self, cap: int, max_pkts: int) -> RR:
        self.g(6).w.pick(2, 1).u16(cap).pick(3, 1).rare(False).pick(40, max_pkts - 1)
        return self

    def xfer(self, rsize: int, ssize: int) -> RR:
        self.g(10).w.chance(True).u32(rsize).u32(ssize).pick(2, 0)
        return self

    def reattach(self) -> RR:
        self.g(9).w.rare(True).rare(False)
        return self


def seeds_ring_reader() -> dict[str, bytes]:
    xfer_head = struct.pack("<HBBI", 0xCAFE, 0, 0, 1)
    a = RR(256, 200)
    a.packet(6, 40, tid=11).packet(7, 60, h8=2, flag=1, tid=12, head=xfer_head).packet(11, 7, tid=13)
    a.g(3).copyout().g(4).copyout().xfer(1 << 16, 4096).g(4).copyout(2, 5).g(4).g(5).drained()
    a.packet(9, 100, tid=14).packet(6, 0, tid=15).packet(7, 31, h8=1, head=xfer_head)
    a.batch(4096, 8).g(7).drained()
    a.features(64, 1).packet(6, 120, tid=16).packet(6, 8, tid=17).batch(4096, 2).g(5).drained()
    b = RR(4096, 4000, big_hdr=True)
    for i in range(8):
        b.packet(6 if i % 3 else 7, 200 + 37 * i, tid=100 + i, h8=i, publish=i % 4 != 3)
    b.publish().g(0).copyout(3, 4096).g(7).batch(1024, 40).g(7).batch(8192, 40).g(5).drained()
    c = RR(136, 0)
    c.packet(6, 16, tid=1).packet(11, 24, tid=2).g(3).copyout().g(2)
    c.bad_write_index(0x1235).g(0).copyout().batch(4096, 4).g(5).g(7)
    c.publish().reattach().batch(4096, 4).g(5).drained()
    return {"seed-wrap-batch": a.w.bytes(), "seed-big-header": b.w.bytes(), "seed-fault-sticky": c.w.bytes()}


class RW:
    """ring_writer: guest writes (0x80 | < 100), pending (0x80 | >= 100), host ops (< 0x80)."""

    def __init__(self, d: int, start: int) -> None:
        self.w, self.d = W(), d
        self.w.u8(RING_D.index(d)).u16(start)

    def write(self, kind: int, segs: list[int], *, hdr8: int = 0, tid: int = 7, raw_desc: bool = True,
              huge: list[int] | None = None, nulls: tuple[int, ...] = ()) -> RW:
        """kind 0 raw write, 1 send, 2 send_hdr; segs: lengths (< 200 take one byte, else two)."""
        self.w.u8(0x80).u8(kind).pick(6, 0).u64(tid).pick(7, len(segs))
        for i, n in enumerate(segs):
            if huge and i in huge:
                self.w.u8(240 + huge.index(i) % 5 * 2)       # a claim no buffer has (even: not NULL)
                self.w.blob(1, b"\xaa")
            elif i in nulls:
                self.w.u8(15).u8(n).blob(n)                  # NULL pointer with a length
            elif n < 200:
                self.w.u8(0).u8(n).blob(n, bytes(range(i, i + 8)))
            else:
                self.w.u8(200).range(self.d + 32, n).blob(n, bytes(range(i, i + 8)))
        real0 = 1 if huge and 0 in huge else (segs[0] if segs else 0)
        if kind == 0 and real0 >= 16:
            self.w.chance(raw_desc)
        if kind == 2:
            if hdr8 == -1:
                self.w.u8(0xFF).u16(0)                   # h & 0x80: a u16 is read, then replaced
            else:
                self.w.u8(hdr8).blob(hdr8 * 8, b"HEADER..")
        return self

    def host_read(self, k: int) -> RW:
        self.w.u8(0).pick(16, k - 1)
        return self

    def bad_read_index(self, v: int) -> RW:
        self.w.u8(2).u32(v).chance(False)
        return self

    def mask(self, v: int) -> RW:
        self.w.u8(3).chance(True).u8(v)
        return self

    def pending(self, v: int) -> RW:
        self.w.u8(0x80 | 100).chance(False).range(self.d + 16, v)
        return self

    def reattach(self) -> RW:
        self.w.u8(5).rare(True).rare(False)
        return self


def seeds_ring_writer() -> dict[str, bytes]:
    a = RW(256, 0)
    for i in range(6):
        a.write(1, [20, 33], tid=i).host_read(1).write(2, [40], hdr8=2, tid=100 + i).write(0, [48]).host_read(3)
    a.mask(1).write(1, [8]).mask(0).host_read(1)
    b = RW(136, 64)
    b.write(1, [40]).write(1, [40]).write(1, [40]).host_read(1).write(1, [40]).pending(64)
    b.bad_read_index(0x33).write(1, [8]).pending(8).reattach().write(1, [8]).host_read(1)
    c = RW(4096, 4088)
    c.write(1, [16, 0], huge=[1]).write(0, [16, 8], huge=[0]).write(1, [8, 4], nulls=(1,))
    c.write(2, [8], hdr8=-1).write(0, []).write(2, [300, 250, 1000], hdr8=63).host_read(16)
    c.write(1, [200, 3000]).write(1, [3000]).host_read(2).write(0, [1024, 1024, 1024])
    return {"seed-send-read-wrap": a.w.bytes(), "seed-full-fault": b.w.bytes(), "seed-bad-args": c.w.bytes()}


# ---- frames (fuzz_net.h fn_build) --------------------------------------------------------------------

def fn_build(w: W, payload: int, how: int, *, flags: int = 0x18, seq: int = 1000) -> int:
    """Mirrors fn_build's reads; returns the frame length (the seed makes sure it fits)."""
    v6, vlan, udp, good, opts = how & 1, how >> 1 & 1, how >> 2 & 1, how >> 3 & 1, how >> 4 & 1
    iphl = 40 if v6 else 20 + (4 * 2 if opts else 0)
    if opts and not v6:
        w.pick(4, 2)
    thl = 8 if udp else 20 + (4 * 3 if opts else 0)
    if opts and not udp:
        w.pick(6, 3)
    w.copy(bytes.fromhex("02000000000102000000000a"), 12)
    if vlan:
        w.u16(5)
    if v6:
        w.copy(bytes.fromhex("fd00000000000000000000000000000a") + bytes.fromhex("fd00000000000000000000000000000b"),
               32)
    else:
        w.u16(0x1234).copy(bytes([10, 0, 0, 1, 10, 0, 0, 2]), 8)
        if not good:
            w.u16(0)
    w.copy(b"\x13\x88\xc3\x50", 4)
    if not udp:
        w.copy(struct.pack(">II", seq, 77), 8).u8(flags)
    w.blob(payload, b"payload!")
    if not good:
        w.u16(0xBEEF)
    return (18 if vlan else 14) + iphl + thl + payload


# ---- dp_rx ----------------------------------------------------------------------------------------------

DP_TXD, DP_RXD, DP_SECT, DP_PKT, DP_MTU = [72, 128, 200, 512, 4096, 16384], [4096, 16384, 65536], \
    [256, 512, 1024, 2048, 4096], [96, 256, 1024, 65536], [68, 576, 1500, 9000, 65535]
CSUMS = [0x8, 0x10, 0x1, 0x2, 0x9, 0x28, 0]


class DR:
    def __init__(self, *, txd: int, rxd: int, sect: int, nsect: int, pkt: int, mtu: int, vnet: bool = False,
                 rx_csum: bool = False, rsc: bool = True, mon: int | None = None, small_tap: bool = False,
                 trace: str | None = None) -> None:
        """trace: None, "memfd", "memfd-capped" or "null" (the capture hook, fuzz_trace.h)."""
        self.w = W()
        self.sect, self.nsect, self.mtu = sect, nsect, mtu
        self.recv_size = sect * nsect
        self.w.u8(DP_TXD.index(txd) + 6 * DP_RXD.index(rxd)).u8(DP_SECT.index(sect) + 5 * (nsect - 2))
        self.w.u8(DP_PKT.index(pkt) << 1 | DP_MTU.index(mtu) << 3)
        fl = (1 if vnet else 0) | (2 if rx_csum else 0) | (0 if rsc else 4) | (0x10 if mon is not None else 0)
        fl |= (0x60 if small_tap else 0) | (0x80 if trace else 0)
        self.w.u8(fl).u16(0xFFF8).u16(0xFFF8)          # start indices near the end: early wraps
        if mon is not None:
            self.w.u8(mon)
        if trace:
            self.w.u8({"memfd": 1, "memfd-capped": 3, "null": 0}[trace])
            if trace == "memfd-capped":
                self.w.u16(700)                          # room for a block or two

    def _msgs(self, n: int) -> None:
        for _ in range(n):
            self.w.u8(0)                                 # mutate(): unchanged

    def xfer_send(self, n: int, *, chan: int = 0, nvs_type: int = 107, pageset: int = 0xCAFE, cnt: int | None = None,
                  tid: int = 0) -> None:
        w = self.w
        w.rare(False)
        if pageset == 0xCAFE:
            w.chance(True)
        else:
            w.chance(False).u16(pageset)
        if cnt is None:
            w.chance(True)
        else:
            w.chance(False).chance(True).u8(cnt)
        w.u8(0 if nvs_type == 107 else 240)
        if chan == 0:
            w.chance(True)
        else:
            w.chance(False).chance(chan == 1)
            if chan != 1:
                w.u32(chan)
        w.rare(False).chance(True).u32(tid)

    def xfer(self, frames: list[tuple], **kw) -> DR:
        """frames: ('tcp', payload, how, ppi) | ('raw', length, ppi) | ('range', count, offset) |
        ('ovm', payload, how, ppi): a TCP frame in OpenVMM's receive layout (the range the whole
        section, the frame at data_offset 248); ppi: None, a csum value, or a tuple of a csum value
        (or None) and the 802.1Q info: ('good', v) | ('short', v) | ('repeated', v, v2)."""
        self.w.u8(0).rare(False).pick(8, len(frames) - 1)
        for fr in frames:
            if fr[0] == "range":
                self.w.u8(230).range(2 * self.sect, fr[1]).range(self.recv_size + 64, fr[2])
                continue
            csum, vlan = (fr[-1], None) if not isinstance(fr[-1], tuple) else fr[-1]
            self.w.u8({"tcp": 1, "raw": 0, "ovm": 209}[fr[0]])
            how = (1 if csum is not None else 0) | {None: 0, "good": 0x40, "short": 0x80,
                                                    "repeated": 0x60}[vlan[0] if vlan else None]
            self.w.u8(how)
            if csum is not None:
                self.w.pick(7, CSUMS.index(csum))
            if vlan and vlan[0] == "good":
                self.w.u32(vlan[1])
            elif vlan and vlan[0] == "short":
                self.w.chance(False).u32(vlan[1])        # an element of 14 bytes: no room for the value
            elif vlan:
                self.w.u32(vlan[1]).u32(vlan[2])
            pl = 16 * (bin(how & 0xC1).count("1") + (1 if how & 0x30 == 0x20 else 0))
            if fr[0] in ("tcp", "ovm"):
                self.w.range(self.mtu + 40, fr[1]).u8(fr[2])
                fn_build(self.w, fr[1], fr[2])
            else:
                room = self.sect + 64 - 44 - pl
                self.w.range(room + 1, fr[1]).chance(False).blob(fr[1], b"\x02\x00\x00\x00\x00\x01rawfr")
            self._msgs(7)
            if fr[0] == "ovm":
                assert self.sect >= 256 + 14
                self.w.u8(0x5A).chance(True)             # junk byte; message_length = 256 + the frame
                self._msgs(3)                            # message_length, data_offset, data_length
            self.w.u8(0)                                 # the range's count: unchanged
        self.xfer_send(len(frames), **kw)
        return self

    def rsc(self, payload: int, how: int, *, csum: int | None = 0x8, per: int = 16, pkt_id: int = 9,
            flags: int = 0x18) -> DR:
        """One TCP frame of `payload` bytes cut into RSC fragments of the largest size."""
        maxfrag = self.sect - 76
        cap = min(self.nsect * maxfrag, 66000)
        w = self.w
        w.u8(5).u8(how | (0x40 if csum is not None else 0)).range(cap, payload)
        length = fn_build(w, payload, how & ~4, flags=flags)
        assert length <= cap
        w.rare(False).u16(pkt_id)
        if csum is None or csum in CSUMS:
            w.chance(True).pick(7, CSUMS.index(csum if csum is not None else 0x8))
        else:
            w.chance(False).u32(csum)
        w.pick(16, per - 1)
        pos = nr = 0
        while pos < length:
            w.u8(0).u8(0)                                # full-size fragment, not broken
            self._msgs(7)
            fl = min(maxfrag, length - pos)
            pos += fl
            nr += 1
            if nr == per or pos >= length:
                self.xfer_send(nr, tid=0)
                nr = 0
        return self

    def completion(self, tagged: bool = True) -> DR:
        self.w.u8(6).pick(6, 0).chance(tagged).u32(3).chance(True).pick(2, 0)
        return self

    def control(self) -> DR:
        self.w.u8(7).pick(6, 2).copy(b"control!" * 2, 16).chance(True).pick(2, 1).u32(5)
        return self

    def bad_desc(self) -> DR:
        self.w.u8(8).u8(0).pick(6, 1).copy(b"badbadba", 8).u32(9).u8(0).pick(9, 3)
        return self

    def drain(self) -> DR:
        self.w.u8(10)
        return self

    def rx(self, budget: int = 64) -> DR:
        self.w.u8(12)
        if budget <= 8:
            self.w.chance(True).pick(8, budget - 1)
        else:
            self.w.chance(False).u8(budget - 1)
        return self


def seeds_dp_rx() -> dict[str, bytes]:
    out = {}
    a = DR(txd=4096, rxd=16384, sect=2048, nsect=8, pkt=1024, mtu=1500, rx_csum=True)
    a.xfer([("tcp", 200, 0x08, 0x8), ("tcp", 1000, 0x09, 0x10), ("raw", 60, None)], tid=1).rx(8).drain()
    a.xfer([("tcp", 1400, 0x1A, 0x1), ("raw", 1600, None), ("raw", 10, None)], tid=2)
    a.xfer([("tcp", 64, 0x0C, None)], chan=1).xfer([("tcp", 64, 0x08, None)], nvs_type=106)
    a.xfer([("tcp", 64, 0x08, None), ("range", 4000, 0), ("range", 100, 16384 + 8)], tid=3)
    a.xfer([("tcp", 64, 0x08, None)], pageset=0xBEEF).xfer([("raw", 80, None)], cnt=9)
    a.rx(64).drain().rx(64).drain()
    out["seed-plain-mixed"] = a.w.bytes()
    b = DR(txd=16384, rxd=65536, sect=4096, nsect=32, pkt=1024, mtu=1500, vnet=True, rx_csum=True)
    b.rsc(9000, 0x08).rx(64).drain().rsc(30000, 0x09, csum=0x1).rx(64).drain()
    b.rsc(1000, 0x0A, csum=None).rx(64).drain()
    out["seed-rsc-vnet"] = b.w.bytes()
    c = DR(txd=16384, rxd=65536, sect=4096, nsect=32, pkt=1024, mtu=1500)
    c.rsc(12000, 0x08, csum=None, per=2).rx(64).drain().rsc(5000, 0x00, csum=None).rx(64).drain()
    c.rsc(8000, 0x09, csum=0x8).rx(64).drain()
    out["seed-rsc-cut"] = c.w.bytes()
    d = DR(txd=72, rxd=4096, sect=512, nsect=16, pkt=256, mtu=576, mon=37, small_tap=True)
    for i in range(6):
        d.xfer([("raw", 100 + i, None), ("tcp", 300, 0x08, None)], tid=10 + i)
    d.completion().completion(False).control().rx(4).rx(64)
    for _ in range(4):
        d.drain().rx(64)
    d.bad_desc().rx(64).drain()
    out["seed-small-ring-control"] = d.w.bytes()
    e = DR(txd=4096, rxd=16384, sect=2048, nsect=8, pkt=1024, mtu=1500, trace="memfd")
    e.xfer([("tcp", 200, 0x08, (None, ("good", 0x1235))), ("raw", 60, (0x8, ("short", 7))),
            ("tcp", 100, 0x08, (None, ("repeated", 0x52, 0x63)))], tid=20).rx(64).drain()
    e.xfer([("ovm", 1000, 0x08, None), ("ovm", 300, 0x09, (0x10, ("good", 0x6F)))], tid=21).rx(64).drain()
    e.xfer([("tcp", 1460, 0x08, (None, ("good", 0x10)))], tid=22).rx(64).drain()   # tag put back: 1518
    out["seed-vlan-openvmm-trace"] = e.w.bytes()
    g = DR(txd=4096, rxd=16384, sect=4096, nsect=4, pkt=1024, mtu=1500, vnet=True, rx_csum=True,
           trace="memfd-capped")
    for i in range(3):
        g.xfer([("ovm", 500 + 100 * i, 0x08, (0x8, ("good", 0x20 + i))), ("ovm", 40, 0x08, None)], tid=30 + i)
    g.rx(64).drain()
    out["seed-openvmm-vnet-trace-capped"] = g.w.bytes()
    return out


# ---- dp_tx ---------------------------------------------------------------------------------------------

TX_TXD, TX_SECT, TX_MTU = [72, 128, 256, 1024, 16384, 65536], [128, 256, 1024, 2048, 6144], \
    [68, 576, 1500, 9000, 65535]
TX_LSOMAX, TX_AGGP, TX_AGGA = [0, 1500, 9000, 62780, 65535, 131072, 200, 0], [0, 1, 2, 3, 8, 32], \
    [0, 1, 8, 64, 4096, 4]


class DT:
    def __init__(self, *, txd: int, big_rx: bool, sect: int, count: int, mtu: int, vnet: bool = False,
                 offload: bool = False, offs: int = 0, hash_value: int | None = None, lso_max: int = 62780,
                 agg_pkts: int = 0, agg_align: int = 0, agg_bytes: int | None = None, mon: int | None = None,
                 gpa_slots: int = 0, gpa_extra: int = 0, gpa_rot: int = 0, trace: str | None = None) -> None:
        """gpa_slots 1-4: a GPA-direct pool of that many slots (+ gpa_extra pages, page numbers
        rotated by gpa_rot and reversed); 0: none. trace: as DR's."""
        w = self.w = W()
        self.mtu = mtu
        assert 1 <= count <= 200
        ti, mi, li = TX_TXD.index(txd), TX_MTU.index(mtu), TX_LSOMAX.index(lso_max)
        w.u8(byte_where(lambda a: a % 6 == ti and bool(a & 0x80) == big_rx))
        w.u8(TX_SECT.index(sect) + 5 * (count - 1 if count <= 51 else 0))
        w.u8(byte_where(lambda c: c % 5 == mi and (c >> 3) & 7 == li and not c & 0xC0))
        w.u8((1 if vnet else 0) | (2 if offload else 0) | (4 if hash_value is not None else 0)
             | (8 if mon is not None else 0) | (0x10 if trace else 0))
        w.u8(offs | (0x40 if gpa_slots else 0))
        if hash_value is not None:
            w.u32(hash_value)
        if count <= 51:
            w.rare(False)
        else:
            w.rare(True).u16(count - 1)
        pi, ai = TX_AGGP.index(agg_pkts), TX_AGGA.index(agg_align)
        w.u8(byte_where(lambda g: g % 6 == pi and g // 6 % 6 == ai and bool(g & 0x80) == (agg_bytes is not None)))
        if agg_bytes is not None:
            w.u16(agg_bytes)
        w.u16(0xFFF0).u16(0xFFF0)
        if mon is not None:
            w.u8(mon)
        if gpa_slots:
            w.pick(4, gpa_slots - 1).pick(3, gpa_extra).u8(gpa_rot)
        if trace:
            w.u8({"memfd": 1, "memfd-capped": 3, "null": 0}[trace])
            if trace == "memfd-capped":
                w.u16(3000)
        self.vnet = vnet

    def frame_raw(self, length: int) -> DT:
        w = self.w
        big = length >= self.mtu + 32
        w.u8(0).u8(0x40 if big else 0)
        w.range(self.mtu + 64 if big else self.mtu + 32, length)
        w.blob(length, b"\x02\x00\x00\x00\x00\x01\x02")
        if self.vnet:
            w.u8(0).rare(False)
        return self

    def frame_tcp(self, payload: int, how: int, vnet_mode: int = 0, mss: int = 0, flags: int = 0x18) -> DT:
        """vnet_mode: 0 none, 1 checksum request, 2 GSO."""
        w = self.w
        big = payload > self.mtu
        w.u8(0).u8(1 | (0x80 if big else 0))
        w.range(65535 if big else self.mtu + 8, payload).u8(how)
        fn_build(w, payload, how, flags=flags)
        if self.vnet:
            w.u8(vnet_mode)
            if vnet_mode == 2:
                w.range(self.mtu, mss - 1)
            w.rare(False)
        return self

    def complete(self, kind: int, k: int = 0, payload: int = 0) -> DT:
        """kind 0 outstanding (k-th), 2 a completed one, 3 unknown, 4 the held section, 5 untagged,
        6 an outstanding GPA-direct slot (k-th), 7 GPA slot k (any state)."""
        w = self.w
        w.u8(4).u8(kind).u8(payload)
        if kind in (3, 7):
            w.rare(False).u16(k)
        elif kind == 5:
            w.u32(k)
        else:
            w.u16(k)
        return self

    def drain(self) -> DT:
        self.w.u8(7)
        return self

    def tx(self, budget: int = 64) -> DT:
        self.w.u8(8)
        if budget <= 8:
            self.w.chance(True).pick(8, budget - 1)
        else:
            self.w.chance(False).u8(budget - 1)
        return self

    def rx(self, budget: int = 32) -> DT:
        self.w.u8(11).pick(32, budget - 1)
        return self

    def receive(self, flen: int = 60) -> DT:
        """A received frame (transfer-page packet): its completion competes for the outbound ring."""
        self.w.u8(15).pick(100, flen - 14).blob(flen, b"\x02\x00\x00\x00\x00\x01")
        return self

    def eof(self) -> DT:
        self.w.u8(13).rare(True).chance(False)
        return self

    def bad_read_index(self) -> DT:
        self.w.u8(13).rare(True).chance(True).u32(0x7777)
        return self


def seeds_dp_tx() -> dict[str, bytes]:
    out = {}
    a = DT(txd=16384, big_rx=False, sect=2048, count=4, mtu=1500)
    for n in (60, 10, 1514, 1550, 200, 900):
        a.frame_raw(n)
    a.tx(64).drain().complete(0, 0).complete(0, 1).complete(2, 0).complete(3, 40).complete(4, 1).complete(5, 9)
    a.rx(32).rx(32).tx(64).drain()
    for n in range(8):
        a.frame_raw(100 + n)
    a.tx(3).tx(64).drain().complete(0, 0, payload=210).complete(0, 0, payload=250).rx(32).tx(64)
    out["seed-plain"] = a.w.bytes()
    offs_all = 0x3F                                      # checksums and LSO, both families
    b = DT(txd=65536, big_rx=True, sect=6144, count=8, mtu=1500, vnet=True, offload=True, offs=offs_all,
           lso_max=62780)
    b.frame_tcp(20000, 0x08, 2, 1448).frame_tcp(9000, 0x09, 2, 1440).frame_tcp(600, 0x0C, 1).frame_tcp(800, 0x08, 1)
    b.frame_tcp(100, 0x08, 2, 1448).frame_raw(700).tx(64).drain()
    for i in range(8):
        b.complete(0, 0)
    b.rx(32).tx(64).drain()
    out["seed-offload-lso"] = b.w.bytes()
    c = DT(txd=16384, big_rx=False, sect=2048, count=3, mtu=1500, vnet=True, offload=True, offs=0x0F,
           hash_value=0x1234, agg_pkts=8, agg_align=8, lso_max=0)
    c.frame_tcp(6000, 0x1A, 2, 536).frame_tcp(4000, 0x08, 2, 1000)
    for i in range(6):
        c.frame_raw(70 + 9 * i)
    c.frame_tcp(500, 0x0D, 1).tx(64).drain().complete(0, 0).complete(0, 0).rx(32).tx(64).drain()
    out["seed-offload-swseg-agg"] = c.w.bytes()
    d = DT(txd=72, big_rx=False, sect=256, count=70, mtu=576, vnet=True, agg_pkts=2, agg_align=64,
           agg_bytes=200, mon=5)
    for i in range(12):
        d.frame_raw(80 + i)
    d.tx(64).drain().tx(64).drain().tx(64).complete(0, 0).rx(32).tx(64).eof().tx(64).tx(64)
    out["seed-small-ring-eof"] = d.w.bytes()
    f = DT(txd=128, big_rx=True, sect=6144, count=4, mtu=1500, vnet=True, offload=True, offs=0x30, lso_max=1500)
    f.frame_tcp(6000, 0x08, 2, 300).frame_tcp(3000, 0x09, 2, 200).receive().receive(80).tx(64).receive()
    for _ in range(6):
        f.rx(32).drain().tx(64).complete(0, 0)
    out["seed-lso-max-rx-traffic"] = f.w.bytes()
    e = DT(txd=1024, big_rx=False, sect=1024, count=2, mtu=1500)
    e.frame_raw(300).frame_raw(300).frame_raw(300).tx(64).bad_read_index().tx(64).tx(64).drain().rx(32)
    out["seed-bad-read-index"] = e.w.bytes()
    # GPA-direct: a plain tap with jumbo frames (2 slots: exhaustion, completions out of order,
    # unknown and duplicate slot ids), and LSO packets up to OpenVMM's maximum from an offload tap
    g = DT(txd=16384, big_rx=False, sect=6144, count=4, mtu=9000, gpa_slots=2, gpa_extra=1, gpa_rot=5)
    for n in (60, 9000, 1500, 9018, 6100, 8000, 200, 7000):
        g.frame_raw(n)
    g.tx(64).drain().complete(6, 1).complete(7, 3).complete(6, 0).complete(7, 0).rx(32).tx(64).drain()
    g.complete(0, 0).complete(6, 0).rx(32).tx(2).tx(64).drain().complete(6, 0).complete(6, 0).rx(32).tx(64)
    out["seed-gpa-jumbo"] = g.w.bytes()
    h = DT(txd=65536, big_rx=True, sect=6144, count=8, mtu=1500, vnet=True, offload=True, offs=0x3F,
           lso_max=62780, gpa_slots=3, gpa_rot=17)
    h.frame_tcp(60000, 0x08, 2, 1448).frame_tcp(30000, 0x09, 2, 1440).frame_tcp(600, 0x0C, 1).frame_raw(700)
    h.tx(64).drain().complete(6, 0).complete(0, 0).rx(32).tx(64).drain().complete(6, 1).complete(7, 9).rx(32).tx(64)
    out["seed-gpa-lso"] = h.w.bytes()
    # 802.1Q: tagged frames (fn_build how bit 1) sent plain, GPA-direct and as LSO packets, traced
    t = DT(txd=16384, big_rx=False, sect=2048, count=4, mtu=1500, trace="memfd")
    t.frame_tcp(200, 0x0A).frame_tcp(1456, 0x0A).frame_raw(60).frame_tcp(1457, 0x0A).tx(64).drain()
    t.complete(0, 0).receive(64).rx(32).tx(64).drain()
    out["seed-vlan-plain-trace"] = t.w.bytes()
    u = DT(txd=16384, big_rx=False, sect=6144, count=2, mtu=9000, gpa_slots=2, trace="memfd-capped")
    for n in (8000, 60, 7000):
        u.frame_tcp(n, 0x0A)
    u.tx(64).drain().complete(6, 0).rx(32).tx(64).drain()
    out["seed-vlan-gpa-trace-capped"] = u.w.bytes()
    v = DT(txd=65536, big_rx=True, sect=6144, count=8, mtu=1500, vnet=True, offload=True, offs=0x3F,
           lso_max=62780, gpa_slots=2, trace="null")
    v.frame_tcp(20000, 0x0A, 2, 1448).frame_tcp(60000, 0x0B, 2, 1440).frame_tcp(600, 0x0E, 1)
    v.frame_tcp(3000, 0x1A, 2, 536).tx(64).drain().complete(6, 0).complete(0, 0).rx(32).tx(64).drain()
    out["seed-vlan-lso-trace-null"] = v.w.bytes()
    return out


# ---- simhost_tx --------------------------------------------------------------------------------------

SH_RD, SH_SECT, SH_MAXF, SH_PADS, SH_LSOM = [128, 256, 4096, 16384], [256, 2048, 6144, 65536], \
    [60, 1514, 9014, 65535], [8, 16, 40, 64], [65535, 62780, 9000, 1500]


class SH:
    def __init__(self, *, d: int, sect: int, count: int, maxf: int, pad: int, strict: bool = False,
                 max_pkts: int = 1, align_log2: int = 0, vnet: bool = False, tap_gso: bool = False,
                 off_tx: int = 0, lso: int = 65535, tap: bool = True, guest_memory: bool = True,
                 gpa_buf: int = 0) -> None:
        w = self.w = W()
        self.sect, self.count, self.align = sect, count, 1 << align_log2
        w.u8(SH_RD.index(d)).u8(SH_SECT.index(sect) + 4 * (count - 1))
        w.u8(SH_MAXF.index(maxf) | SH_PADS.index(pad) << 2 | (0x10 if strict else 0) | (max_pkts - 1) << 5)
        w.u8(align_log2 | (8 if vnet else 0) | (16 if tap_gso else 0) | SH_LSOM.index(lso) << 6)
        w.u16(0xFFF0).u16(0xFFF0).u8(off_tx).rare(False).rare(not tap)
        w.u8((0 if guest_memory else 1) | gpa_buf << 1)     # guest memory; gather buffer GPAB[gpa_buf]
        w.u8(0b0011)                                     # receive sections 0 and 1 the pump's, 2 and 3 Python's

    def send(self, idx: int, msgs: list[tuple], *, flags_rc: bool = True, chan: int = 0, size_delta: int = 0) -> SH:
        """msgs: ('tcp', payload, how, csum?, lso_mss?, vlan?) | ('raw', length) | ('ctl', type index, words):
        a control message (types 2, 4, 5, 6, 8, 0x80000002) of 8 + 4 * words bytes."""
        w = self.w
        w.u8(0).rare(False).range(self.count, idx)
        self._msgs(msgs)
        if size_delta:
            w.u8(240).u8(size_delta & 0xFF)              # mutate(): size + a small delta
        else:
            w.u8(0)
        w.rare(chan != 0)
        if chan:
            w.pick(3, chan)
        w.rare(False).rare(False).rare(not flags_rc).u16(1)
        return self

    def gpa(self, msgs: list[tuple], ranges: list[tuple[int, int, list[int]]], *, outside: int | None = None,
            chan: int = 0) -> SH:
        """A GPA-direct send (guest_gpa_send): msgs as for send(), unaligned (align 1), cut into
        ranges (byte_count, byte_offset, guest-memory page indexes); `outside`: that page number
        of the first range is below guest memory."""
        w = self.w
        w.u8(12)
        size = self._msgs(msgs)
        w.u8(0)                                          # mutate(): size unchanged
        assert sum(r[0] for r in ranges) == size, (size, [r[0] for r in ranges])
        w.rare(False).pick(4, len(ranges) - 1)
        done = 0
        for i, (count, offset, pages) in enumerate(ranges):
            if i != len(ranges) - 1:
                w.range(size - done - (len(ranges) - 1 - i), count - 1)
            if offset:
                w.chance(False).range(4096, offset)
            else:
                w.chance(True)
            assert len(pages) == (offset + count + 4095) // 4096
            for k, page in enumerate(pages):
                w.range(24, page)
                if i == 0 and k == outside:
                    w.rare(True).chance(True).u8(0)      # GM_BASE - 1
                else:
                    w.rare(False)
            done += count
        w.rare(False)                                    # header well formed
        w.rare(chan != 0)
        if chan:
            w.pick(3, chan)
        w.rare(False).rare(False).rare(False).u16(2)     # section NONE, 40-byte NVSP, completion requested
        return self

    def _msgs(self, msgs: list[tuple]) -> int:
        """fill_msgs' reads for msgs; their size when unaligned (align 1)."""
        w, size = self.w, 0
        if len(msgs) <= 3:
            w.rare(False).pick(3, len(msgs) - 1)
        else:
            w.rare(True).pick(20, len(msgs) - 1)
        for i, m in enumerate(msgs):
            if i > 0:
                w.chance(True)                           # aligned
            if m[0] == "ctl":
                w.u8(0x20).pick(16, m[2]).pick(6, m[1]).u8(0)
                size += 8 + 4 * m[2]
                continue
            if m[0] == "tcp":
                _, payload, how, csum, lso_mss, vlan = (*m, None, None, None)[:6]
                flag = 1 | (2 if csum else 0) | (4 if lso_mss else 0) | (0x80 if payload >= 1600 else 0)
                flag |= 0x40 if vlan is not None else 0
                w.u8(flag)
                w.range(65000 if payload >= 1600 else 1600, payload).u8(how)
                fn_len = fn_build(w, payload, how)
                if csum:
                    w.rare(False).u8(0)                  # IP bit no; mutate(): unchanged
                if lso_mss:
                    w.range(9000, lso_mss - 1).chance(True).u8(0)
                if vlan is not None:
                    w.u32(vlan)
                flen = fn_len
                size += 44 + (16 if csum else 0) + (16 if lso_mss else 0) + (16 if vlan is not None else 0) + flen
            else:
                w.u8(0).range(1600, m[1]).blob(m[1], b"\x02\x00\x00\x00\x00\x01\x02")
                size += 44 + m[1]
            for _ in range(8):
                w.u8(0)                                  # mutate() x 8: unchanged
        return size

    def completion(self, section: int | None = 0) -> SH:
        """A receive completion (NVSP 108) naming receive section `section` (0 and 1 are the
        pump's), or None: an id naming none."""
        self.w.u8(4).pick(9, 1).copy(struct.pack("<II", 108, 1), 8)
        if section is None:
            self.w.chance(False).u64(0x1234)
        else:
            self.w.chance(True).pick(8, section)
        self.w.chance(True)
        return self

    def control(self, ptype: int) -> SH:
        self.w.u8(5).pick(9, 2).copy(b"\x6b\x00\x00\x00" + b"\x01" * 12, 16).pick(4, [6, 7, 9, 11].index(ptype))
        self.w.pick(2, 1).u64(3)
        if ptype == 6:
            self.w.chance(True)
        return self

    def bad_desc(self) -> SH:
        self.w.u8(6).rare(True).pick(9, 1).copy(b"garbage!", 8).u8(1).u16(6)
        return self

    def read(self) -> SH:
        self.w.u8(8)
        return self

    def rss(self, how: int, payload: int, *, info: int = 0x5B00, queues: int = 4, table_len: int = 128,
            mul: int = 7, add: int = 1, on: bool = True) -> SH:
        """The vRSS check (rss_check): a frame fn_build(how, payload) hashed with the NDIS hash
        types `info` and a table of table_len entries (i * mul + add) % (queues + 1)."""
        w = self.w
        w.u8(13).chance(on).chance(True).u16(info).pick(65, queues).chance(True).u8(table_len - 1)
        w.u8(mul).u8(add).pick(3, 0).rare(False).blob(40, bytes.fromhex("6d5a56da255b0ec2"))
        w.u8(how).range(64, payload)
        fn_build(w, payload, how)
        w.rare(False).rare(False)                        # whole; headers as built
        return self

    def run(self) -> SH:
        self.w.u8(9)
        return self


def seeds_simhost_tx() -> dict[str, bytes]:
    out = {}
    a = SH(d=4096, sect=2048, count=4, maxf=1514, pad=40)
    a.send(0, [("raw", 60)]).send(1, [("tcp", 300, 0x08), ("raw", 100)]).send(2, [("raw", 14), ("raw", 1500)])
    a.run().read().completion().control(7).run().run().read()
    for i in range(5):
        a.send(i % 4, [("tcp", 100 + i, 0x09)]).run()
    a.read().run()
    out["seed-plain"] = a.w.bytes()
    b = SH(d=16384, sect=65536, count=2, maxf=9014, pad=16, vnet=True, tap_gso=True, off_tx=0x7F, lso=62780)
    b.send(0, [("tcp", 20000, 0x08, False, 1448)]).send(1, [("tcp", 700, 0x08, True), ("tcp", 300, 0x0D, True)])
    b.run().read()
    out["seed-offload-gso"] = b.w.bytes()
    c = SH(d=4096, sect=6144, count=2, maxf=1514, pad=8, off_tx=0x7F, lso=62780)
    c.send(0, [("tcp", 20000 // 4, 0x09, False, 1000)]).send(1, [("tcp", 300, 0x09, True)]).run().read()
    out["seed-offload-segments"] = c.w.bytes()
    d = SH(d=128, sect=2048, count=2, maxf=1514, pad=64, strict=True, max_pkts=2, align_log2=3)
    d.send(0, [("raw", 61), ("raw", 70), ("raw", 80)]).run().read().send(1, [("raw", 64)], flags_rc=False).run()
    d.send(0, [("raw", 64)], chan=1).run().send(1, [("raw", 64)]).send(0, [("raw", 64)]).run().run().read().run()
    d.read().bad_desc().run().run()
    out["seed-strict-small-ring"] = d.w.bytes()
    e = SH(d=16384, sect=6144, count=2, maxf=1514, pad=40, off_tx=0x7F, lso=62780)
    e.gpa([("raw", 60)], [(104, 0, [3])]).run().read()
    e.gpa([("raw", 1500), ("tcp", 300, 0x08)], [(1000, 4000, [5, 6]), (44 + 1500 - 1000, 0, [9]),
                                                (44 + 354, 100, [1])]).run().read()
    e.gpa([("raw", 200)], [(244, 0, [7])], outside=0).gpa([("raw", 64)], [(108, 8, [2])], chan=1).run().read()
    e.gpa([("raw", 100)], [(20, 0, [4]), (124, 20, [4])]).run().read()       # the header crosses its range
    e.gpa([("tcp", 20000, 0x08, False, 1000)], [(44 + 16 + 20054, 0, [10, 11, 12, 13, 14])]).run().read()
    e.send(0, [("raw", 64)]).run().read()
    out["seed-gpa-direct"] = e.w.bytes()
    # sends spanning sections, data then a control message, a control message then bytes, 802.1Q
    # info (Python's), and the vRSS hash / queue on TCP, UDP, IPv6 and tagged frames
    g = SH(d=16384, sect=2048, count=4, maxf=9014, pad=40)
    g.send(0, [("raw", 1500), ("raw", 1400), ("tcp", 900, 0x08)]).run().read()      # 3 sections
    g.send(1, [("raw", 100), ("ctl", 2, 4)]).run().read()                          # data, then control
    g.send(2, [("ctl", 1, 2), ("raw", 60)]).run().read()                           # control, then bytes
    g.send(3, [("tcp", 300, 0x08, None, None, 0x123)]).run().read()                # 802.1Q info
    g.send(0, [("raw", 60), ("tcp", 200, 0x0A, None, None, 0x5)]).run().read()
    g.rss(0x08, 20).rss(0x0C, 30).rss(0x09, 10).rss(0x0A, 0).rss(0x0B, 40, info=0x1400).rss(0x18, 8, info=0x100)
    g.rss(0x08, 1, on=False).rss(0x08, 2, queues=0).rss(0x0D, 3, table_len=256, mul=3, add=200)
    out["seed-span-control-vlan-rss"] = g.w.bytes()
    return out


SEEDS = {"ring_reader": seeds_ring_reader, "ring_writer": seeds_ring_writer, "dp_rx": seeds_dp_rx,
         "dp_tx": seeds_dp_tx, "simhost_tx": seeds_simhost_tx}


def make_seeds(names: list[str]) -> None:
    for name in names:
        d = CORPUS / name
        d.mkdir(parents=True, exist_ok=True)
        for old in d.glob("seed-*"):
            old.unlink()
        for fname, data in SEEDS[name]().items():
            (d / fname).write_bytes(data)
            print(f"{(d / fname).relative_to(ROOT)}: {len(data)} bytes")


# ---- main -----------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        extra = argv[argv.index("--") + 1:]
        argv = argv[:argv.index("--")]
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--harness", action="append", choices=sorted(HARNESSES), help="one harness (repeatable); "
                    "default: all")
    ap.add_argument("--seconds", type=int, default=60, help="fuzzing time per harness (default 60)")
    ap.add_argument("--jobs", type=int, default=1, help="parallel fuzzing processes (libFuzzer -fork)")
    ap.add_argument("--out", type=pathlib.Path, help="build and work directory (default: a new one under /tmp)")
    ap.add_argument("--replay", action="store_true", help="run every seed and regression input once")
    ap.add_argument("--make-seeds", action="store_true", help="write the seed corpus under tests/fuzz/corpus/")
    ap.add_argument("--build-only", action="store_true", help="build the harnesses and stop")
    ap.add_argument("--strict", action="store_true", help="do not allow known findings during runs")
    args = ap.parse_args(argv)
    names = args.harness or sorted(HARNESSES)
    if args.make_seeds:
        make_seeds(names)
        return 0
    clang = find_clang()
    if clang is None:
        print("clang not found: apt-get install clang libclang-rt-14-dev", file=sys.stderr)
        return 2
    why = libfuzzer_missing(clang)
    if why:
        print(why, file=sys.stderr)
        return 2
    out = args.out or pathlib.Path(tempfile.mkdtemp(prefix="hvuio-fuzz-"))
    out = out.resolve()
    if out == ROOT or ROOT in out.parents:
        print(f"--out {out} is inside the repository; pick a directory outside it", file=sys.stderr)
        return 2
    if args.build_only:
        for name in names:
            print(build(name, out, clang))
        return 0
    if args.replay:
        return replay(names, out)
    found = []
    for name in names:
        found += run(name, args.seconds, args.jobs, out, args.strict, extra)
    print(f"{len(found)} finding(s)" + "".join(f"\n  {f.relative_to(ROOT)}" for f in found))
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
