"""DPDK 22.11's netvsc PMD against the emulator: building and running tests/support/dpdk_echo.c.

What lives here:
  * where the DPDK development files are (`dev_dir()`: $HVUIO_DPDK_DEV, else `<venv>/dpdk`, which
    scripts/setup-machine.sh fills with libdpdk-dev's include/ tree and pkg-config files) and
    `skip_reason()`, the sentence a test skips with when the runtime or those files are missing;
  * `build_echo(out_dir)`: gcc compiles dpdk_echo.c with the Cflags of libdpdk-libs.pc and links
    the installed runtime libraries by soname (`-l:librte_eal.so.23`: the runtime packages ship
    no unversioned .so links);

What must not live here: assertions about what the PMD or the emulator did (the tests make them).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ECHO_SOURCE = Path(__file__).with_name("dpdk_echo.c")
ENV_DEV = "HVUIO_DPDK_DEV"
ABI = "23"  # DPDK 22.11's ABI version: the sonames (librte_eal.so.23) and Debian's package names
LINKED = ("librte_ethdev", "librte_mbuf", "librte_mempool", "librte_net", "librte_eal")
# EAL loads these from its plugin directory (RTE_EAL_PMD_PATH of Debian's build): the vmbus bus,
# the netvsc PMD and the mempool driver rte_pktmbuf_pool_create uses by default.
PLUGINS = ("librte_bus_vmbus", "librte_net_netvsc", "librte_mempool_ring")
SETUP_HINT = "scripts/setup-machine.sh installs them on Debian 12 (librte-net-netvsc23, libdpdk-dev headers)"

GUEST_IP = "198.18.0.2"  # the echo program's address


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
