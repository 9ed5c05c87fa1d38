"""The VF side of the emulated host: the VF each NIC gets for accelerated networking, and the frames on it.

What lives here: `HostVfs`, SimHost's VFs (with `SimHost(..., vf=factory)`; `VfFactory` makes one
`VfPath` per NIC, e.g. hvuio.sim.net.VethVf). One model, as on Azure: a NIC's VF is its VF path
(a netdev) and, in the emulated kernel's tree, a PCI pass-through device whose VF netdev entry is
that netdev's name (SimKernel.offer_vf; Linux and DPDK pair it with the NIC by MAC). Per NIC it
keeps the path, the pass-through device and the serial (the VF id the host advertises, numbered in
the order the NICs got their first VF and kept over a removal), and which rescinded NICs take
their VF back on a re-offer. It moves the frames of a NIC whose guest switched the data path to
the VF: frames from the network go onto the VF path (dropped and counted while the VF is gone,
as between a removal and the guest hearing of it), and what the guest sends on the VF goes to the
network.
Order of a removal: the path and device are taken from the tree here (`leave`) after SimHost has
handed HostNvsp's switch back and association 0 to the NIC's worker; of an addition: path and
device first (`arrive`), then the association.

What must not live here: what the host tells the guest about its VF and the data-path switch
(hvuio.sim.host.vf, run by the NIC's worker), the VF netdev itself (hvuio.sim.net), the network
reader thread and the scripted host actions (host.py), the per-device worker (session.py).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from hvuio.errors import UsageError
from hvuio.sim.kernel.bus import SimKernel
from hvuio.sim.kernel.tree import SimDevice
from hvuio.sim.net import FrameNetwork, VfPath
from hvuio.sim.vsp.session import NET_BATCH, Session, VspCounters

__all__ = ["HostVfs", "VfFactory"]

VfFactory = Callable[[SimDevice, int], VfPath]  # (NIC, serial) -> that NIC's VF path


class HostVfs:
    """The VFs of every NIC of `kernel` (see the module docstring). `wake` tells the network thread
    its list of VF paths changed. The network thread writes to the paths under `lock`."""

    def __init__(self, kernel: SimKernel, factory: VfFactory | None, wake: Callable[[], None]) -> None:
        self.kernel = kernel
        self.factory = factory
        self._wake = wake
        self.lock = threading.Lock()
        self._ports: dict[str, VfPath] = {}  # NIC GUID -> its VF path, while the host has a VF
        self._pci: dict[str, SimDevice] = {}  # NIC GUID -> its PCI pass-through device in the tree
        self._serials: dict[str, int] = {}
        self._after_reoffer: set[str] = set()  # rescinded NICs whose VF went with them

    def give(self) -> None:
        """With a VF factory: a VF (path and serial) for every NIC offered so far that has none yet."""
        if self.factory is None:
            return
        for dev in self.kernel.nics:
            if dev.guid in self._serials:
                continue
            serial = self._serials[dev.guid] = len(self._serials) + 1  # [OV] the VF id is the serial
            self.arrive(dev, serial)

    def arrive(self, dev: SimDevice, serial: int) -> None:
        """The NIC's VF appears: its VF path, then the PCI pass-through device whose VF netdev
        entry is the path's netdev."""
        assert self.factory is not None
        port = self.factory(dev, serial)
        try:
            pci = self.kernel.offer_vf(dev, port.guest_ifname)
        except BaseException:
            port.close()
            raise
        with self.lock:
            self._ports[dev.guid] = port
            self._pci[dev.guid] = pci
        self._wake()

    def leave(self, dev: SimDevice) -> VfPath | None:
        """The NIC's VF goes: the PCI pass-through device is rescinded from the tree, then the VF
        path is closed (its netdev deleted). Returns the closed path, None when there was none."""
        with self.lock:
            port = self._ports.pop(dev.guid, None)
            pci = self._pci.pop(dev.guid, None)
        with self.kernel.lock:
            if pci is not None and pci.guid in self.kernel.devices:
                self.kernel.rescind(pci)
        if port is not None:
            port.close()
            self._wake()
        return port

    def serial(self, dev: SimDevice) -> int | None:
        """The serial of the NIC's VF while the host has it, else None (what HostNvsp advertises)."""
        with self.lock:
            return self._serials[dev.guid] if dev.guid in self._ports else None

    def port(self, dev: SimDevice) -> VfPath | None:
        with self.lock:
            return self._ports.get(dev.guid)

    def check_remove(self, dev: SimDevice) -> None:
        """UsageError unless the NIC has a VF to remove."""
        with self.lock:
            present = dev.guid in self._ports
        if not present:
            raise UsageError(f"{dev.ifname or dev.guid} has no VF to remove",
                             "Start the emulator with --vf; after 'sim vf remove', 'sim vf add' brings it back.")

    def add(self, dev: SimDevice) -> int:
        """The NIC's VF back (`arrive`, its serial kept); returns the serial. UsageError without a
        factory or when the NIC has its VF."""
        if self.factory is None:
            raise UsageError("the emulator runs without VFs", "Start it with --vf (and --wire).")
        serial = self._serials.setdefault(dev.guid, len(self._serials) + 1)
        with self.lock:
            if dev.guid in self._ports:
                raise UsageError(f"{dev.ifname or dev.guid} has its VF already", "Remove it first ('sim vf remove').")
        self.arrive(dev, serial)
        return serial

    def rescinded(self, dev: SimDevice) -> None:
        """The NIC was rescinded: its VF goes with it, and a re-offer brings it back."""
        if self.leave(dev) is not None:
            self._after_reoffer.add(dev.guid)

    def reoffered(self, dev: SimDevice) -> bool:
        """The NIC was offered again: whether its VF is to come back with it."""
        if dev.guid not in self._after_reoffer:
            return False
        self._after_reoffer.discard(dev.guid)
        return True

    def fds(self) -> dict[int, tuple[str, VfPath]]:
        """The VF paths the network thread selects on: fd -> (NIC GUID, path)."""
        with self.lock:
            return {port.fileno(): (guid, port) for guid, port in self._ports.items()}

    def status(self, dev: SimDevice) -> dict[str, Any]:
        """The NIC's VF as the host has it, for a NIC that is not open."""
        return {"present": dev.guid in self._ports, "serial": self._serials.get(dev.guid)}

    def to_vf(self, session: Session, frames: list[bytes]) -> None:
        """Frames for a NIC whose data path is its VF: onto the VF path (dropped and counted
        when the VF is gone)."""
        counters = session.counters
        with self.lock:
            port = self._ports.get(session.dev.guid)
            for frame in frames:
                if port is not None and port.write_frame(frame):
                    counters.frames_to_vf += 1
                else:
                    counters.frames_to_vf_dropped += 1

    def from_vf(self, guid: str, port: FrameNetwork, net: FrameNetwork, counters: Callable[[str], VspCounters]) -> None:
        """What the guest sent on a NIC's VF: to the network `net`; `counters` gives the NIC's."""
        with self.lock:
            if self._ports.get(guid) is not port:
                return  # removed meanwhile
            frames = port.read_frames(NET_BATCH)
        nic = counters(guid)
        for frame in frames:
            nic.frames_from_vf += 1
            if not net.write_frame(frame):
                nic.frames_to_network_dropped += 1

    def close(self) -> None:
        """Close every VF path (the tree goes with the kernel)."""
        with self.lock:
            ports, self._ports, self._pci = list(self._ports.values()), {}, {}
        for port in ports:
            port.close()
