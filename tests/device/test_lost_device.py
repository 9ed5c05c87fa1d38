"""What a lost device means, per platform (hvuio.device.platform `explain_loss`): on a real kernel
a rescind; in the emulator's tree a rescind while the emulator's daemon runs (it holds the lock on
its pid file) or no daemon serves the tree (an emulator inside the test process), and
EmulatorGoneError (naming the emulator, with the hint to start it again) once the daemon is gone:
its lock is free, or its tree was torn down."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from hvuio.device import platform as P
from hvuio.device.bind import bind_device
from hvuio.device.sysfs import VmbusDevice
from hvuio.device.uio import UioHandle
from hvuio.errors import EmulatorGoneError, HvuioError, RescindedError
from hvuio.sim import daemon
from hvuio.sim.kernel.bus import SimKernel

from support.cli import INTERNAL


def _dead_daemon(sysroot: Path) -> None:
    """The pid file a killed daemon leaves: its pid inside, nobody holding its lock."""
    os.close(daemon.hold_pid_file(sysroot))


def _assert_gone(err: HvuioError, sysroot: Path, pid: int | None) -> None:
    assert isinstance(err, EmulatorGoneError)
    assert err.exit_code not in (0, RescindedError.exit_code, INTERNAL)
    assert "emulated host" in err.message and "gone" in err.message
    assert (f"pid {pid}" in err.message) is (pid is not None)
    assert f"--sysroot {sysroot} sim start" in err.hint and "sim stop" in err.hint
    assert "re-run 'hvuio bind'" not in err.hint


def test_a_real_kernel_loses_a_device_to_a_rescind(tmp_path: Path) -> None:
    rescinded = RescindedError("uio0: the host rescinded the device (Input/output error)")
    assert P.RealPlatform(tmp_path).explain_loss("uio0", rescinded) is rescinded


def test_a_running_daemon_that_removed_the_device_rescinded_it(tmp_path: Path) -> None:
    (tmp_path / P.MARKER).touch()
    lock = daemon.hold_pid_file(tmp_path)
    try:
        assert P.emulator_state(tmp_path) == (True, os.getpid())
        rescinded = RescindedError("uio0: the host rescinded the device (end of file)")
        assert P.TreePlatform(tmp_path).explain_loss("uio0", rescinded) is rescinded  # no dev/uio0
    finally:
        os.close(lock)


def test_a_tree_without_a_daemon_loses_devices_to_rescinds(tmp_path: Path) -> None:
    (tmp_path / P.MARKER).touch()
    assert P.emulator_state(tmp_path) == (None, None)
    rescinded = RescindedError("uio0: the host rescinded the device (end of file)")
    assert P.TreePlatform(tmp_path).explain_loss("uio0", rescinded) is rescinded


def test_a_free_daemon_lock_means_the_emulator_is_gone(tmp_path: Path) -> None:
    (tmp_path / P.MARKER).touch()
    _dead_daemon(tmp_path)
    assert P.emulator_state(tmp_path) == (False, os.getpid())
    err = P.TreePlatform(tmp_path).explain_loss("uio0", RescindedError("uio0: end of file"))
    _assert_gone(err, tmp_path, os.getpid())
    assert "uio0" in err.message


def test_a_torn_down_tree_means_the_emulator_is_gone(tmp_path: Path) -> None:
    assert P.emulator_state(tmp_path) == (False, None)
    err = P.TreePlatform(tmp_path).explain_loss("uio0", RescindedError("uio0: end of file"))
    _assert_gone(err, tmp_path, None)


def test_the_interrupt_fd_of_a_dead_emulator_raises_emulator_gone(tmp_path: Path) -> None:
    with SimKernel(tmp_path, "6.17", nics=1) as k:
        nic = k.nics[0]
        bind_device(tmp_path, nic.guid)
        with UioHandle.open(VmbusDevice.from_uuid(tmp_path, nic.guid)) as h:
            _dead_daemon(tmp_path)  # the EOF below now reads as the emulator's death
            k.rescind(nic)
            with pytest.raises(EmulatorGoneError) as gone:
                h.interrupt.wait(2)
            _assert_gone(gone.value, tmp_path, os.getpid())


def test_a_connect_refused_by_a_dead_emulator_raises_emulator_gone(tmp_path: Path) -> None:
    (tmp_path / P.MARKER).touch()
    (tmp_path / "dev").mkdir()
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as orphan:
        orphan.bind(str(tmp_path / "dev" / "uio0"))  # bound, never listening: what a killed daemon leaves
        platform = P.TreePlatform(tmp_path)
        with pytest.raises(ConnectionRefusedError):  # no daemon serves the tree: a plain OSError
            platform.open_interrupt("uio0")
        _dead_daemon(tmp_path)
        with pytest.raises(EmulatorGoneError) as gone:
            platform.open_interrupt("uio0")
        _assert_gone(gone.value, tmp_path, os.getpid())
