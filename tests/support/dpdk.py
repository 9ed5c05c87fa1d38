"""DPDK 22.11's netvsc PMD against the emulator: building and running tests/support/dpdk_echo.c.

What lives here:
  * where the DPDK development files are (`dev_dir()`: $HVUIO_DPDK_DEV, else `<venv>/dpdk`, which
    scripts/setup-machine.sh fills with libdpdk-dev's include/ tree and pkg-config files) and
    `skip_reason()`, the sentence a test skips with when the runtime or those files are missing;
  * `build_echo(out_dir)`: gcc compiles dpdk_echo.c with the Cflags of libdpdk-libs.pc and links
    the installed runtime libraries by soname (`-l:librte_eal.so.23`: the runtime packages ship
    no unversioned .so links);
  * `EchoStack`: `hvuio sim start --wire --guest-memory-mode proc` (the PMD runs with IOVA = VA),
    `hvuio bind`, then the echo program under `hvuio sim exec`; its JSON lines (`ready`, `exit`),
    the emulator's status, source addresses for the host namespace, and a cleanup that always
    stops the program and the emulator.

What must not live here: assertions about what the PMD or the emulator did (the tests make them).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from hvuio.netdev import netns

from support.cli import child_env, hvuio_main, nic_guid
from support.waiting import next_json_line, wait_until

ECHO_SOURCE = Path(__file__).with_name("dpdk_echo.c")
ENV_DEV = "HVUIO_DPDK_DEV"
ABI = "23"  # DPDK 22.11's ABI version: the sonames (librte_eal.so.23) and Debian's package names
LINKED = ("librte_ethdev", "librte_mbuf", "librte_mempool", "librte_net", "librte_eal")
# EAL loads these from its plugin directory (RTE_EAL_PMD_PATH of Debian's build): the vmbus bus,
# the netvsc PMD and the mempool driver rte_pktmbuf_pool_create uses by default.
PLUGINS = ("librte_bus_vmbus", "librte_net_netvsc", "librte_mempool_ring")
SETUP_HINT = "scripts/setup-machine.sh installs them on Debian 12 (librte-net-netvsc23, libdpdk-dev headers)"

HOST_IP = "198.18.0.1"  # `sim start --wire` gives its host tap this address (hvuio.sim.net)
GUEST_IP = "198.18.0.2"  # the echo program's address
STATE = "run/hvuio-sim"
READY_TIMEOUT = 30.0  # seconds for EAL init, NVS/RNDIS set-up, subchannels and the port start


def dev_dir() -> Path:
    """Where libdpdk-dev's include/ and pkgconfig/ were unpacked."""
    env = os.environ.get(ENV_DEV)
    return Path(env) if env else Path(sys.prefix) / "dpdk"


def _pc_vars(pc: Path, includedir: Path) -> tuple[list[str], Path]:
    """(Cflags, libdir) of a DPDK .pc file, with its include directory moved to `includedir`."""
    text = pc.read_text()
    libdir = re.search(r"^libdir=(.*)$", text, re.M)
    cflags = re.search(r"^Cflags:(.*)$", text, re.M)
    if libdir is None or cflags is None:
        raise ValueError(f"{pc}: no libdir or Cflags line")
    lib = Path(libdir.group(1).replace("${prefix}", "/usr").strip())
    flags = cflags.group(1).replace("${includedir}", str(includedir)).split()
    return flags, lib


def skip_reason() -> str | None:
    """None when the echo program can be built and run here, else why not (one sentence)."""
    if shutil.which("gcc") is None:
        return "needs gcc"
    dev = dev_dir()
    pc = dev / "pkgconfig" / "libdpdk-libs.pc"
    if not (dev / "include" / "dpdk" / "rte_ethdev.h").is_file() or not pc.is_file():
        return f"needs DPDK 22.11's headers in {dev} ({SETUP_HINT})"
    try:
        _, libdir = _pc_vars(pc, dev / "include" / "dpdk")
    except (OSError, ValueError) as exc:
        return f"unreadable DPDK pkg-config data: {exc}"
    plugin_dirs = sorted(libdir.glob("dpdk/pmds-*"))
    for lib in LINKED:
        if not (libdir / f"{lib}.so.{ABI}").exists():
            return f"needs the DPDK 22.11 runtime ({lib}.so.{ABI} in {libdir}; {SETUP_HINT})"
    for lib in PLUGINS:
        if not any((d / f"{lib}.so.{ABI}").exists() for d in plugin_dirs):
            return f"needs the DPDK 22.11 plugin {lib} in {libdir}/dpdk/pmds-*/ ({SETUP_HINT})"
    return None


def build_echo(out_dir: Path) -> Path:
    """Compile dpdk_echo.c into `out_dir`; the compiler's output is the assertion message."""
    dev = dev_dir()
    cflags, libdir = _pc_vars(dev / "pkgconfig" / "libdpdk-libs.pc", dev / "include" / "dpdk")
    out = out_dir / "dpdk_echo"
    argv = ["gcc", "-O2", "-g", "-Wall", "-Wextra", *cflags, "-o", str(out), str(ECHO_SOURCE),
            f"-L{libdir}", *[f"-l:{lib}.so.{ABI}" for lib in LINKED]]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, f"{' '.join(argv)}\n{proc.stderr}"
    return out


