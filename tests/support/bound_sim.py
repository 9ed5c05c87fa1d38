"""`bound_sim(root)`: the in-process emulator (SimEnvironment, kernel profile 6.17) with one NIC
already bound to uio_hv_generic, as the NIC and CLI tests start from; closed on leaving.

What must not live here: what the tests do with it (each module's own fixture passes its host
profile and root).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hvuio.device.bind import bind_device
from hvuio.sim.host.profile import HostProfile
from hvuio.sim.vsp.host import SimEnvironment


@contextmanager
def bound_sim(root: Path, host_profile: HostProfile | None = None) -> Iterator[SimEnvironment]:
    with SimEnvironment(root, profile="6.17", nics=1, host_profile=host_profile) as env:
        bind_device(env.sysroot, env.nics[0].guid, force=True)
        yield env
