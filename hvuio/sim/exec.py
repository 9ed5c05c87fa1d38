"""`hvuio sim exec`: run an unchanged uio_hv_generic driver against the emulator's tree.

`exec_in_tree(sysroot, argv)` replaces the calling process by `argv` inside a private mount
namespace where the emulator's tree stands where a real kernel's files are:

* `<sysroot>/sys/bus/vmbus` on /sys/bus/vmbus and `<sysroot>/sys/class/uio` on /sys/class/uio.
  sysfs takes no new directories, so where /sys/bus/vmbus or /sys/class/uio is missing (any host
  without Hyper-V) its parent is grafted: a tmpfs on /sys/bus (/sys/class) holding a bind mount
  of every original entry, plus the emulated one. The host's own entries stay live (a bind
  of /sys/class/net shows interfaces made later).
* `<sysroot>/run/hvuio-sim` on /run/hvuio-sim: the tree's symlinks are relative (the `ring` of a
  channel points 7 levels up, then into run/hvuio-sim), so they resolve inside the namespace as
  they do under the sysroot. `<sysroot>/run/hvuio` on /run/hvuio: what a driver run inside keeps
  there (hvuio's bind journals, device locks, `up` status files) stays with the tree, where
  `hvuio --sysroot S status` finds it. The two mount points are created on the host if missing
  (empty directories, left in place: removing one could unmount it in a concurrent session).
* LD_PRELOAD gains the preload library built from _native/simexec/preload.c (installed in
  hvuio/sim/_preload/), and HVUIO_SIM_SYSROOT names the tree: open("/dev/uioN") connects to the
  tree's /dev/uioN socket, mmap of it maps the region's backing file by offset, stat/access of
  /dev/uioN see a character device (the library's comment says exactly what).

The command replaces this process (execvpe), so its exit status is the command's and signals
sent to the pid reach it directly; the namespace ends with it, leaving the host's mounts as they
were. HVUIO_SYSROOT is removed from its environment: inside, the tree is the system's own.
Root (CAP_SYS_ADMIN) is needed for unshare and mount.

What must not live here: click and the lines printed (hvuio/cli/sim.py); the emulation itself
(hvuio.sim.kernel); anything of the guest (the emulator never imports it).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import importlib.machinery
import os
import shutil
import stat
from pathlib import Path
from typing import Final, NoReturn

from hvuio.errors import NotRootError, PlatformError, UsageError
from hvuio.sim.kernel.shm import STATE_DIR, is_sim

#: (path under the sysroot, mount point) of every bind mount, in mount order.
BINDS: Final = (("sys/bus/vmbus", "/sys/bus/vmbus"), ("sys/class/uio", "/sys/class/uio"),
                (STATE_DIR, "/" + STATE_DIR), ("run/hvuio", "/run/hvuio"))
#: The variable naming the tree for the preload library (its ENV_SYSROOT).
ENV_SYSROOT: Final = "HVUIO_SIM_SYSROOT"
PRELOAD_DIR: Final = Path(__file__).resolve().parent / "_preload"
PRELOAD_STEM: Final = "simexec"

_CLONE_NEWNS: Final = 0x00020000
_MS_NOSUID: Final = 0x2
_MS_NODEV: Final = 0x4
_MS_NOEXEC: Final = 0x8
_MS_BIND: Final = 0x1000
_MS_REC: Final = 0x4000
_MS_PRIVATE: Final = 1 << 18


def preload_library() -> Path:
    """The installed preload library; UsageError when the build made none."""
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = PRELOAD_DIR / f"{PRELOAD_STEM}{suffix}"
        if path.is_file():
            return path
    raise UsageError(f"the preload library of 'sim exec' is not built (nothing in {PRELOAD_DIR})",
                     "Reinstall hvuio with a C compiler: scripts/setup-machine.sh, or pip install -e .")


def check_request(sysroot: Path, argv: list[str], euid: int | None = None) -> tuple[Path, str]:
    """(preload library, resolved command) for running `argv` in `sysroot`'s tree; UsageError
    (NotRootError) with a hint when it cannot be done."""
    if not argv:
        raise UsageError("sim exec needs a command to run",
                         f"Put it after '--', e.g. hvuio --sysroot {sysroot} sim exec -- hvuio list.")
    if (os.geteuid() if euid is None else euid) != 0:
        raise NotRootError("sim exec needs root to make a private mount namespace",
                           "Run it with sudo (it mounts the emulated sysfs over /sys/bus/vmbus and /sys/class/uio).")
    if not is_sim(sysroot):
        raise UsageError(f"{sysroot} is not a tree of the emulator (no marker file)",
                         f"Start one with 'hvuio --sysroot {sysroot} sim start', then run sim exec.")
    command = shutil.which(argv[0]) if "/" not in argv[0] else argv[0]
    if command is None or not os.access(command, os.X_OK):
        raise UsageError(f"command {argv[0]!r} not found or not executable",
                         "Give the command's path, or one on PATH.")
    return preload_library(), command


def child_env(sysroot: Path, library: Path, env: dict[str, str] | None = None) -> dict[str, str]:
    """`env` (default: ours) with the preload library first in LD_PRELOAD, HVUIO_SIM_SYSROOT set
    and HVUIO_SYSROOT removed."""
    out = dict(os.environ if env is None else env)
    out.pop("HVUIO_SYSROOT", None)
    others = [p for p in out.get("LD_PRELOAD", "").replace(":", " ").split() if p != str(library)]
    out["LD_PRELOAD"] = " ".join([str(library), *others])
    out[ENV_SYSROOT] = str(sysroot)
    return out


# -- the mount namespace -------------------------------------------------------------------------

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _enc(text: str | None) -> bytes | None:
    return None if text is None else os.fsencode(text)


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(_libc.mount(_enc(source), _enc(target), _enc(fstype), ctypes.c_ulong(flags), _enc(data)),
           f"mount {source or ''} on {target}")


def _bind(source: str, target: str) -> None:
    _mount(source, target, None, _MS_BIND | _MS_REC)


def _graft(parent: str) -> None:
    """Cover `parent` (a sysfs directory that takes no mkdir) with a tmpfs holding a bind mount
    (or a copy, for a symlink) of each of its entries, so a new entry can be made beside them."""
    fd = os.open(parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        old = f"/proc/self/fd/{fd}"
        names = sorted(os.listdir(old))
        st = os.stat(old)
        _mount("tmpfs", parent, "tmpfs", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC,
               f"mode={stat.S_IMODE(st.st_mode):o}")
        for name in names:
            source, target = f"{old}/{name}", os.path.join(parent, name)
            mode = os.lstat(source).st_mode
            if stat.S_ISLNK(mode):
                os.symlink(os.readlink(source), target)
                continue
            if stat.S_ISDIR(mode):
                os.mkdir(target)
            else:
                os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
            _bind(source, target)
    finally:
        os.close(fd)


def _mount_point(target: str) -> None:
    """Make the directory `target` exist, grafting its parent when the parent takes no mkdir."""
    if os.path.isdir(target):
        return
    try:
        os.mkdir(target, 0o755)
    except OSError as err:
        if err.errno not in (errno.EPERM, errno.EACCES, errno.EROFS):
            raise
        _graft(os.path.dirname(target))
        os.mkdir(target, 0o755)


def enter_namespace(sysroot: Path) -> None:
    """Unshare the mount namespace of this (single-threaded) process, make every mount private
    and bind the tree's subtrees on BINDS' mount points."""
    (sysroot / "run" / "hvuio").mkdir(mode=0o755, exist_ok=True)
    _check(_libc.unshare(_CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _mount(None, "/", None, _MS_REC | _MS_PRIVATE)
    for rel, target in BINDS:
        _mount_point(target)
        _bind(str(sysroot / rel), target)


def exec_in_tree(sysroot: Path, argv: list[str]) -> NoReturn:
    """Run `argv` in `sysroot`'s tree (module docstring); returns only by raising: UsageError /
    NotRootError before anything changed, PlatformError when the namespace cannot be made."""
    sysroot = Path(os.path.abspath(sysroot))
    library, command = check_request(sysroot, argv)
    env = child_env(sysroot, library)
    try:
        enter_namespace(sysroot)
    except OSError as err:
        raise PlatformError(f"sim exec could not set up its mount namespace ({err.strerror or err})",
                            "Run it as root on a kernel with mount namespaces (in a container: "
                            "one allowed to mount, e.g. with CAP_SYS_ADMIN).") from None
    try:
        os.execve(command, argv, env)
    except OSError as err:
        raise UsageError(f"cannot run {command}: {err.strerror or err}",
                         "Give a command this user may execute.") from None
