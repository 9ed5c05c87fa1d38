"""What a user sees when sysfs is damaged or they ask for something that cannot be done.

The standard: an error a user can meet prints "Error: <one sentence>" and
"Hint: <what to do>" and exits non-zero, with no traceback. `hvuio.cli.main` turns *any* stray
exception into "internal error" with exit code 70, so "no traceback" alone proves little; these
tests also require that the exit code is not 70 and that no "internal error" was printed, i.e. the
failure was recognised and named (`assert_user_error` in tests/support/cli.py).

The trees are real emulator trees (SimEnvironment), corrupted file by file after binding; the CLI
runs as a separate process (`python -m hvuio --sysroot ...`) so stderr is exactly what a user
gets. The emulated kernel and host run in this test process and serve that child.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hvuio.device.bind import bind_device
from hvuio.device.sysfs import VmbusDevice
from hvuio.errors import (DeviceBusyError, DeviceNotFoundError, HostError, NotRootError, SysfsError,
                          WrongDeviceError)
from hvuio.device.platform import TreePlatform
from hvuio.sim.host import profile as hp
from hvuio.sim.vsp.host import SimEnvironment

from support.cli import assert_user_error, child_env, hvuio_module

# The emulator writes its sysfs attributes read-only, as the kernel does; only root (who ignores
# file modes) can corrupt them in place.
needs_root_to_corrupt = pytest.mark.skipif(os.geteuid() != 0,
                                           reason="needs root to overwrite the read-only sysfs files it corrupts")


def hvuio(sysroot: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return hvuio_module("--sysroot", str(sysroot), *args, env=child_env())


@pytest.fixture
def bound(tmp_path: Path) -> Iterator[tuple[SimEnvironment, VmbusDevice]]:
    with SimEnvironment(tmp_path, profile="6.17", nics=1) as env:
        guid = env.nics[0].guid
        bind_device(env.sysroot, guid, force=True)
        yield env, VmbusDevice.from_uuid(env.sysroot, guid)


def _map_file(name: str, index: int) -> Callable[[VmbusDevice], Path]:
    def where(dev: VmbusDevice) -> Path:
        assert dev.uio is not None
        return dev.uio.path / "maps" / f"map{index}" / name
    return where


def _dev_file(name: str) -> Callable[[VmbusDevice], Path]:
    return lambda dev: dev.path / name


# (file to corrupt, text written into it): each is a value the kernel never writes
CORRUPT = {
    "map0-size-negative": (_map_file("size", 0), "-8192\n"),
    "map0-size-odd-pages": (_map_file("size", 0), "0x3000\n"),
    "map0-size-one-page": (_map_file("size", 0), "4096\n"),
    "map0-size-not-page-multiple": (_map_file("size", 0), "0x400100\n"),
    "map3-size-huge": (_map_file("size", 3), hex(1 << 70) + "\n"),
    "map4-size-above-u32": (_map_file("size", 4), hex(1 << 33) + "\n"),
    "map1-size-garbage": (_map_file("size", 1), "lots\n"),
    "map1-name-wrong": (_map_file("name", 1), "garbage\n"),
    "map3-gpadl-octal-looking": (_map_file("name", 3), "recv:0123\n"),
    "map3-gpadl-zero": (_map_file("name", 3), "recv:0\n"),
    "map4-gpadl-above-u32": (_map_file("name", 4), "send:99999999999\n"),
    "map4-gpadl-negative": (_map_file("name", 4), "send:-5\n"),
    "map3-name-binary": (_map_file("name", 3), "recv:\udcff\n"),
    "monitor-id-200": (_dev_file("monitor_id"), "200\n"),
    "monitor-id-negative": (_dev_file("monitor_id"), "-1\n"),
    "id-garbage": (_dev_file("id"), "zz\n"),
    "id-negative": (_dev_file("id"), "-3\n"),
    "class-id-garbage": (_dev_file("class_id"), "nope\n"),
}


@needs_root_to_corrupt
@pytest.mark.parametrize("case", sorted(CORRUPT))
def test_up_on_a_corrupted_tree_names_the_file(bound: tuple[SimEnvironment, VmbusDevice], case: str) -> None:
    env, dev = bound
    where, text = CORRUPT[case]
    path = where(dev)
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    proc = hvuio(env.sysroot, "up", dev.guid, "--once")
    assert_user_error(proc)
    # the sentence names what was wrong: the file, or the map / attribute it describes
    first = proc.stderr.splitlines()[0]
    assert path.name in first or path.parent.name in first or "monitor" in first, first


@needs_root_to_corrupt
@pytest.mark.parametrize("case", sorted(CORRUPT))
def test_list_on_a_corrupted_tree_never_crashes(bound: tuple[SimEnvironment, VmbusDevice], case: str) -> None:
    env, dev = bound
    where, text = CORRUPT[case]
    where(dev).write_bytes(text.encode("utf-8", "surrogateescape"))
    proc = hvuio(env.sysroot, "-v", "list")
    if proc.returncode == 0:  # the listing may show a damaged map; it must not crash on it
        assert dev.guid in proc.stdout and "Traceback" not in proc.stderr
    else:
        assert_user_error(proc)


def test_missing_map_is_a_wrong_device(bound: tuple[SimEnvironment, VmbusDevice]) -> None:
    env, dev = bound
    assert dev.uio is not None
    shutil.rmtree(dev.uio.path / "maps" / "map2")
    assert_user_error(hvuio(env.sysroot, "up", dev.guid, "--once"), WrongDeviceError.exit_code)


def test_missing_map_size_file(bound: tuple[SimEnvironment, VmbusDevice]) -> None:
    env, dev = bound
    assert dev.uio is not None
    (dev.uio.path / "maps" / "map3" / "size").unlink()
    proc = hvuio(env.sysroot, "up", dev.guid, "--once")
    assert_user_error(proc, SysfsError.exit_code)
    assert "size" in proc.stderr


# ---- user errors ------------------------------------------------------------------------------------

def test_up_on_a_device_not_bound(tmp_path: Path) -> None:
    with SimEnvironment(tmp_path, profile="6.17", nics=1) as env:
        proc = hvuio(env.sysroot, "up", env.nics[0].guid, "--once")
        assert_user_error(proc)
        assert "not bound" in proc.stderr and f"'hvuio --sysroot {env.sysroot} bind" in proc.stderr


@pytest.mark.parametrize("name", ["00000000-0000-0000-0000-000000000000", "nosuchif0", "../../etc"])
def test_up_on_an_unknown_device(bound: tuple[SimEnvironment, VmbusDevice], name: str) -> None:
    env, _ = bound
    assert_user_error(hvuio(env.sysroot, "up", name, "--once"), DeviceNotFoundError.exit_code)


def test_up_on_a_device_that_is_not_a_nic(tmp_path: Path) -> None:
    with SimEnvironment(tmp_path, profile="6.17", nics=1) as env:
        other = next(d for d in env.kernel.devices.values() if d.class_id != env.nics[0].class_id)
        assert_user_error(hvuio(env.sysroot, "up", other.guid, "--once"), WrongDeviceError.exit_code)


def test_up_on_a_busy_device(bound: tuple[SimEnvironment, VmbusDevice]) -> None:
    """Another process holds /dev/uioN open (here: this test process, through the sim socket).

    The kernel would let a second open share the rings; hvuio must refuse instead of driving the
    same channel twice."""
    env, dev = bound
    assert dev.uio is not None
    fd = TreePlatform(env.sysroot).open_interrupt(dev.uio.name)
    try:
        assert env.host.wait_for(lambda: dev.state == 3)
        proc = hvuio(env.sysroot, "up", dev.guid, "--once")
        assert_user_error(proc, DeviceBusyError.exit_code)
        assert dev.uio.name in proc.stderr
    finally:
        os.close(fd)


def test_up_as_a_user_without_access_to_dev_uio(bound: tuple[SimEnvironment, VmbusDevice],
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """open(/dev/uioN) -> EACCES, as for a user outside the device's group. Root ignores file
    modes, so the denial is injected at the platform seam (the only place that opens the node)."""
    env, dev = bound
    from hvuio.cli import main

    def denied(self: TreePlatform, uio_name: str) -> int:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(TreePlatform, "open_interrupt", denied)
    with pytest.raises(SystemExit) as exc:
        main(["--sysroot", str(env.sysroot), "up", dev.guid, "--once"])
    err = capsys.readouterr().err
    assert exc.value.code == NotRootError.exit_code, err
    assert err.startswith("Error: ") and "\nHint: " in err and "root" in err


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: it plays another user against a tree root owns")
def test_bind_as_non_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A user who neither is root nor owns the emulator's tree cannot bind."""
    from hvuio.cli import main

    with SimEnvironment(tmp_path, profile="6.17", nics=1) as env:
        owner = (env.sysroot / "sys").stat().st_uid
        monkeypatch.setattr(os, "geteuid", lambda: owner + 4242)
        with pytest.raises(SystemExit) as exc:
            main(["--sysroot", str(env.sysroot), "bind", env.nics[0].guid, "--force"])
        err = capsys.readouterr().err
        assert exc.value.code == NotRootError.exit_code, err
        assert err.startswith("Error: ") and "\nHint: " in err


