"""What a NIC lives through, end to end, with the emulator in its own process (DaemonStack).

Each test injects one fault into a running guest tap netns <-> `hvuio up` <-> emulator daemon
path and asserts what the user sees (exit code, the one-sentence message and its hint, the
counters) and what is left behind afterwards: link flaps in the middle of a transfer, the host
killed, the host stopped and resumed, a rescind, `up` killed and started again. Needs root,
/dev/net/tun and iproute2 (skipped with the reason otherwise). Waits are bounded; nothing asserts
on elapsed time.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.cli import hvuio_main
from support.daemon_stack import HOST_IP, DaemonStack
from support.namespaces import netns_skip_reason
from support.waiting import wait_until

from hvuio.demo import ping, tcp_transfer


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[DaemonStack]:
    reason = netns_skip_reason()
    if reason is not None:
        pytest.skip(reason)
    with DaemonStack(tmp_path) as s:
        yield s


def counters(s: DaemonStack) -> dict[str, Any]:
    [path] = s.status_files()
    return dict(json.loads(path.read_text()).get("counters", {}))


def test_link_flaps_in_the_middle_of_a_transfer_lose_no_byte(stack: DaemonStack) -> None:
    result: dict[str, Any] = {}
    sender = threading.Thread(target=lambda: result.update(
        tcp_transfer(stack.guest_ns, stack.host_ns, HOST_IP, 48 << 20, seed=3)))
    sender.start()
    for _ in range(4):
        time.sleep(0.3)
        assert hvuio_main("--sysroot", str(stack.root), "sim", "link", stack.guid, "down").returncode == 0
        time.sleep(0.3)
        assert hvuio_main("--sysroot", str(stack.root), "sim", "link", stack.guid, "up").returncode == 0
    sender.join(timeout=120)
    assert result.get("exact") is True, result
    assert stack.up is not None and stack.up.poll() is None


def test_a_killed_host_ends_up_with_a_message_that_names_it(stack: DaemonStack) -> None:
    stack.signal_daemon(signal.SIGKILL)
    code, err = stack.wait_up_exit()
    assert code != 0 and "Traceback" not in err
    assert "emulat" in err.lower() and "re-run 'hvuio" not in err, err
    assert "sim start" in err  # the hint: start the emulator again
    assert stack.status_files() == []
    # `sim stop` of the dead daemon cleans its tree and namespace up (and says so)
    stopped = hvuio_main("--sysroot", str(stack.root), "sim", "stop")
    assert stopped.returncode == 0, stopped.stderr
    assert not (stack.root / "run/hvuio-sim").exists()


def test_a_stopped_host_is_reported_as_a_stall_and_traffic_resumes(stack: DaemonStack) -> None:
    assert ping(stack.guest_ns, HOST_IP, count=2)["received"] == 2
    stack.signal_daemon(signal.SIGSTOP)
    try:
        ping(stack.guest_ns, HOST_IP, count=20, interval=0.2)  # sends that the host never completes
        wait_until(lambda: counters(stack).get("host_stalls", 0) >= 1, "the stall to be counted", timeout=15)
    finally:
        stack.signal_daemon(signal.SIGCONT)
    wait_until(lambda: ping(stack.guest_ns, HOST_IP, count=1)["received"] == 1, "traffic after SIGCONT", timeout=20)
    wait_until(lambda: counters(stack).get("host_stalled", 1) == 0, "the stall to end", timeout=10)
    code, err = stack.stop_up()
    assert code == 0, err
    assert "has not completed" in err and "resumed" in err, err  # logged when it began and ended


def test_a_rescind_ends_up_and_leaves_no_binding_behind(stack: DaemonStack) -> None:
    assert hvuio_main("--sysroot", str(stack.root), "sim", "rescind", stack.guid).returncode == 0
    code, err = stack.wait_up_exit()
    assert code == 10 and "Traceback" not in err
    assert "removed the device" in err, err
    assert stack.status_files() == []
    left = sorted(p.name for p in (stack.root / "run/hvuio").rglob("*") if p.is_file())
    assert left == [], left


def test_up_killed_and_started_again(stack: DaemonStack) -> None:
    code, _ = stack.stop_up(signal.SIGKILL)
    assert code == -signal.SIGKILL
    assert len(stack.status_files()) == 1  # nobody was there to remove it
    listed = hvuio_main("--sysroot", str(stack.root), "status")
    assert "No running 'hvuio up'" in listed.stdout
    assert "stale" in listed.stdout and stack.status_files() == []  # status sweeps it and says so
    stack.start_up()
    assert ping(stack.guest_ns, HOST_IP, count=3)["received"] == 3
    assert stack.up is not None
    [fresh] = stack.status_files()
    assert json.loads(fresh.read_text())["pid"] == stack.up.pid