def eal_args(guid: str) -> list[str]:
    """EAL arguments for one emulated NIC: no huge pages, IOVA = VA (what the emulator's proc
    mode reads), no PCI scan, only this VMBus device (22.11 probes every NIC bound to
    uio_hv_generic otherwise), no shared config or telemetry files left behind, one lcore."""
    return ["-l", str(min(os.sched_getaffinity(0))), "--no-huge", "-m", "128", "--iova-mode=va",
            "--no-pci", "--no-shconf", "--no-telemetry", "-a", guid]


class EchoStack:
    """The emulator with a wire and the echo program on its NIC; `close()` undoes everything."""

    def __init__(self, tmp: Path, kernel: str) -> None:
        self.root = tmp / "sim"
        self.kernel = kernel
        self.cleanup = netns.Cleanup()
        self.host_ns = ""
        self.host_if = ""
        self.guid = ""
        self.echo: subprocess.Popen[str] | None = None
        self.events: list[dict[str, Any]] = []
        self.stderr = ""

    # ---- the emulator -------------------------------------------------------------------------

    def start(self) -> EchoStack:
        started = hvuio_main("--sysroot", str(self.root), "sim", "start", "--wire", "--kernel", self.kernel,
                             "--guest-memory-mode", "proc")
        assert started.returncode == 0, started.stderr
        self.cleanup.push("stop the emulator", self.stop_emulator)
        self.host_ns = (self.root / STATE / "netns").read_text().strip()
        links = json.loads(netns.run(self.host_ns, ["ip", "-j", "link", "show"]).stdout)
        self.host_if = next(link["ifname"] for link in links if link["ifname"] != "lo")
        self.guid = nic_guid(self.root)
        bound = hvuio_main("--sysroot", str(self.root), "bind", self.guid, "--force")
        assert bound.returncode == 0, bound.stderr
        # 22.11 offers more than one queue only if the primary's `ring` attribute exists when it
        # probes (bus/vmbus rte_vmbus_max_channels); kernels 6.15+ add it a moment after the probe.
        channels = self.root / "sys/bus/vmbus/devices" / self.guid / "channels"
        wait_until(lambda: any(os.path.lexists(c / "ring") for c in channels.iterdir()), "the primary's ring file")
        return self

    def stop_emulator(self) -> None:
        stopped = hvuio_main("--sysroot", str(self.root), "sim", "stop")
        assert stopped.returncode == 0 or "no sim kernel runs" in stopped.stderr, stopped.stderr

    def status(self) -> dict[str, Any]:
        """The emulator's view of the NIC (`hvuio sim status --json`)."""
        proc = hvuio_main("--sysroot", str(self.root), "sim", "status", "--json")
        assert proc.returncode == 0, proc.stderr
        return dict(json.loads(proc.stdout)[self.guid])

    def add_host_address(self, ip: str) -> None:
        """A second source address on the host tap (flows the emulator hashes differently)."""
        netns.add_address(self.host_ns, self.host_if, f"{ip}/24")

    def ping(self, count: int, size: int, source: str = HOST_IP) -> tuple[int, int]:
        """(sent, received) of `count` echo requests with `size` payload bytes from `source`."""
        proc = netns.run(self.host_ns, ["ping", "-n", "-q", "-c", str(count), "-i", "0.05", "-W", "3",
                                        "-s", str(size), "-I", source, GUEST_IP], check=False, timeout=60)
        m = re.search(r"(\d+) packets transmitted, (\d+) received", proc.stdout)
        assert m is not None, proc.stdout + proc.stderr
        return int(m.group(1)), int(m.group(2))

    # ---- the echo program ---------------------------------------------------------------------

    def start_echo(self, binary: Path, queues: int, timeout: float = 120.0) -> dict[str, Any]:
        """Run the echo program under `hvuio sim exec`; returns its `ready` line."""
        argv = [*self.exec_prefix(), str(binary), *eal_args(self.guid), "--", "--ip", GUEST_IP,
                "--queues", str(queues), "--timeout", str(timeout)]
        self.echo = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=child_env(), start_new_session=True, cwd=netns.CHILD_CWD)
        self.cleanup.push("stop the echo program", self.stop_echo)
        event = self.next_event(READY_TIMEOUT)
        if event is None or event.get("event") != "ready":
            code, _ = self.stop_echo()
            raise AssertionError(f"the echo program did not start (exit {code}):\n{self.stderr[-4000:]}")
        return event

    def exec_prefix(self) -> list[str]:
        """The argv prefix that runs a program against the emulated kernel (`hvuio sim exec`)."""
        return [sys.executable, "-m", "hvuio", "--sysroot", str(self.root), "sim", "exec", "--"]

    def next_event(self, timeout: float) -> dict[str, Any] | None:
        """The next JSON line of the echo program, or None at EOF / after `timeout` seconds."""
        proc = self.echo
        assert proc is not None
        event = next_json_line(proc, timeout)
        if event is not None:
            self.events.append(event)
        return event

    def stop_echo(self) -> tuple[int | None, dict[str, Any] | None]:
        """SIGTERM to the program's process group; (exit code, its `exit` line if it printed one)."""
        proc, self.echo = self.echo, None
        if proc is None:
            return None, None
        try:
            os.killpg(proc.pid, signal.SIGTERM)  # the exec wrapper and the program, whichever runs
        except ProcessLookupError:
            pass
        try:
            out, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
        self.stderr += err
        final = None
        for line in out.splitlines():
            if line.startswith("{"):
                event = json.loads(line)
                self.events.append(event)
                if event.get("event") == "exit":
                    final = event
        return proc.returncode, final

    # ---- lifetime -----------------------------------------------------------------------------

    def close(self) -> None:
        self.cleanup.close()

    def __enter__(self) -> EchoStack:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()
