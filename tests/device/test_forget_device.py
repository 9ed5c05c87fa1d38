"""A binding ends with its device (hvuio.device.bind): once the host removed a bound NIC and it
left sysfs, `forget_device` removes its journal and its lock; a journal left by a removed device
does not stand for an interface any more; `claim_device` never keeps a lock on a removed file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hvuio.device import bind as B
from hvuio.device.sysfs import VmbusDevice
from hvuio.errors import DeviceNotFoundError
from hvuio.sim.kernel.bus import SimKernel

from support.cli import run_main


def test_a_removed_device_forgets_its_journal_and_lock(tmp_path: Path) -> None:
    with SimKernel(tmp_path, "6.17", nics=1) as k:
        nic = k.nics[0]
        B.bind_device(tmp_path, "hveth0")
        dev = VmbusDevice.from_uuid(tmp_path, nic.guid)
        lock = B.claim_device(dev)
        try:
            assert not B.forget_device(dev)  # still there: nothing is touched
            assert B.journal_path(tmp_path, nic.guid).exists() and B.lock_path(tmp_path, nic.guid).exists()
            k.rescind(nic)
            assert B.forget_device(dev)
        finally:
            os.close(lock)
        assert not B.journal_path(tmp_path, nic.guid).exists()
        assert not B.lock_path(tmp_path, nic.guid).exists()
        assert B.forget_device(dev)  # again: nothing left, fine


def test_a_journal_of_a_removed_device_names_no_interface(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    with SimKernel(tmp_path, "6.17", nics=2) as k:
        nic, other = k.nics
        B.bind_device(tmp_path, "hveth0")
        k.rescind(nic)  # nobody ran `up`: the journal stays
        assert B.read_journal(tmp_path, nic.guid) is not None
        with pytest.raises(DeviceNotFoundError, match="hveth0"):
            B.resolve_device(tmp_path, "hveth0")
        code, out, err = run_main(capsys, "--sysroot", str(tmp_path), "bind", "hveth0")
        assert code == DeviceNotFoundError.exit_code and "interface 'hveth0'" in err and nic.guid not in err
        code, out, err = run_main(capsys, "--sysroot", str(tmp_path), "list")
        assert code == 0 and other.guid in out and nic.guid not in out
        # offered again: a fresh device, bound and given back as if the old journal never was
        k.offer(nic.class_id, ifname="hveth2", guid=nic.guid)
        code, out, err = run_main(capsys, "--sysroot", str(tmp_path), "bind", "hveth2")
        assert code == 0 and "bound to uio_hv_generic" in out, err
        assert B.read_journal(tmp_path, nic.guid)["netdevs"] == ["hveth2"]  # type: ignore[index]
        code, out, err = run_main(capsys, "--sysroot", str(tmp_path), "unbind", "hveth2")
        assert code == 0 and "restored to hv_netvsc (interface hveth2)" in out, err


def test_a_lock_file_removed_while_it_is_taken_is_taken_again(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    with SimKernel(tmp_path, "6.17", nics=1) as k:
        dev = VmbusDevice.from_uuid(tmp_path, k.nics[0].guid)
        opened: list[int] = []
        real_open = B.open_file

        def open_then_removed(path: Path, *args: object, **kwargs: object) -> int:
            fd = real_open(path, *args, **kwargs)  # type: ignore[arg-type]
            if not opened:
                os.unlink(path)  # forget_device ran between this open and the flock
            opened.append(fd)
            return fd

        monkeypatch.setattr(B, "open_file", open_then_removed)
        fd = B.claim_device(dev)
        try:
            assert len(opened) == 2 and fd == opened[1]
            held, named = os.fstat(fd), B.lock_path(tmp_path, dev.guid).stat()
            assert (held.st_dev, held.st_ino) == (named.st_dev, named.st_ino)
        finally:
            os.close(fd)
