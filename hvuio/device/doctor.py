"""`hvuio doctor`: is this a Hyper-V guest, can it run hvuio, and what to do next (VMBUS.md §1.12, §2.6.5).

Each check yields a `Finding` (ok / warn / fail / info, one sentence, optional hint); `diagnose()`
returns them in order plus one "next step" sentence. Hyper-V detection reads CPUID leaf
0x40000000 ("Microsoft Hv") through /dev/cpu/0/cpuid when that exists (no C extension needed),
else the /proc/cpuinfo `hypervisor` flag and the DMI vendor. Kernel quirks are detected at
runtime from sysfs of a bound device, never from `uname -r` alone. The "tx path" finding says
whether a NIC will send large frames and control messages GPA-direct (a pool of guest memory:
hugetlb pages on a real VM, the emulated VM's guest memory file in the emulator's tree) or
through its send buffer only, and why (hvuio.device.platform `guest_memory_report`). The "tap
io" finding says whether this kernel gives the pumps an io_uring for their tap I/O (batched) or
they will make one readv/writev per frame, and why: a trial ring of a pump's size set up and
closed at once through the C core (`hvuio.native.datapath_config.tap_io_probe`, the set-up a pump
makes), kernel.io_uring_disabled, and HVUIO_TAP_IO in this environment (`tap_io_report`).

With a sysroot other than "/" the facts about the machine come from the tree where it has them
(`proc/sys/kernel/osrelease`, `proc/cpuinfo`, `sys/class/dmi/id/sys_vendor`,
`sys/devices/system/cpu/online`: what the emulator writes, as Linux does); a fact the tree lacks
is taken from the running machine and the finding says so (`Finding.source`). Each NIC gets a
"queues" finding: how many channels it has now and how many CPUs the machine has, which bound the
queues it can get; the host's own limit is known only after bring-up (NVSP/RNDIS). A "fail"
finding makes `hvuio doctor` exit with `EXIT_FAILED`.

Only reads; nothing here binds, opens /dev/uioN, takes guest memory or changes state (the trial
io_uring is closed before the finding is made); it never imports the emulator (it reads the
tree's files).
"""

from __future__ import annotations

import os
import platform as pyplatform
import re
import struct
from dataclasses import asdict, dataclass
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from hvuio.device.classes import NIC_CLASS
from hvuio.device.guestmem import GuestMemoryReport, cpuid
from hvuio.device.platform import guest_memory_report
from hvuio.device.sysfs import VmbusDevice, sys_path
from hvuio.errors import PlatformError, SysfsError

HV_CPUID_LEAF: Final = 0x40000000
HV_SIGNATURE: Final = "Microsoft Hv"
#: Exit code of `hvuio doctor` when a check failed: this machine cannot run hvuio as it is (the
#: code of PlatformError).
EXIT_FAILED: Final = PlatformError.exit_code
#: `Finding.source` of a fact read from the running machine although a sysroot was given.
RUNNING_MACHINE: Final = "running machine"
HOST_LIMIT_NOTE: Final = "host limit known after bring-up"
#: What a pump does when it has no io_uring for the tap.
PER_FRAME: Final = "one readv/writev per frame"
IO_URING_DISABLED: Final = "/proc/sys/kernel/io_uring_disabled"
TAP_IO_ENV: Final = "HVUIO_TAP_IO"  # hvuio.native.datapath_config.TAP_IO_ENV (tests keep them equal)


@dataclass(frozen=True)
class Finding:
    check: str
    status: str  # "ok", "warn", "fail", "info"
    message: str
    hint: str = ""
    source: str = ""  # "tree", RUNNING_MACHINE, or "" (sysfs of the sysroot, or no sysroot given)


def cpuid_vendor(dev: Path = Path("/dev/cpu/0/cpuid"), leaf: int = HV_CPUID_LEAF) -> str | None:
    """The 12-byte hypervisor vendor of `leaf` (EBX, ECX, EDX), or None when unreadable."""
    regs = cpuid(leaf, dev)
    if regs is None:
        return None
    _eax, ebx, ecx, edx = regs
    return struct.pack("<3I", ebx, ecx, edx).decode("ascii", errors="replace").rstrip("\0")


