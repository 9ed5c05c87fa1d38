"""hvuio.lifecycle.Lifecycle in this process (root, namespaces, /dev/net/tun; skipped otherwise):
a user's MTU change of the tap made while the lifecycle is still starting — the tap exists, the
data path does not run yet — is made on the NIC before the caller hears of the tap.

The emulator and the namespaces are tests/support/engine_stack.py's `sim_network`; the change is
made right after the tap is opened (the lifecycle's `open_tap`, wrapped), before anything of the
lifecycle watches the tap. Waits are bounded.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support.engine_stack import sim_network
from support.lifecycle import WAIT
from support.namespaces import NetnsFactory

from hvuio import lifecycle
from hvuio.engine import Engine
from hvuio.lifecycle import Lifecycle
from hvuio.netdev import netns
from hvuio.netdev.signals import StopPipe
from hvuio.nic import Nic


def test_a_tap_mtu_change_before_the_data_path_runs_is_made(netns_factory: NetnsFactory, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    opened = lifecycle.open_tap

    def open_then_change(*args: Any, **kwargs: Any) -> Any:
        tap = opened(*args, **kwargs)
        netns.ip("-n", tap.netns, "link", "set", "dev", tap.name, "mtu", "1400")  # the user, at once
        return tap

    monkeypatch.setattr(lifecycle, "open_tap", open_then_change)
    with sim_network(netns_factory, tmp_path) as sim:
        def new_nic(device: str, mtu: int, channels: int) -> Nic:
            return Nic(sim.env.sysroot, device, mtu=mtu, channels=channels)

        nic = new_nic(sim.guid, 1500, 1)
        nic.open()
        life = Lifecycle(sim.env.sysroot, nic, new_nic, ifname=netns_factory.ifname("g"), netns=sim.guest_ns)
        stop = StopPipe()
        ready = threading.Event()
        heard: list[int] = []
        result: dict[str, Any] = {}

        def on_ready(engine: Engine) -> None:
            heard.append(engine.nic.negotiated.mtu or 0)
            ready.set()

        def run(go: Callable[[], dict[str, int]]) -> None:
            try:
                result["counters"] = go()
            except BaseException as exc:  # handed to the test thread below
                result["error"] = exc
            finally:
                ready.set()

        thread = threading.Thread(target=run, args=(lambda: life.run(stop.read_fd, on_ready=on_ready),),
                                  name="lifecycle", daemon=True)
        thread.start()
        try:
            assert ready.wait(WAIT) and "error" not in result, result.get("error")
            assert heard == [1400]                              # the caller heard of the tap at its MTU
            assert sim.env.host.wait_for(lambda: life.state == "running", timeout=WAIT)
            assert life.mtu == 1400 and life.nic.negotiated.mtu == 1400
            counters = life.counters()
            assert (counters["mtu_changes"], counters["reinits_mtu"], counters["mtu_rollbacks"]) == (1, 1, 0)
        finally:
            stop.stop()
            thread.join(WAIT)
            life.nic.close()
            stop.close()
        if "error" in result:
            raise result["error"]