def test_host_refusing_every_version(tmp_path: Path) -> None:
    profile = hp.HostProfile(min_version=hp.w.NVSP_VERSION_61, max_version=hp.w.NVSP_VERSION_61)
    with SimEnvironment(tmp_path, profile="6.17", nics=1, host_profile=profile) as env:
        bind_device(env.sysroot, env.nics[0].guid, force=True)
        proc = hvuio(env.sysroot, "up", env.nics[0].guid, "--once", "--max-nvsp", "5")
        assert_user_error(proc, HostError.exit_code)
        assert "version" in proc.stderr


def test_host_send_sections_too_small_for_control_messages(tmp_path: Path) -> None:
    """A host may pick any send section size >= 68 bytes (Linux's minimum). Without guest memory
    (--no-gpa) RNDIS control messages travel in send sections, so a section smaller than a
    message is the host's limit, reported as such (not as a bug in hvuio); with guest memory they
    travel GPA-direct and the bring-up does not depend on the section size."""
    profile = hp.HostProfile(send_section_size=72)
    with SimEnvironment(tmp_path, profile="6.17", nics=1, host_profile=profile) as env:
        bind_device(env.sysroot, env.nics[0].guid, force=True)
        proc = hvuio(env.sysroot, "up", env.nics[0].guid, "--once", "--no-gpa")
        assert_user_error(proc, HostError.exit_code)
        assert "section" in proc.stderr
        proc = hvuio(env.sysroot, "up", env.nics[0].guid, "--once")
        assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("record", [
    {"device": "g1", "nic": {"device": "g1"}},  # a record cut short (older/newer writer)
    {"nic": None},  # no device name at all
    {"device": "g2", "counters": ["not", "a", "dict"]},
])
def test_status_with_a_malformed_status_file(tmp_path: Path, record: dict[str, object]) -> None:
    """Status files live in /run and may be written by another version of hvuio: a bad one is
    skipped or shown as unreadable, never an internal error."""
    import json

    run = tmp_path / "run" / "hvuio" / "up"
    run.mkdir(parents=True)
    (run / "x.json").write_text(json.dumps({"pid": os.getpid(), **record}))
    proc = hvuio(tmp_path, "status")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr


