"""The guest engine and the emulator wired between two network namespaces.

`running_engine(factory, tmp_path)` makes a guest namespace and a host namespace, puts the
emulator's HostNetwork tap in the host one, binds an emulated NIC, opens it (hvuio.engine.Nic) and
runs hvuio.engine.Engine in a thread with its tap in the guest namespace; it yields a `Running`
and, on the way out, stops the engine, closes the NIC and re-raises what the engine thread
raised. The `running` fixture (tests/conftest.py) hands one to a test. Traffic stays inside the
namespaces; waits are bounded.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hvuio.netdev import netns
from hvuio.device.bind import bind_device
from hvuio.engine import Engine
from hvuio.netdev.signals import StopPipe
from hvuio.nic import Nic
from hvuio.sim.host import profile as hp
from hvuio.sim.net import DEFAULT_GUEST_ADDRESS, DEFAULT_HOST_ADDRESS, HostNetwork
from hvuio.sim.vsp.host import SimEnvironment
from support.namespaces import NetnsFactory

HOST_IP = DEFAULT_HOST_ADDRESS.split("/")[0]


@dataclass
class Running:
    env: SimEnvironment
    nic: Nic
    engine: Engine
    guest_ns: str
    host_ns: str
    stop: StopPipe
    thread: threading.Thread
    result: dict[str, Any]


@contextlib.contextmanager
def running_engine(netns_factory: NetnsFactory, tmp_path: Path, *, queues: int = 1,
                   host_profile: hp.HostProfile | None = None, vf: bool = False,
                   vf_wait: float | None = None) -> Iterator[Running]:
    """`queues`: channels the NIC asks for (Nic(channels=...)); `host_profile`: the emulated host
    (default: OpenVMM's, with no link-flap delay); `vf`: the NIC offers SR-IOV (Nic(vf=...)), and
    looks for a VF netdev `vf_wait` seconds (default VF_WAIT)."""
    guest_ns = netns_factory.namespace("g")
    host_ns = netns_factory.namespace("h")
    net = HostNetwork.create(ifname=netns_factory.ifname("hn"), netns=host_ns)
    netns_factory.defer("close host network", net.close)
    with SimEnvironment(tmp_path, profile="6.17", nics=1, network=net,
                        host_profile=host_profile or hp.HostProfile(link_flap_delay=0.0)) as env:
        guid = env.nics[0].guid
        bind_device(env.sysroot, guid, force=True)
        nic = Nic(env.sysroot, guid, channels=queues, vf=vf)
        if vf_wait is not None:
            nic.vf_side.wait = vf_wait
        nic.open()
        engine = Engine(nic, ifname=netns_factory.ifname("g"), netns=guest_ns)
        stop = StopPipe()
        ready = threading.Event()
        result: dict[str, Any] = {}

        def run() -> None:
            try:
                result["counters"] = engine.run(stop.read_fd, on_ready=lambda e: ready.set())
            except BaseException as exc:  # handed to the test thread below
                result["error"] = exc
            finally:
                ready.set()

        thread = threading.Thread(target=run, name="engine", daemon=True)
        thread.start()
        try:
            assert ready.wait(30), "engine did not start"
            assert "error" not in result, result.get("error")
            assert engine.tap_name is not None
            netns.add_address(guest_ns, engine.tap_name, DEFAULT_GUEST_ADDRESS)
            yield Running(env, nic, engine, guest_ns, host_ns, stop, thread, result)
        finally:
            stop.stop()
            thread.join(30)
            nic.close()
            stop.close()
    if "error" in result:
        raise result["error"]
