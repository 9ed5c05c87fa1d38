"""The guest engine and the emulator wired between two network namespaces.

`sim_network(factory, tmp_path)` makes a guest namespace and a host namespace, puts the emulator's
HostNetwork tap in the host one and binds an emulated NIC; `engine_on(sim)` opens that NIC
(hvuio.nic.Nic) and runs hvuio.engine.Engine in a thread with its tap in the guest namespace, yields
a `Running` and, on the way out, stops the engine, closes the NIC and re-raises what the engine
thread raised; one emulator serves several runs in turn (a queue-count change).
`running_engine(factory, tmp_path)` is both for one run. The `running` fixture (tests/conftest.py)
hands one to a test. Traffic stays inside the namespaces; waits are bounded.
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


@dataclass
class SimNetwork:
    """One emulator (one NIC, bound to uio) between a guest and a host namespace: the NIC can be
    opened and run several times (`engine_on`), as a user runs `hvuio up` again."""

    env: SimEnvironment
    guid: str
    guest_ns: str
    host_ns: str
    factory: NetnsFactory


@contextlib.contextmanager
def sim_network(netns_factory: NetnsFactory, tmp_path: Path, *, host_profile: hp.HostProfile | None = None,
                **kernel_options: Any) -> Iterator[SimNetwork]:
    """`host_profile`: the emulated host (default: OpenVMM's, with no link-flap delay);
    `kernel_options` go to the emulated kernel (SimKernel)."""
    guest_ns = netns_factory.namespace("g")
    host_ns = netns_factory.namespace("h")
    net = HostNetwork.create(ifname=netns_factory.ifname("hn"), netns=host_ns)
    netns_factory.defer("close host network", net.close)
    with SimEnvironment(tmp_path, profile="6.17", nics=1, network=net,
                        host_profile=host_profile or hp.HostProfile(link_flap_delay=0.0), **kernel_options) as env:
        guid = env.nics[0].guid
        bind_device(env.sysroot, guid, force=True)
        yield SimNetwork(env, guid, guest_ns, host_ns, netns_factory)


@contextlib.contextmanager
def engine_on(sim: SimNetwork, *, queues: int = 1, vf: bool = False,
              vf_wait: float | None = None) -> Iterator[Running]:
    """The NIC opened asking for `queues` channels (Nic(channels=...)), offering SR-IOV with `vf`
    (Nic(vf=...); it looks for a VF netdev `vf_wait` seconds, default VF_WAIT), and the engine run
    in a thread, its tap in the guest namespace with the guest address; on the way out the engine
    is stopped, the NIC closed and what the engine thread raised re-raised."""
    nic = Nic(sim.env.sysroot, sim.guid, channels=queues, vf=vf)
    if vf_wait is not None:
        nic.vf_side.wait = vf_wait
    nic.open()
    engine = Engine(nic, ifname=sim.factory.ifname("g"), netns=sim.guest_ns)
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
        netns.add_address(sim.guest_ns, engine.tap_name, DEFAULT_GUEST_ADDRESS)
        yield Running(sim.env, nic, engine, sim.guest_ns, sim.host_ns, stop, thread, result)
    finally:
        stop.stop()
        thread.join(30)
        nic.close()
        stop.close()
    if "error" in result:
        raise result["error"]


@contextlib.contextmanager
def running_engine(netns_factory: NetnsFactory, tmp_path: Path, *, queues: int = 1,
                   host_profile: hp.HostProfile | None = None, vf: bool = False,
                   vf_wait: float | None = None) -> Iterator[Running]:
    """`engine_on` a fresh `sim_network`: `queues` channels asked for, `host_profile` the
    emulated host (default: OpenVMM's, with no link-flap delay), `vf` and `vf_wait` as there."""
    with sim_network(netns_factory, tmp_path, host_profile=host_profile) as sim, \
            engine_on(sim, queues=queues, vf=vf, vf_wait=vf_wait) as r:
        yield r