def test_malformed_bind_journal_is_ignored(bound: tuple[SimEnvironment, VmbusDevice]) -> None:
    """The bind journal (/run/hvuio/bind) names interfaces and drivers that become lookups and
    sysfs paths; a journal in any other shape is treated as absent."""
    import json

    from hvuio.device.bind import journal_path, read_journal

    env, dev = bound
    odd = journal_path(env.sysroot, "00000000-0000-0000-0000-00000000abcd")
    odd.write_text(json.dumps({"guid": "00000000-0000-0000-0000-00000000abcd", "netdevs": 5}))
    assert_user_error(hvuio(env.sysroot, "up", "nosuchif0", "--once"), DeviceNotFoundError.exit_code)
    path = journal_path(env.sysroot, dev.guid)
    record = json.loads(path.read_text())
    path.write_text(json.dumps({**record, "previous_driver": "../../../../escape"}))
    assert read_journal(env.sysroot, dev.guid) is None
    proc = hvuio(env.sysroot, "unbind", dev.guid)
    assert proc.returncode == 0, proc.stderr
    assert dev.driver == "hv_netvsc"
    assert not (env.sysroot / "escape").exists()


def test_up_while_another_hvuio_claims_the_device(bound: tuple[SimEnvironment, VmbusDevice]) -> None:
    """Two `hvuio up` starting together both find the channel closed; the claim (an flock the
    first one holds from before its open until its close) turns the second into DeviceBusyError."""
    import fcntl

    from hvuio.device.bind import claim_device

    env, dev = bound
    fd = claim_device(dev)
    assert fd is not None
    try:
        proc = hvuio(env.sysroot, "up", dev.guid, "--once")
        assert_user_error(proc, DeviceBusyError.exit_code)
        assert "another hvuio" in proc.stderr
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
    proc = hvuio(env.sysroot, "up", dev.guid, "--once")  # released: the device works again
    assert proc.returncode == 0, proc.stderr


def test_hints_name_only_options_that_exist() -> None:
    """Every `--option` a default hint tells the user to pass is an option of hvuio's CLI."""
    import re

    import click

    from hvuio import errors
    from hvuio.cli import cli

    def options(cmd: click.Command) -> set[str]:
        found = {o for p in cmd.params for o in getattr(p, "opts", [])}
        for sub in getattr(cmd, "commands", {}).values():
            found |= options(sub)
        return found

    known = options(cli)
    for cls in vars(errors).values():
        if isinstance(cls, type) and issubclass(cls, errors.HvuioError):
            for opt in re.findall(r"--[a-z][a-z-]*", getattr(cls, "default_hint", "") or ""):
                assert opt in known, f"{cls.__name__}'s hint names {opt}, which hvuio does not have"
