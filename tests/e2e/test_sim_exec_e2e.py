"""hvuio's own real-VM code path, unchanged, against the emulator under `hvuio sim exec`.

The bind and `hvuio up` run without --sysroot (RealPlatform: /sys/bus/vmbus, /sys/class/uio,
open("/dev/uioN") and mmap by offset), inside `sim exec`'s mount namespace over a daemon started
with `sim start --wire`; `up` uses --no-gpa (docs/EMULATOR.md, "Running other drivers: sim
exec"). Traffic must pass both ways between the guest namespace and the emulated host's, and the
status file `up` writes to /run/hvuio lands in the tree. Needs root, /dev/net/tun, iproute2 and
mount namespaces (skipped with the reason otherwise).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.cli import hvuio_main
from support.daemon_stack import HOST_IP, DaemonStack, assert_rescind_ends_up, daemon_stack

from hvuio.demo import ping, tcp_transfer
from hvuio.netdev import netns


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[DaemonStack]:
    with daemon_stack(tmp_path, via_exec=True) as s:
        yield s


def test_hvuio_up_unchanged_under_exec_passes_traffic(stack: DaemonStack) -> None:
    assert ping(stack.guest_ns, HOST_IP, count=3)["received"] == 3
    result = tcp_transfer(stack.guest_ns, stack.host_ns, HOST_IP, 4 << 20, seed=5)
    assert result.get("exact") is True, result
    ready = next(e for e in stack.events if e.get("event") == "ready")
    assert ready["nic"]["uio"] == "uio0"
    assert ready["nic"]["tx_path"].startswith("send buffer"), ready


def test_up_under_exec_writes_its_status_into_the_tree(stack: DaemonStack) -> None:
    [path] = stack.status_files()
    assert json.loads(path.read_text())["device"] == stack.guid
    status = hvuio_main("--sysroot", str(stack.root), "status", "--json")
    assert status.returncode == 0, status.stderr
    assert stack.guid in status.stdout
    inside = hvuio_main("--sysroot", str(stack.root), "sim", "exec", "--",
                        *netns.python_argv("-m", "hvuio", "status", "--json"))   # no --sysroot inside
    assert inside.returncode == 0, inside.stderr
    assert stack.guid in inside.stdout


def test_sim_status_sees_the_nic_opened_by_the_process_under_exec(stack: DaemonStack) -> None:
    status = hvuio_main("--sysroot", str(stack.root), "sim", "status", "--json")
    assert status.returncode == 0, status.stderr
    device = json.loads(status.stdout)[stack.guid]
    assert device["open"] and device["uio"] == "uio0", device


def test_a_rescind_reaches_the_process_under_exec(stack: DaemonStack) -> None:
    """The host's rescind is EOF on the uio socket behind /dev/uio0: `up` on its real-VM path
    ends as on a rescinded VM, and its journal and lock under /run/hvuio (the tree's) are gone."""
    assert_rescind_ends_up(stack)
