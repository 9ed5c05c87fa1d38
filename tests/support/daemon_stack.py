"""The demo's path with the emulator in its own process, so tests can kill, stop and resume it.

`DaemonStack`: `hvuio sim start --wire` (the emulated kernel + host + a host network namespace,
as a daemon), `hvuio bind`, then `hvuio up` as a child process with its tap in a guest namespace
this stack made, the guest address on it. With `via_exec=True` the bind and `up` are hvuio's
real-VM code path unchanged (no --sysroot) under `hvuio sim exec`, `up` with --no-gpa (the
emulator cannot read the pagemap page numbers hvuio's real GPA path uses). The daemon's pid
lets a test SIGKILL, SIGSTOP or SIGCONT the host; `up` can be killed and started again.
`close()` stops whatever is left and removes the namespaces; `status_files()` lists the status
files `up` left in the sysroot, `up_counters()` the counters of the one it keeps, `host_status()`
the emulated host's view of the NIC.

`daemon_stack(tmp, via_exec)` is the started stack for one test (skipped with the reason where
namespaces or `sim exec` cannot run); `assert_rescind_ends_up(stack)` checks what a host rescind
leaves: `up` ends with the rescind's exit code and message and nothing under /run/hvuio.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from hvuio.netdev import netns

from support.cli import child_env, hvuio_main, nic_guid
from support.namespaces import netns_skip_reason
from support.sim_exec import exec_skip_reason
from support.waiting import next_json_line

HOST_IP = "198.18.0.1"  # the address `sim start --wire` gives its host tap (hvuio.sim.net)
GUEST_ADDRESS = "198.18.0.2/24"
STATE = "run/hvuio-sim"
UP_START = 30.0


class DaemonStack:
    def __init__(self, tmp: Path, via_exec: bool = False) -> None:
        self.root = tmp / "sim"
        self.via_exec = via_exec
        self.cleanup = netns.Cleanup()
        self.guest_ns = ""
        self.host_ns = ""
        self.guid = ""
        self.tap = ""
        self.up: subprocess.Popen[str] | None = None
        self.events: list[dict[str, Any]] = []

    # ---- the emulator -------------------------------------------------------------------------

    def start(self) -> DaemonStack:
        started = hvuio_main("--sysroot", str(self.root), "sim", "start", "--wire")
        assert started.returncode == 0, started.stderr
        self.cleanup.push("stop the emulator", self.stop_daemon)
        self.host_ns = (self.root / STATE / "netns").read_text().strip()
        self.guid = nic_guid(self.root)
        if self.via_exec:
            bound = hvuio_main("--sysroot", str(self.root), "sim", "exec", "--",
                               *netns.python_argv("-m", "hvuio", "bind", self.guid, "--force"))
        else:
            bound = hvuio_main("--sysroot", str(self.root), "bind", self.guid, "--force")
        assert bound.returncode == 0, bound.stderr
        self.guest_ns = self.cleanup.namespace("guest", ipv6=False)
        self.start_up()
        return self

    @property
    def daemon_pid(self) -> int:
        return int((self.root / STATE / "kernel.pid").read_text())

    def signal_daemon(self, sig: int) -> None:
        os.kill(self.daemon_pid, sig)

    def stop_daemon(self) -> None:
        try:
            pid = self.daemon_pid
        except (OSError, ValueError):
            pid = 0
        if pid:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        stopped = hvuio_main("--sysroot", str(self.root), "sim", "stop")
        if stopped.returncode != 0 and pid:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            hvuio_main("--sysroot", str(self.root), "sim", "stop")

    # ---- hvuio up -----------------------------------------------------------------------------

    def start_up(self, *extra: str) -> None:
        self.tap = netns.random_ifname("g")
        up = ("up", self.guid, "--json", "--netns", self.guest_ns, "--ifname", self.tap, *extra)
        if self.via_exec:
            argv = netns.python_argv("-m", "hvuio", "--sysroot", str(self.root), "sim", "exec", "--",
                                     *netns.python_argv("-m", "hvuio", *up, "--no-gpa"))
        else:
            argv = netns.python_argv("-m", "hvuio", "--sysroot", str(self.root), *up)
        self.up = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   env=child_env(), start_new_session=True, cwd=netns.CHILD_CWD)
        self.cleanup.push("stop hvuio up", self.stop_up)
        deadline = time.monotonic() + UP_START
        while True:
            event = self.next_event(deadline - time.monotonic())
            assert event is not None, f"hvuio up did not start: {self.stop_up()[1]}"
            if event.get("event") == "datapath":
                break
        netns.add_address(self.guest_ns, self.tap, GUEST_ADDRESS)

    def next_event(self, timeout: float) -> dict[str, Any] | None:
        """The next JSON event `up` prints, or None at EOF / after `timeout` seconds."""
        proc = self.up
        assert proc is not None
        event = next_json_line(proc, timeout)
        if event is not None:
            self.events.append(event)
        return event

    def wait_up_exit(self, timeout: float = 30.0) -> tuple[int, str]:
        """(exit code, stderr) of `up` once it ends by itself."""
        proc = self.up
        assert proc is not None
        out, err = proc.communicate(timeout=timeout)
        for line in out.splitlines():
            if line.startswith("{"):
                self.events.append(json.loads(line))
        self.up = None
        return proc.returncode, err

    def stop_up(self, sig: int = signal.SIGTERM) -> tuple[int | None, str]:
        proc, self.up = self.up, None
        if proc is None:
            return None, ""
        if proc.poll() is None:
            proc.send_signal(sig)
        try:
            _, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        return proc.returncode, err

    # ---- what is left ---------------------------------------------------------------------------

    def status_files(self) -> list[Path]:
        return sorted((self.root / "run/hvuio/up").glob("*.json"))

    def up_counters(self) -> dict[str, Any]:
        """The counters in the status file of the one `up` that runs."""
        [path] = self.status_files()
        return dict(json.loads(path.read_text()).get("counters", {}))

    def host_status(self) -> dict[str, Any]:
        """The emulated host's view of the NIC (`hvuio sim status --json`)."""
        proc = hvuio_main("--sysroot", str(self.root), "sim", "status", "--json")
        assert proc.returncode == 0, proc.stderr
        return dict(json.loads(proc.stdout)[self.guid])

    def close(self) -> None:
        self.cleanup.close()

    def __enter__(self) -> DaemonStack:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def daemon_stack(tmp: Path, via_exec: bool = False) -> Iterator[DaemonStack]:
    """A started DaemonStack, closed afterwards; skips the test where it cannot run."""
    reason = netns_skip_reason() or (exec_skip_reason() if via_exec else None)
    if reason is not None:
        pytest.skip(reason)
    with DaemonStack(tmp, via_exec=via_exec) as s:
        yield s


def assert_rescind_ends_up(stack: DaemonStack) -> None:
    """`sim rescind` of the stack's NIC ends `up` with exit code 10 and the rescind's message, and
    leaves no status file, journal or lock under /run/hvuio."""
    assert hvuio_main("--sysroot", str(stack.root), "sim", "rescind", stack.guid).returncode == 0
    code, err = stack.wait_up_exit()
    assert code == 10 and "Traceback" not in err
    assert "removed the device" in err, err
    assert stack.status_files() == []
    left = sorted(p.name for p in (stack.root / "run/hvuio").rglob("*") if p.is_file())
    assert left == [], left