def _fact(root: Path, absolute: str) -> tuple[str | None, str]:
    """The text of `absolute` ("/proc/cpuinfo") and where it came from: the tree under `root`
    ("tree") when `root` is not "/" and has the file, else the running machine (RUNNING_MACHINE
    when a sysroot was given, "" without one)."""
    if root != Path("/"):
        text = _read(sys_path(root, absolute))
        if text is not None:
            return text, "tree"
        return _read(Path(absolute)), RUNNING_MACHINE
    return _read(Path(absolute)), ""


def _note(source: str, absolute: str) -> str:
    """The message suffix naming a fact's origin."""
    if source == "tree":
        return f" (from the tree's {absolute.lstrip('/')})"
    if source == RUNNING_MACHINE:
        return f" (from the running machine: the tree has no {absolute.lstrip('/')})"
    return ""


def _has_hypervisor_flag(cpuinfo: str | None) -> bool:
    for line in (cpuinfo or "").splitlines():
        if line.startswith("flags"):
            return "hypervisor" in line.split(":", 1)[-1].split()
    return False


def detect_hyperv(sysroot: Path) -> Finding:
    """Is this a Hyper-V guest: the tree's cpuinfo flag and DMI vendor under a sysroot that has
    them, else CPUID 0x40000000 of the running machine, else its cpuinfo flag and DMI vendor."""
    root = Path(sysroot)
    simulated = (root / ".hvuio-sim").is_file()
    cpuinfo, source = _fact(root, "/proc/cpuinfo")
    dmi = _read(sys_path(root, "/sys/class/dmi/id/sys_vendor")) or ""
    hyp_type = _read(sys_path(root, "/sys/hypervisor/type")) or ""
    if source != "tree":
        vendor = cpuid_vendor()
        if vendor is not None:
            where = " of the running machine" if source == RUNNING_MACHINE else ""
            if vendor == HV_SIGNATURE:
                return Finding("hypervisor", "ok", f"CPUID 0x40000000{where} says {vendor!r}: a Hyper-V guest",
                               source=source)
            return Finding("hypervisor", "fail", f"CPUID 0x40000000{where} says {vendor!r}, not {HV_SIGNATURE!r}",
                           "Use the emulator: hvuio demo", source=source)
    flag = _has_hypervisor_flag(cpuinfo)
    note = _note(source, "/proc/cpuinfo")
    if flag and "Microsoft" in dmi:
        what = "an emulated Hyper-V guest tree" if simulated else "running under a hypervisor from Microsoft"
        return Finding("hypervisor", "info" if simulated else "ok",
                       f"{what} (cpuinfo hypervisor flag{note}, DMI vendor {dmi!r})", source=source)
    if flag or hyp_type:
        what = hyp_type or dmi or "unknown vendor"
        return Finding("hypervisor", "fail", f"running under a hypervisor that is not Hyper-V ({what}){note}",
                       "Use the emulator: hvuio demo", source=source)
    return Finding("hypervisor", "fail", f"not running under a hypervisor{note}", "Use the emulator: hvuio demo",
                   source=source)


def kernel_finding(sysroot: Path) -> Finding:
    """The kernel release: the tree's proc/sys/kernel/osrelease under a sysroot that has it."""
    root = Path(sysroot)
    release, source = _fact(root, "/proc/sys/kernel/osrelease")
    if source != "tree":
        release = pyplatform.release()
    emulated = " (the emulator's tree is in use)" if (root / ".hvuio-sim").is_file() else ""
    return Finding("kernel", "info", f"kernel {release}{emulated}{_note(source, '/proc/sys/kernel/osrelease')}",
                   source=source)


def online_cpus(sysroot: Path) -> tuple[int | None, str]:
    """How many CPUs are online (sys/devices/system/cpu/online, a list of ranges) and where the
    number came from (see `_fact`); None when unreadable."""
    text, source = _fact(Path(sysroot), "/sys/devices/system/cpu/online")
    if text is None:
        return (os.cpu_count() if source != "tree" else None), source
    count = 0
    for part in text.strip().split(","):
        lo, _, hi = part.partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()):
            return None, source
        count += (int(hi) - int(lo) + 1) if hi else 1
    return count, source


