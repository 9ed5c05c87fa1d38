"""What `hvuio up` cleans up after a peer that died or went away (against the emulator, no root):
the status records of `up` processes no longer running are swept when `up` starts, and a NIC that
ends rescinded forgets its device's binding (journal and lock) once the device left sysfs."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hvuio.device.bind import journal_path, lock_path
from hvuio.errors import RescindedError
from hvuio.nic import Nic
from hvuio.sim.vsp.host import SimEnvironment
from hvuio.status import STATUS_DIR
from hvuio.up import UpOptions, run_up

from support.bound_sim import bound_sim


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[SimEnvironment]:
    with bound_sim(tmp_path) as env:
        yield env


def test_up_sweeps_the_records_of_dead_ups_at_start(sim: SimEnvironment) -> None:
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True).stdout)
    stale = sim.sysroot / STATUS_DIR / "other.json"
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_text(json.dumps({"pid": dead, "device": "other"}))
    run_up(sim.sysroot, UpOptions(device=sim.nics[0].guid, once=True), lambda _event: None)
    assert not stale.exists()


def test_a_rescinded_nic_forgets_its_binding(sim: SimEnvironment) -> None:
    dev = sim.nics[0]
    journal, lock = journal_path(sim.sysroot, dev.guid), lock_path(sim.sysroot, dev.guid)
    nic = Nic(sim.sysroot, dev.guid)
    try:
        nic.open()
        assert journal.exists() and lock.exists()
        sim.host.rescind(dev)
        with pytest.raises(RescindedError):
            for _ in range(100):  # bounded: the EOF arrives within a few polls
                nic.poll(0.2)
    finally:
        nic.close()
    assert not journal.exists() and not lock.exists()


def test_a_nic_closed_normally_keeps_its_binding(sim: SimEnvironment) -> None:
    dev = sim.nics[0]
    with Nic(sim.sysroot, dev.guid) as nic:
        nic.open()
    assert journal_path(sim.sysroot, dev.guid).exists()
