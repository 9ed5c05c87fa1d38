"""On a real Hyper-V / Azure VM: bind a secondary synthetic NIC, bring it up through the real
uio_hv_generic device, bring it up again (re-openable), give it back to hv_netvsc.

These run only where they can mean something: a Hyper-V guest (/sys/bus/vmbus), as root, with
HVUIO_TEST_NIC naming a NIC the test may take away from the kernel (never the one holding the
default route or your SSH session: bind refuses those anyway). Run them with
`sudo HVUIO_TEST_NIC=eth1 scripts/vm_smoke.sh`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from support.cli import hvuio_module as hvuio

pytestmark = pytest.mark.real_vm

NIC = os.environ.get("HVUIO_TEST_NIC", "")


def _skip_reason() -> str | None:
    if not Path("/sys/bus/vmbus/devices").is_dir():
        return "not a Hyper-V guest (/sys/bus/vmbus is missing); the emulator tests cover this machine"
    if os.geteuid() != 0:
        return "needs root to bind a VMBus device"
    if not NIC:
        return "set HVUIO_TEST_NIC to a secondary synthetic NIC that the test may take from hv_netvsc"
    return None


REASON = _skip_reason()
if REASON is not None:
    pytestmark = [pytest.mark.real_vm, pytest.mark.skip(reason=REASON)]


def test_doctor_recognises_hyperv() -> None:
    proc = hvuio("doctor", "--json")
    report = json.loads(proc.stdout)
    checks = {f["check"]: f for f in report["findings"]}
    assert checks["hypervisor"]["status"] == "ok", checks["hypervisor"]
    assert checks["vmbus"]["status"] == "ok", checks["vmbus"]


def test_bind_up_twice_and_unbind() -> None:
    mac = Path(f"/sys/class/net/{NIC}/address").read_text().strip()
    guid = Path(f"/sys/class/net/{NIC}/device").resolve().name
    bound = hvuio("bind", NIC)
    assert bound.returncode == 0, bound.stderr
    try:
        for _ in range(2):  # the second bring-up proves teardown left the device re-openable
            up = hvuio("up", guid, "--once", "--json")
            assert up.returncode == 0, up.stderr
            ready = json.loads(up.stdout.splitlines()[0])  # JSON lines: "ready", then "down"
            assert ready["event"] == "ready", up.stdout
            info = ready["nic"]
            assert info["nvsp"] is not None and info["ndis"] is not None
            assert info["mac"].lower() == mac.lower()
            assert info["mtu"] and info["mtu"] >= 576
            assert info["recv_section_count"] and info["send_section_size"]
    finally:
        back = hvuio("unbind", guid)
    assert back.returncode == 0, back.stderr
    assert Path(f"/sys/bus/vmbus/devices/{guid}/driver").resolve().name == "hv_netvsc"


def test_control_messages_go_gpa_direct_on_the_real_host() -> None:
    """With huge pages reserved, every RNDIS control message of the bring-up travels GPA-direct
    from hugetlb memory (page numbers from /proc/self/pagemap), and the real host answers them
    (no fallback to send sections). Without huge pages doctor says why and the test says so."""
    doctor = json.loads(hvuio("doctor", "--json").stdout)
    tx = doctor.get("tx_path", {})
    if not tx.get("usable"):
        pytest.skip(f"no guest memory for GPA-direct here: {tx.get('reason')} ({tx.get('hint')})")
    guid = Path(f"/sys/class/net/{NIC}/device").resolve().name
    bound = hvuio("bind", NIC)
    assert bound.returncode == 0, bound.stderr
    try:
        up = hvuio("up", guid, "--once", "--json")
        assert up.returncode == 0, up.stderr
        events = [json.loads(line) for line in up.stdout.splitlines() if line.startswith("{")]
        info = next(e["nic"] for e in events if e["event"] == "ready")
        assert info["tx_path"].startswith("gpa-direct"), info
        down = next(e for e in events if e["event"] == "down")
        assert down["counters"]["channel_control_gpa"] > 0 and down["counters"]["control_fallbacks"] == 0, down
    finally:
        back = hvuio("unbind", guid)
    assert back.returncode == 0, back.stderr