def queue_findings(sysroot: Path, nics: list[VmbusDevice]) -> list[Finding]:
    """Per NIC, what bounds its queues without opening it: the channels it has now and the
    online CPUs (one queue per channel, at most one channel per CPU, VMBUS.md §1.7); the host's
    limit is only known after bring-up."""
    cpus, source = online_cpus(sysroot)
    cpu_text = f"{cpus} CPUs online" if cpus is not None else "CPU count unknown"
    note = _note(source, "/sys/devices/system/cpu/online")
    out: list[Finding] = []
    for dev in nics:
        names = [n for n, _ in dev.netdevs()]
        tag = names[0] if names else dev.guid
        chans = len(dev.channels())
        limit = f"up to {cpus} queues ({HOST_LIMIT_NOTE})" if cpus is not None else HOST_LIMIT_NOTE
        out.append(Finding(f"{tag} queues", "info",
                           f"{tag}: {chans} channel{'s' if chans != 1 else ''} now, {cpu_text}{note}: {limit}",
                           source=source))
    return out


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _module_available(sysroot: Path, name: str) -> tuple[bool, bool]:
    """(loaded, installed) for a kernel module."""
    loaded = sys_path(sysroot, f"/sys/module/{name}").is_dir()
    if loaded or sysroot.resolve() != Path("/"):
        return loaded, loaded
    mod_dir = Path("/lib/modules") / pyplatform.release()
    dep = _read(mod_dir / "modules.dep") or ""
    builtin = _read(mod_dir / "modules.builtin") or ""
    fname = name.replace("_", "[-_]")
    found = re.search(rf"/{fname}\.ko", dep + "\n" + builtin) is not None
    return loaded, found


def device_quirks(dev: VmbusDevice) -> list[Finding]:
    """Runtime feature detection on a device bound to uio_hv_generic (VMBUS.md §2.6.5)."""
    out: list[Finding] = []
    uio = dev.uio
    if uio is None:
        return out
    try:
        maps = uio.maps()
    except SysfsError as err:
        return [Finding(f"{uio.name} maps", "fail", str(err))]
    tag = f"{uio.name} ({dev.guid})"
    out.append(Finding(f"{uio.name} maps", "ok" if len(maps) == 5 else "warn",
                       f"{tag}: {len(maps)} maps" + (" (NIC buffers present)" if len(maps) == 5 else
                                                     " (no receive/send buffers: kernel 6.14+ non-NIC or broken)")))
    if maps:
        out.append(Finding(f"{uio.name} ring size", "info", f"{tag}: primary ring {maps[0].size // 2:#x} bytes per direction"))
    ring = dev.path / "channels" / str(dev.relid) / "ring"
    if ring.exists() and maps:
        dyn = os.stat(ring).st_size == maps[0].size
        out.append(Finding(f"{uio.name} ring file", "info",
                           f"{tag}: primary ring file present, size {'dynamic (6.15+)' if dyn else 'fixed (before 6.15)'}"))
    else:
        out.append(Finding(f"{uio.name} ring file", "warn", f"{tag}: primary ring file missing: single queue only",
                           "Kernels before 4.16, or a re-offer race before 6.15; rebind the device."))
    mon = dev.monitor_id
    out.append(Finding(f"{uio.name} signalling", "info",
                       f"{tag}: " + (f"monitored (monitor_id {mon}): signal through the monitor page" if mon is not None
                                     else "not monitored: signal with write(1) (needs 6.10+)")))
    if dev.state == 3:
        try:
            mask = dev.channel(dev.relid).attr_int("in_mask")
            out.append(Finding(f"{uio.name} auto-mask", "info",
                               f"{tag}: inbound mask after open = {mask}: " +
                               ("kernel auto-masks (6.16 or older)" if mask else "userspace owns the mask (6.17+)")))
        except SysfsError:
            pass
    return out


