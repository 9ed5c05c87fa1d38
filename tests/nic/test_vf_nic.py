"""The NIC and its accelerated-networking VF against the emulator without a VF: SR-IOV offered only
when asked, and hostile VF messages (an association whose serial matches no device, a host switch
while the guest has no VF, values outside the protocol) handed to the NIC in the thread that reads
the ring, as a host would send them. They are counted and change nothing: the NIC stays on the
synthetic path and keeps carrying traffic. Needs root and namespaces; waits are bounded."""

from __future__ import annotations

import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.engine_stack import HOST_IP, Running, running_engine
from support.namespaces import NetnsFactory

from hvuio.demo import ping
from hvuio.proto.events import Inbound, InboundKind
from hvuio.wire import nvsp as wn

VF_TID = 0x8000000000000000  # OpenVMM's transaction id of the association
SWITCH_TID = 0x8000000000000001


@pytest.fixture
def vf_running(netns_factory: NetnsFactory, tmp_path: Path) -> Iterator[Running]:
    with running_engine(netns_factory, tmp_path, vf=True, vf_wait=0.5) as r:
        yield r


def inject(r: Running, payload: bytes, tid: int) -> None:
    """`payload` as an in-band packet from the host, processed in the primary's pump thread."""
    done = threading.Event()

    def go() -> None:
        try:
            r.nic.process([Inbound(InboundKind.INBAND, tid, payload + bytes(40 - len(payload)))])
        finally:
            done.set()

    r.engine._pumps[0].call_soon(go)
    assert done.wait(10)


def counter(r: Running, name: str) -> int:
    return r.nic.counter_snapshot().get(name, 0)


def assert_synthetic_and_working(r: Running) -> None:
    nvsp = r.env.host.nvsp(r.env.nics[0])
    assert nvsp is not None and nvsp.vf.status()["data_path"] == "synthetic"
    assert r.nic.broken is None and counter(r, "vf_switches") == 0
    assert r.nic.info is not None and r.nic.info.vf is not None and r.nic.info.vf["data_path"] == "synthetic"
    result = ping(r.guest_ns, HOST_IP, count=2)
    assert result["received"] == 2, result["output"]


def test_sriov_offered_with_vf(vf_running: Running) -> None:
    nvsp = vf_running.env.host.nvsp(vf_running.env.nics[0])
    assert nvsp is not None and nvsp.vf.guest_allowed


def test_sriov_not_offered_without_vf(running: Running) -> None:
    nvsp = running.env.host.nvsp(running.env.nics[0])
    assert nvsp is not None and not nvsp.vf.guest_allowed
    assert running.nic.info is not None and running.nic.info.vf is None


def test_association_whose_serial_matches_no_device_keeps_the_synthetic_path(vf_running: Running) -> None:
    r = vf_running
    inject(r, struct.pack("<III", wn.NvspType.SEND_VF_ASSOCIATION, 1, 0xDEADBEEF), VF_TID)
    assert r.env.host.wait_for(lambda: counter(r, "vf_not_found") == 1, timeout=10)
    assert counter(r, "vf_associations") == 1 and r.nic.info is not None and r.nic.info.vf is not None
    assert r.nic.info.vf["serial"] == 0xDEADBEEF and r.nic.info.vf["netdev"] is None
    assert_synthetic_and_working(r)


def test_switch_without_a_vf_and_values_outside_the_protocol_change_nothing(vf_running: Running) -> None:
    r = vf_running
    inject(r, struct.pack("<II", wn.NvspType.SWITCH_DATA_PATH, 0), SWITCH_TID)   # back to synthetic: no VF
    inject(r, struct.pack("<II", wn.NvspType.SWITCH_DATA_PATH, 1), SWITCH_TID)   # "to the VF": no host does that
    inject(r, struct.pack("<II", wn.NvspType.SWITCH_DATA_PATH, 9), SWITCH_TID)
    inject(r, struct.pack("<III", wn.NvspType.SEND_VF_ASSOCIATION, 3, 1), VF_TID)
    assert counter(r, "vf_host_switches_ignored") == 2 and counter(r, "vf_messages_ignored") == 2
    assert counter(r, "vf_associations") == 0 and counter(r, "vf_errors") == 0
    assert_synthetic_and_working(r)
