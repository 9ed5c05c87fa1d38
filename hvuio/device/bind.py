"""Bind a synthetic NIC to uio_hv_generic and give it back, safely and idempotently (VMBUS.md §2.6).

`bind_device()` prefers the per-device `driver_override` procedure (§2.6.2) when the kernel has
the file, else `new_id` + unbind + bind (§2.6.1); it records the previous driver in a journal
(`<sysroot>/run/hvuio/bind/<guid>.json`) so `unbind_device()` restores it (hv_netvsc when there is
no journal). Sysfs writes cannot report the kernel's errors reliably (and the emulator cannot at
all), so both verify the result by reading back with a bounded poll. A bind that fails (or is
interrupted) after its first write is undone completely (`_rollback`, VMBUS.md §2.6.1 step 6): the
dynamic id removed or the override restored, the NIC given back to its previous driver from
whatever state the kernel shows, the journal removed unless the device stayed with uio_hv_generic;
the error says whether giving it back worked.

A binding ends with its device: after the host removed a device (rescind) and it has left sysfs,
`forget_device()` removes its journal and its lock file (a re-offered device starts unbound, as
the kernel probes it afresh). A journal whose device no longer exists is ignored when an
interface name is looked up, and one that a device offered again under the same GUID does not
match (other interfaces) is replaced when that device is bound.

Refusals, each one sentence + hint: not root (`NotRootError`), module missing
(`ModuleMissingError`), unknown device (`DeviceNotFoundError`), not a NIC (`WrongDeviceError`),
the NIC carries the default route or an SSH session on any of its addresses (`UnsafeBindError`
from guard.py, unless force),
/dev/uioN open by someone (`DeviceBusyError`).

Reads go through `hvuio.device.sysfs`; nothing here mmaps or opens /dev/uioN. Binding and
unbinding wait for the kernel, so each logs one progress line first (the `hvuio.progress` logger,
which the CLI shows on a terminal or with -v).
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import re
import shlex
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from hvuio.device.classes import NIC_CLASS
from hvuio.device.guard import check_safe
from hvuio.device.platform import is_emulated
from hvuio.device.sysfs import VmbusDevice, sys_path
from hvuio.safefs import open_file, unlink, write_file
from hvuio.errors import (DeviceBusyError, DeviceNotFoundError, HvuioError, ModuleMissingError, NotRootError,
                          SysfsError, WrongDeviceError)

UIO_DRIVER: Final = "uio_hv_generic"
DEFAULT_DRIVER: Final = "hv_netvsc"
JOURNAL_DIR: Final = "/run/hvuio/bind"
BIND_TIMEOUT: Final = 5.0  # seconds to wait for the kernel to show the new binding
_WRITE_HINT: Final = "Check 'dmesg' for errors from hv_vmbus or uio_hv_generic, and run 'hvuio doctor'."
_DRIVER_NAME: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}")
progress = logging.getLogger("hvuio.progress")


@dataclass(frozen=True)
class BindResult:
    """What bind/unbind did: `changed` False means it was already in the wanted state."""

    guid: str
    driver: str
    changed: bool
    method: str  # "driver_override", "new_id", "none"
    uio: str | None = None
    netdevs: tuple[str, ...] = ()

    @property
    def message(self) -> str:
        if not self.changed:
            return f"{self.guid} is already bound to {self.driver}" + (f" ({self.uio})" if self.uio else "")
        via = f" via {self.method}" if self.method != "none" else ""
        return f"{self.guid} bound to {self.driver}{via}" + (f" ({self.uio})" if self.uio else "")


# -- small helpers ---------------------------------------------------------------------------------

def _write(path: Path, text: str, ignore: tuple[int, ...] = ()) -> None:
    """One sysfs write; kernel errnos in `ignore` are fine (e.g. EEXIST from new_id)."""
    try:
        # O_NONBLOCK: the emulator's control files are FIFOs; with no kernel reading them this
        # fails with ENXIO instead of hanging (real sysfs files ignore the flag)
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            os.write(fd, (text + "\n").encode())
        finally:
            os.close(fd)
    except FileNotFoundError:
        raise SysfsError(f"sysfs file {path} does not exist", _WRITE_HINT) from None
    except PermissionError:
        raise NotRootError(f"cannot write {path}: permission denied") from None
    except OSError as err:
        if err.errno == errno.ENXIO:
            raise SysfsError(f"nobody reads {path} (is the emulated kernel running?)",
                             f"Start the emulator ('hvuio{_sysroot_option(_tree_of(path))} sim start') or point "
                             "--sysroot at a live tree.") from None
        if err.errno not in ignore:
            raise SysfsError(f"writing {text!r} to {path} failed: {err.strerror}", _WRITE_HINT) from None


def _tree_of(path: Path) -> Path:
    """The sysroot a sysfs path lies under (the directory holding its `sys`), else "/"."""
    for parent in Path(os.path.abspath(path)).parents:
        if parent.name == "sys":
            return parent.parent
    return Path("/")


def _wait_for(what: str, check: Callable[[], bool], timeout: float) -> None:
    """Poll `check` with a short, growing interval until true or `timeout`; SysfsError then."""
    deadline = time.monotonic() + timeout
    delay = 0.002
    while not check():
        if time.monotonic() >= deadline:
            raise SysfsError(f"timed out after {timeout:g} s waiting for {what}",
                             "Check 'dmesg' for errors from uio_hv_generic or hv_vmbus.")
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def journal_path(sysroot: Path | str, guid: str) -> Path:
    return sys_path(sysroot, f"{JOURNAL_DIR}/{guid}.json")


def read_journal(sysroot: Path | str, guid: str) -> dict[str, object] | None:
    """The journal of `guid`, or None when absent or not in the shape bind_device writes."""
    path = journal_path(sysroot, guid)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("guid"), str):
        return None
    netdevs = data.get("netdevs", [])
    if not isinstance(netdevs, list) or not all(isinstance(n, str) for n in netdevs):
        return None
    for key in ("previous_driver", "previous_override"):
        value = data.get(key)
        # a driver name becomes a path under /sys/bus/vmbus/drivers: a plain name only
        if value is not None and (not isinstance(value, str) or not _DRIVER_NAME.fullmatch(value)
                                  or value in (".", "..")):
            return None
    return data


def _journal_by_ifname(sysroot: Path | str, ifname: str) -> str | None:
    base = sys_path(sysroot, JOURNAL_DIR)
    try:
        names = os.listdir(base)
    except OSError:
        return None
    for n in sorted(names):
        data = read_journal(sysroot, n.removesuffix(".json"))
        if data and ifname in (data.get("netdevs") or []):  # type: ignore[operator]
            guid = str(data["guid"])
            if VmbusDevice(Path(sysroot), guid).path.is_dir():  # else a device the host removed
                return guid
    return None


def resolve_device(sysroot: Path | str, name: str) -> VmbusDevice:
    """GUID or interface name; an interface gone because we bound it is found via the journal."""
    try:
        return VmbusDevice.resolve(sysroot, name)
    except DeviceNotFoundError:
        guid = _journal_by_ifname(sysroot, name)
        if guid is None:
            raise
        return VmbusDevice.from_uuid(sysroot, guid)


def check_root(sysroot: Path | str, euid: int | None) -> None:
    """Root is required on a real system; on the emulator's tree, root or the tree's owner."""
    uid = os.geteuid() if euid is None else euid
    if uid == 0:
        return
    if is_emulated(sysroot) and sys_path(sysroot, "/sys").stat().st_uid == uid:
        return
    raise NotRootError("binding a VMBus device needs root")


def ensure_module(sysroot: Path | str) -> None:
    """uio_hv_generic loaded (modprobe on a real system); ModuleMissingError otherwise."""
    drv = sys_path(sysroot, f"/sys/bus/vmbus/drivers/{UIO_DRIVER}")
    if drv.is_dir():
        return
    if Path(sysroot).resolve() == Path("/"):
        try:
            subprocess.run(["modprobe", UIO_DRIVER], check=True, capture_output=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            pass
        if drv.is_dir():
            return
    raise ModuleMissingError(f"the kernel module {UIO_DRIVER} is not loaded and could not be loaded")


# -- busy ------------------------------------------------------------------------------------------

def uio_holders(dev_path: Path, proc: Path = Path("/proc")) -> list[int]:
    """PIDs that have `dev_path` open (readlink of /proc/*/fd/*, which names files by absolute
    path: a relative `dev_path` is made absolute first)."""
    target = os.path.abspath(dev_path)
    pids: list[int] = []
    try:
        entries = [e for e in os.listdir(proc) if e.isdigit()]
    except OSError:
        return pids
    for pid in entries:
        try:
            fds = os.listdir(proc / pid / "fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(proc / pid / "fd" / fd) == target:
                    pids.append(int(pid))
                    break
            except OSError:
                continue
    return pids


#: Channel state CHANNEL_OPENED_STATE in the device's `state` attribute (VMBUS.md §2.1).
CHANNEL_OPENED: Final = 3
#: How long check_not_busy lets an opened state settle: a close that is still being processed
#: (the emulator handles close(2) asynchronously) must not read as "busy".
BUSY_SETTLE: Final = 1.0


def check_not_busy(device: VmbusDevice, settle: float = 0.0) -> None:
    """DeviceBusyError if /dev/uioN is open: by /proc fd links, or channel state 3 (opened).

    `settle` > 0 waits up to that long for an opened state to go away before calling it busy.
    """
    uio = device.uio
    if uio is None:
        return
    pids = uio_holders(uio.dev_path)
    if pids:
        raise DeviceBusyError(f"{uio.dev_path} is open by process {', '.join(map(str, pids))}")
    if device.state == CHANNEL_OPENED:
        try:
            _wait_for("the channel to close", lambda: device.state != CHANNEL_OPENED, settle)
        except SysfsError:
            raise DeviceBusyError(f"{uio.dev_path} is open (channel {device.relid} is in the opened state)") from None


LOCK_DIR: Final = "/run/hvuio/lock"
_CLAIM_TRIES: Final = 3


def lock_path(sysroot: Path | str, guid: str) -> Path:
    return sys_path(sysroot, f"{LOCK_DIR}/{guid}.lock")


def claim_device(device: VmbusDevice) -> int:
    """Exclusive claim among hvuio processes: an flock on <sysroot>/run/hvuio/lock/<guid>.lock.

    Closes the window check_not_busy leaves (two `hvuio up` starting together both see the
    channel closed). Returns the lock fd (close it to release); DeviceBusyError when another
    holds it. It fails closed: a lock that cannot be made or taken is an error, never skipped
    (UnsafePathError when its directory could be changed by another user, hvuio.safefs).
    """
    path = lock_path(device.sysroot, device.guid)
    for _ in range(_CLAIM_TRIES):
        try:
            fd = open_file(path, os.O_RDWR | os.O_CREAT, 0o600, create_dirs=0o755)
        except PermissionError:
            raise NotRootError(f"cannot create the device lock {path}") from None
        except OSError as err:
            raise SysfsError(f"cannot create the device lock {path}: {err.strerror}",
                             "Check that /run is mounted and writable by root.") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise DeviceBusyError(f"{device.guid} is driven by another hvuio process (lock {path} is held)",
                                      "Stop the other 'hvuio up' of this device (see 'hvuio status'), then retry.") from None
            raise SysfsError(f"cannot lock {path}: {err.strerror}") from None
        if _same_file(fd, path):
            return fd
        os.close(fd)  # forget_device removed the file between our open and our lock: take the new one
    raise DeviceBusyError(f"the device lock {path} keeps being replaced while it is taken",
                          "Stop the other hvuio processes of this device, then retry.")


def _same_file(fd: int, path: Path) -> bool:
    """Whether `path` still names the file open as `fd` (a lock on a removed file guards nothing)."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (held.st_dev, held.st_ino)


def forget_device(device: VmbusDevice, settle: float = 0.0) -> bool:
    """Remove the bind journal and the lock file of `device` once it has left sysfs (the host
    removed it), waiting up to `settle` seconds for it to go; True when it is gone (its files are
    removed, missing ones are fine), False when it still exists (nothing is touched).

    Call it holding the device's claim (claim_device's fd): nobody else then holds the lock file
    removed here, and claim_device takes the new file when it raced with the removal."""
    try:
        _wait_for(f"{device.guid} to leave sysfs", lambda: not device.path.is_dir(), settle)
    except SysfsError:
        return False
    unlink(journal_path(device.sysroot, device.guid))
    unlink(lock_path(device.sysroot, device.guid))
    return True


# -- bind / unbind ---------------------------------------------------------------------------------

def _bound_to(device: VmbusDevice, driver: str) -> bool:
    if device.driver != driver or not device.path.is_dir():
        return False
    if driver != UIO_DRIVER:
        return True
    uio = device.uio
    return uio is not None and os.path.exists(uio.dev_path)


def _journal_is_current(journal: dict[str, object] | None, driver: str | None, netdevs: list[str]) -> bool:
    """Whether an existing journal describes the device as it is now, so a bind run again after
    one that failed half way keeps it (it knows the driver from before). A journal naming other
    interfaces than those the device has now under a driver belongs to an earlier device of this
    GUID (removed by the host and offered again): it is replaced."""
    if journal is None:
        return False
    return driver is None or not netdevs or set(netdevs) == set(journal.get("netdevs") or [])  # type: ignore[call-overload]


def bind_device(sysroot: Path | str, name: str, *, force: bool = False, euid: int | None = None,
                env: dict[str, str] | None = None, timeout: float = BIND_TIMEOUT) -> BindResult:
    """Bind the NIC `name` (GUID or interface) to uio_hv_generic; see the module docstring."""
    device = resolve_device(sysroot, name)
    if device.class_id != NIC_CLASS:
        raise WrongDeviceError(f"{device.guid} is a {device.class_name} device, not a synthetic NIC")
    if _bound_to(device, UIO_DRIVER):
        uio = device.uio
        return BindResult(device.guid, UIO_DRIVER, False, "none", uio.name if uio else None)
    check_root(sysroot, euid)
    ensure_module(sysroot)
    netdevs = [n for n, _ in device.netdevs()]
    if not force:
        check_safe(netdevs, env)
    previous = device.driver
    journal = journal_path(sysroot, device.guid)
    method = "driver_override" if device.has_driver_override else "new_id"
    if not _journal_is_current(read_journal(sysroot, device.guid), previous, netdevs):
        record = {"guid": device.guid, "previous_driver": previous or DEFAULT_DRIVER,
                  "previous_override": device.driver_override, "netdevs": netdevs, "method": method,
                  "macs": [m.lower() for _, m in device.netdevs() if m], "time": time.time()}
        write_file(journal, (json.dumps(record, indent=1) + "\n").encode(), 0o644, create_dirs=0o755)
    progress.info("Binding %s%s to %s (%s); waiting for the kernel...", device.guid,
                  f" ({', '.join(netdevs)})" if netdevs else "", UIO_DRIVER, method)
    bus = sys_path(sysroot, "/sys/bus/vmbus")
    try:   # from the first write on, a failure or Ctrl-C gives the NIC back
        if method == "driver_override":
            _write(device.path / "driver_override", UIO_DRIVER)
            if previous is not None:
                _write(bus / "drivers" / previous / "unbind", device.guid, ignore=(errno.ENODEV,))
            _write(bus / "drivers_probe", device.guid, ignore=(errno.ENODEV, errno.EBUSY))
        else:
            _write(bus / "drivers" / UIO_DRIVER / "new_id", NIC_CLASS, ignore=(errno.EEXIST,))
            if previous is not None:
                _write(bus / "drivers" / previous / "unbind", device.guid, ignore=(errno.ENODEV,))
                _wait_for(f"{device.guid} to leave {previous}", lambda: device.driver != previous, timeout)
            if device.driver is None:
                _write(bus / "drivers" / UIO_DRIVER / "bind", device.guid, ignore=(errno.ENODEV, errno.EBUSY))
        _wait_for(f"{device.guid} to be bound to {UIO_DRIVER} with its /dev/uioN",
                  lambda: _bound_to(device, UIO_DRIVER), timeout)
    except KeyboardInterrupt:   # Ctrl-C half way: give the NIC back before leaving
        _rollback(sysroot, device, method, timeout)
        raise
    except SysfsError as err:
        restored = _rollback(sysroot, device, method, timeout)
        hint = err.hint
        if device.monitor_id is None:
            hint = ("The channel is not monitored; kernels before 6.10 refuse to bind such channels "
                    "('vmbus channel requires hypercall' in dmesg). " + hint)
        if restored:
            raise SysfsError(f"{err.message}; the previous driver was restored", hint) from None
        raise SysfsError(f"{err.message}; giving the NIC back to its previous driver failed too",
                         f"Run 'hvuio{_sysroot_option(sysroot)} unbind {device.guid}' once the kernel settles. "
                         + hint) from None
    uio = device.uio
    return BindResult(device.guid, UIO_DRIVER, True, method, uio.name if uio else None, tuple(netdevs))


def _sysroot_option(sysroot: Path | str) -> str:
    """' --sysroot DIR' for a command in a hint, '' on a real system."""
    root = os.path.abspath(sysroot)
    return "" if root == "/" else f" --sysroot {shlex.quote(root)}"


def _rollback(sysroot: Path | str, device: VmbusDevice, method: str, timeout: float) -> bool:
    """After a failed bind, undo it completely: the dynamic id goes first (`new_id` method: else
    uio_hv_generic would claim every NIC probed later), or the override is restored; then the
    device returns to its previous driver, and the journal goes unless the device stayed with
    uio_hv_generic (a later 'hvuio unbind' needs it then). Every step is tried whatever the others
    did; True when the previous driver has the device back."""
    journal = read_journal(sysroot, device.guid) or {}
    target = str(journal.get("previous_driver") or DEFAULT_DRIVER)
    bus = sys_path(sysroot, "/sys/bus/vmbus")
    undo: Callable[[], None]
    if method == "new_id":
        def undo() -> None:
            _write(bus / "drivers" / UIO_DRIVER / "remove_id", NIC_CLASS, ignore=(errno.ENODEV,))
    else:
        prev = journal.get("previous_override")

        def undo() -> None:
            _write(device.path / "driver_override", str(prev) if prev else "")
    restored = False
    try:
        undo()
        restored = _give_back(bus, device, target, timeout)
    except HvuioError:
        pass  # the original error is what the user needs to see
    if device.driver != UIO_DRIVER:
        unlink(journal_path(sysroot, device.guid))
    return restored


def _give_back(bus: Path, device: VmbusDevice, target: str, timeout: float) -> bool:
    """Bring `device` to `target` from wherever a failed bind left it, reading its state again
    after every step (a kernel may still be acting on the bind's last write): unbound from
    uio_hv_generic when it is there, bound to `target` when it has no driver; True once it is
    with `target`, False after `timeout`."""
    deadline = time.monotonic() + timeout
    last: str | None = "start"
    delay = 0.002
    while True:
        driver = device.driver
        if driver == target or not device.path.is_dir():
            return driver == target
        if driver != last:   # act once per state seen: the kernel needs time to show the result
            if driver == UIO_DRIVER:
                _write(bus / "drivers" / UIO_DRIVER / "unbind", device.guid, ignore=(errno.ENODEV,))
            elif driver is None:
                _write(bus / "drivers" / target / "bind", device.guid, ignore=(errno.ENODEV, errno.EBUSY))
            last = driver
        if time.monotonic() >= deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def unbind_device(sysroot: Path | str, name: str, *, euid: int | None = None,
                  timeout: float = BIND_TIMEOUT) -> BindResult:
    """Give the device back to the driver recorded in the journal (hv_netvsc without one)."""
    device = resolve_device(sysroot, name)
    journal = read_journal(sysroot, device.guid) or {}
    target = str(journal.get("previous_driver") or DEFAULT_DRIVER)
    if device.driver != UIO_DRIVER:
        if device.class_id != NIC_CLASS:
            raise WrongDeviceError(f"{device.guid} is a {device.class_name} device, not a synthetic NIC")
        unlink(journal_path(sysroot, device.guid))
        return BindResult(device.guid, device.driver or "(none)", False, "none",
                          netdevs=tuple(n for n, _ in device.netdevs()))
    check_root(sysroot, euid)
    check_not_busy(device)
    progress.info("Giving %s back to %s; waiting for the kernel...", device.guid, target)
    bus = sys_path(sysroot, "/sys/bus/vmbus")
    prev_override = journal.get("previous_override")
    if device.has_driver_override:
        method = "driver_override"
        _write(device.path / "driver_override", str(prev_override) if prev_override else "")
        _write(bus / "drivers" / UIO_DRIVER / "unbind", device.guid, ignore=(errno.ENODEV,))
        _write(bus / "drivers_probe", device.guid, ignore=(errno.ENODEV, errno.EBUSY))
        if target != DEFAULT_DRIVER:
            _write(bus / "drivers" / target / "bind", device.guid, ignore=(errno.ENODEV, errno.EBUSY))
    else:
        method = "new_id"
        _write(bus / "drivers" / UIO_DRIVER / "remove_id", NIC_CLASS, ignore=(errno.ENODEV,))
        _write(bus / "drivers" / UIO_DRIVER / "unbind", device.guid, ignore=(errno.ENODEV,))
        _wait_for(f"{device.guid} to leave {UIO_DRIVER}", lambda: device.driver != UIO_DRIVER, timeout)
        _write(bus / "drivers" / target / "bind", device.guid, ignore=(errno.ENODEV, errno.EBUSY))
    _wait_for(f"{device.guid} to be bound to {target}", lambda: _bound_to(device, target), timeout)
    netdevs = journal.get("netdevs") or []
    if target == DEFAULT_DRIVER and netdevs:
        _wait_for(f"interface {netdevs[0]} to come back",  # type: ignore[index]
                  lambda: bool(device.netdevs()), timeout)
    unlink(journal_path(sysroot, device.guid))
    return BindResult(device.guid, target, True, method, netdevs=tuple(n for n, _ in device.netdevs()))