def tx_path_finding(report: GuestMemoryReport, source: str = "") -> Finding:
    """The TX path a NIC will use: GPA-direct (ok), or the send buffer only (warn; info on a
    confidential VM, where nothing can change it). `source` is RUNNING_MACHINE when the huge
    pages of the running machine were counted for a sysroot that is not an emulator's tree."""
    status = "ok" if report.usable else "info" if "confidential" in report.reason else "warn"
    note = " (huge pages of the running machine)" if source == RUNNING_MACHINE else ""
    return Finding("tx path", status, f"NIC TX path: {report.tx_path}{note}", report.hint, source)


@dataclass(frozen=True)
class TapIoReport:
    """What the tap I/O of a pump started here will be. `mode`: "uring" (batched) or "readv" (one
    readv/writev per frame); `io_uring_error`: the trial ring's error ("EPERM (...)"), None when
    it worked or was not tried; `io_uring_disabled`: kernel.io_uring_disabled (0 allowed, 1 root
    and kernel.io_uring_group only, 2 nobody; None: no such sysctl); `env`: HVUIO_TAP_IO here;
    `reason`: why "readv", one clause ("" for "uring"); `hint`: what would give batching."""

    mode: str
    io_uring_error: str | None
    io_uring_disabled: int | None
    env: str | None
    reason: str = ""
    hint: str = ""


def tap_io_report(probe: Callable[[], str | None] | None = None, env: str | None = None,
                  disabled_text: str | None = None) -> TapIoReport:
    """Judges the running machine's tap I/O: `probe()` gives the trial ring's error (default: the
    C core's `tap_io_probe`; a C core that cannot load is a reason too), `env` is HVUIO_TAP_IO
    (default: this environment's), `disabled_text` kernel.io_uring_disabled (default: read; "": no
    such sysctl)."""
    env = os.environ.get(TAP_IO_ENV) if env is None else env
    text = _read(Path(IO_URING_DISABLED)) if disabled_text is None else disabled_text
    disabled = int(text) if text is not None and text.strip().isdigit() else None
    if env == "readv":
        return TapIoReport("readv", None, disabled, env, f"{TAP_IO_ENV}=readv in this environment asks for it",
                           f"Unset {TAP_IO_ENV} to batch tap I/O through an io_uring.")
    if probe is None:
        try:
            from hvuio.native.datapath_config import tap_io_probe
        except PlatformError as err:
            return TapIoReport("readv", None, disabled, env, f"the C core cannot load ({err})",
                               err.hint or "Run 'pip install -e .'.")
        probe = tap_io_probe
    error = probe()
    if error is None:
        return TapIoReport("uring", None, disabled, env)
    if disabled == 2:
        why, hint = "kernel.io_uring_disabled = 2 (io_uring off for every process)", \
            "Set sysctl kernel.io_uring_disabled=0 to batch tap I/O."
    elif disabled == 1:
        why, hint = ("kernel.io_uring_disabled = 1 (io_uring for root and kernel.io_uring_group only)",
                     "Run hvuio as root or in kernel.io_uring_group, or set kernel.io_uring_disabled=0.")
    elif error.startswith("ENOSYS"):
        why, hint = "this kernel has no io_uring (CONFIG_IO_URING off, or older than 5.4)", ""
    elif error.startswith("EPERM"):
        why, hint = ("a seccomp filter or security module refuses it (kernel.io_uring_disabled allows it)",
                     "Allow io_uring_setup in the container's seccomp profile or the LSM policy.")
    else:
        why, hint = "", ""
    reason = f"io_uring_setup failed with {error}" + (f": {why}" if why else "")
    return TapIoReport("readv", error, disabled, env, reason, hint)


def tap_io_finding(report: TapIoReport, source: str = "") -> Finding:
    """The tap I/O the pumps will run: batched (ok), or one readv/writev per frame (warn) and why.
    `source` is RUNNING_MACHINE for a sysroot that is not an emulator's tree (the pumps of that
    tree's machine may fare otherwise)."""
    note = " (the running machine's kernel)" if source == RUNNING_MACHINE else ""
    if report.mode == "uring":
        return Finding("tap io", "ok", f"tap I/O: batched through an io_uring{note}", source=source)
    return Finding("tap io", "warn", f"tap I/O: {PER_FRAME}: {report.reason}{note}", report.hint, source)


