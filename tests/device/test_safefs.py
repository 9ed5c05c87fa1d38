"""hvuio.safefs: the StrictModes walk, exact modes whatever the umask, no symlink followed."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from hvuio import safefs
from hvuio.errors import UnsafePathError

NOBODY = 65534
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make files another user owns")


@pytest.fixture
def umask0() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def mode(p: Path) -> int:
    return stat.S_IMODE(os.lstat(p).st_mode)


def test_created_directories_and_files_have_exact_modes_under_umask_0(tmp_path: Path, umask0: None) -> None:
    safefs.make_dirs(tmp_path / "a" / "b", 0o700)
    assert mode(tmp_path / "a") == 0o700 and mode(tmp_path / "a" / "b") == 0o700
    safefs.write_file(tmp_path / "a" / "c" / "f", b"x", 0o644, create_dirs=0o755)
    assert mode(tmp_path / "a" / "c") == 0o755 and mode(tmp_path / "a" / "c" / "f") == 0o644
    fd = safefs.open_file(tmp_path / "a" / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)
    assert mode(tmp_path / "a" / "lock") == 0o600


def test_a_symlink_on_the_way_is_refused(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(tmp_path / "real")
    for call in (lambda: safefs.check_dir(tmp_path / "link"),
                 lambda: safefs.make_dirs(tmp_path / "link" / "sub", 0o700),
                 lambda: safefs.write_file(tmp_path / "link" / "f", b"x", 0o600)):
        with pytest.raises(UnsafePathError, match="symlink"):
            call()
    assert list((tmp_path / "real").iterdir()) == []


def test_a_symlink_as_the_file_is_never_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    (tmp_path / "d").mkdir(mode=0o700)
    (tmp_path / "d" / "lock").symlink_to(victim)
    with pytest.raises(UnsafePathError, match="symlink"):
        safefs.open_file(tmp_path / "d" / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    (tmp_path / "d" / "rec").symlink_to(victim)
    safefs.write_file(tmp_path / "d" / "rec", b"new", 0o644)    # replaces the link itself
    assert victim.read_bytes() == b"keep" and (tmp_path / "d" / "rec").read_bytes() == b"new"
    assert not (tmp_path / "d" / "rec").is_symlink()


@pytest.mark.parametrize("bits, ok", [(0o755, True), (0o775, False), (0o757, False), (0o1777, False)])
def test_the_directory_itself_must_not_be_writable_by_others(tmp_path: Path, bits: int, ok: bool) -> None:
    d = tmp_path / "d"
    d.mkdir()
    os.chmod(d, bits)
    if ok:
        safefs.check_dir(d)
    else:
        with pytest.raises(UnsafePathError, match="writable by"):
            safefs.check_dir(d)


@needs_root
@pytest.mark.parametrize("owner, bits, ok", [
    (0, 0o1777, True),          # /tmp: sticky and root's, so others cannot move our entries
    (0, 0o777, False),          # world-writable without the sticky bit
    (NOBODY, 0o1777, False),    # sticky, but its owner may remove our entries
    (NOBODY, 0o755, False),     # another user's directory
])
def test_ancestor_rules(tmp_path: Path, owner: int, bits: int, ok: bool) -> None:
    parent = tmp_path / "p"
    parent.mkdir()
    os.chown(parent, owner, owner)
    os.chmod(parent, bits)
    child = parent / "c"
    child.mkdir(mode=0o700)
    if ok:
        safefs.check_dir(child)
    else:
        with pytest.raises(UnsafePathError):
            safefs.check_dir(child)


@needs_root
def test_another_users_directory_is_refused_as_the_target(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir(mode=0o755)
    os.chown(d, NOBODY, NOBODY)
    with pytest.raises(UnsafePathError, match=f"owned by uid {NOBODY}"):
        safefs.make_dirs(d, 0o700)


def test_missing_directory_without_create_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        safefs.check_dir(tmp_path / "absent")
    safefs.unlink(tmp_path / "absent" / "f")        # missing is fine
