"""Files and directories that hvuio makes as root, safe from other local users.

hvuio runs as root and writes state (bind journals, device locks, status records under
`/run/hvuio`) and, for the emulator, a whole tree under a sysroot. A directory that another user
can write lets that user plant symlinks or pre-create files, and root then writes wherever they
point. The rules here close that:

* A trusted directory (`open_dir`, `make_dirs`, `check_dir`) is reached from `/` one component
  at a time with `O_NOFOLLOW`, so no symlink is ever followed on the way. Every component must be
  a real directory owned by root or by the caller. An ancestor may be writable by group or others
  only when it is sticky and owned by root (as `/tmp`): other users then cannot move or remove
  what lives in it. The directory itself must not be writable by group or others at all. These
  are sshd's StrictModes rules. A missing component is created with the mode asked for, set
  exactly whatever the umask.
* A file is created relative to the fd of its trusted directory with `O_NOFOLLOW`, either
  exclusively (`O_EXCL`: a name someone planted is an error, never followed) or as a private
  temporary name renamed over the old one (`write_file`). Modes are explicit.

What must not live here: what the files mean (journals are `device/bind.py`, status records
`status.py`, the emulator's tree `sim/kernel/tree.py`). Both the guest and the emulator use this module:
it imports nothing of either.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from hvuio.errors import UnsafePathError

_DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS: Final = os.O_NOFOLLOW | os.O_CLOEXEC


def _parts(path: Path | str) -> list[str]:
    p = Path(os.path.abspath(path))   # abspath folds '..' textually: no link is looked at
    return [part for part in p.parts[1:] if part]


def _check(fd: int, where: str, *, last: bool, euid: int) -> None:
    st = os.fstat(fd)
    if st.st_uid not in (0, euid):
        raise UnsafePathError(f"{where} is owned by uid {st.st_uid}, not by root or by us (uid {euid})")
    writable = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    if writable and (last or not (st.st_mode & stat.S_ISVTX and st.st_uid == 0)):
        who = " and ".join(w for bit, w in ((stat.S_IWGRP, "group"), (stat.S_IWOTH, "others")) if writable & bit)
        raise UnsafePathError(f"{where} is writable by {who} (mode {stat.S_IMODE(st.st_mode):04o})")


def open_dir(path: Path | str, *, create: int | None = None) -> int:
    """An fd of the trusted directory `path` (see the module docstring); `create`: the mode of
    each missing component to make. The caller closes the fd. UnsafePathError when a component is
    a symlink, not a directory, foreign or writable by others."""
    euid = os.geteuid()
    fd = os.open("/", _DIR_FLAGS)
    parts = _parts(path)
    where = "/"
    try:
        _check(fd, where, last=not parts, euid=euid)
        for i, part in enumerate(parts):
            where = os.path.join(where, part)
            try:
                nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if create is None:
                    raise
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, create, dir_fd=fd)
                nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
                if os.fstat(nfd).st_uid == euid:
                    os.fchmod(nfd, create)
            except OSError as err:
                if err.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise UnsafePathError(f"{where} is a symlink or not a directory") from None
                raise
            os.close(fd)
            fd = nfd
            _check(fd, where, last=i == len(parts) - 1, euid=euid)
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextlib.contextmanager
def trusted_dir(path: Path | str, *, create: int | None = None) -> Iterator[int]:
    """`open_dir` as a context manager that closes the fd."""
    fd = open_dir(path, create=create)
    try:
        yield fd
    finally:
        os.close(fd)


def check_dir(path: Path | str) -> None:
    """UnsafePathError unless `path` is a trusted directory; FileNotFoundError when it is missing."""
    os.close(open_dir(path))


def make_dirs(path: Path | str, mode: int) -> None:
    """Make the trusted directory `path` and its missing parents with `mode` (exactly)."""
    os.close(open_dir(path, create=mode))


def write_file(path: Path | str, data: bytes, mode: int, *, create_dirs: int | None = None) -> None:
    """Replace `path` with `data`: a private temporary name (O_EXCL|O_NOFOLLOW) in its trusted
    directory, mode set exactly, then renamed over the old name."""
    p = Path(path)
    tmp = f".{p.name}.{os.getpid()}.tmp"
    with trusted_dir(p.parent, create=create_dirs) as dfd:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=dfd)   # a leftover of a killed writer of this pid
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _FILE_FLAGS, mode, dir_fd=dfd)
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        os.replace(tmp, p.name, src_dir_fd=dfd, dst_dir_fd=dfd)


def open_file(path: Path | str, flags: int, mode: int, *, create_dirs: int | None = None) -> int:
    """os.open of `path` in its trusted directory with O_NOFOLLOW; a created file gets `mode`
    exactly. A symlink at `path` is UnsafePathError, never followed."""
    p = Path(path)
    with trusted_dir(p.parent, create=create_dirs) as dfd:
        try:
            fd = os.open(p.name, flags | _FILE_FLAGS, mode, dir_fd=dfd)
        except OSError as err:
            if err.errno == errno.ELOOP:
                raise UnsafePathError(f"{p} is a symlink") from None
            raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            raise UnsafePathError(f"{p} is not a plain file with one name")
        if st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) != mode:
            os.fchmod(fd, mode)
    except BaseException:
        os.close(fd)
        raise
    return fd


def unlink(path: Path | str) -> None:
    """Remove `path` from its trusted directory (missing is fine)."""
    p = Path(path)
    try:
        with trusted_dir(p.parent) as dfd:
            os.unlink(p.name, dir_fd=dfd)
    except FileNotFoundError:
        pass