def diagnose(sysroot: Path | str, tx: GuestMemoryReport | None = None,
             tap: TapIoReport | None = None) -> tuple[list[Finding], str]:
    """All findings and one sentence saying what to do next; `tx` is the guest memory report and
    `tap` the tap I/O report (each probed here when None)."""
    root = Path(sysroot)
    findings = [detect_hyperv(root), kernel_finding(root)]
    bus = sys_path(root, "/sys/bus/vmbus")
    has_bus = bus.is_dir()
    findings.append(Finding("vmbus", "ok" if has_bus else "fail",
                            f"{bus} {'present' if has_bus else 'missing'}",
                            "" if has_bus else "Load hv_vmbus (Hyper-V guests only; CONFIG_HYPERV_VMBUS on 6.18+)."))
    loaded, installed = _module_available(root, "uio_hv_generic")
    findings.append(Finding("uio_hv_generic", "ok" if loaded else "warn" if installed else "fail",
                            "uio_hv_generic " + ("loaded" if loaded else "installed, not loaded" if installed else "not available"),
                            "" if loaded else "hvuio bind loads it" if installed else
                            "Install linux-modules-extra-$(uname -r) or the distribution's equivalent."))
    devices = VmbusDevice.all(root)
    nics = [d for d in devices if _safe_class(d) == NIC_CLASS]
    override = any(d.has_driver_override for d in devices)
    if has_bus:
        findings.append(Finding("devices", "ok" if nics else "warn",
                                f"{len(devices)} VMBus devices, {len(nics)} synthetic NICs"))
        if devices:
            findings.append(Finding("driver_override", "ok" if override else "info",
                                    "driver_override supported (4.18+): per-device binding" if override else
                                    "no driver_override: binding uses new_id (affects every unbound NIC)"))
    tx_source = RUNNING_MACHINE if root != Path("/") and not (root / ".hvuio-sim").is_file() else ""
    findings.append(tx_path_finding(tx if tx is not None else guest_memory_report(root), tx_source))
    findings.append(tap_io_finding(tap if tap is not None else tap_io_report(), tx_source))
    findings.extend(queue_findings(root, nics))
    bound = [d for d in nics if d.driver == "uio_hv_generic"]
    for d in bound:
        findings.extend(device_quirks(d))
    if not has_bus or findings[0].status == "fail" and not nics:
        step = "This is not a Hyper-V guest: use the emulator: hvuio demo"
    elif not loaded and not installed:
        step = "Install the uio_hv_generic module, then run 'hvuio bind <interface>'."
    elif bound:
        step = f"{len(bound)} NIC(s) bound to uio_hv_generic: run 'hvuio up {bound[0].guid}'."
    elif nics:
        step = "Bind a secondary NIC: 'hvuio list' then 'hvuio bind <interface>'."
    else:
        step = "No synthetic NIC: add a network adapter to the VM."
    return findings, step


def _safe_class(dev: VmbusDevice) -> str | None:
    try:
        return dev.class_id
    except SysfsError:
        return None


def failed(findings: list[Finding]) -> bool:
    """True when a check failed (`hvuio doctor` then exits with EXIT_FAILED)."""
    return any(f.status == "fail" for f in findings)


def as_json(findings: list[Finding], step: str, tx: GuestMemoryReport | None = None,
            tap: TapIoReport | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"findings": [asdict(f) for f in findings], "next": step,
                           "ok": all(f.status != "fail" for f in findings),
                           "from_running_machine": sorted({f.check for f in findings if f.source == RUNNING_MACHINE})}
    if tx is not None:
        out["tx_path"] = {"gpa_direct": tx.usable, "summary": tx.tx_path, **asdict(tx)}
    if tap is not None:
        out["tap_io"] = {"batched": tap.mode == "uring", **asdict(tap)}
    return out
