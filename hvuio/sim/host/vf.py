"""The emulated host's side of accelerated networking (SR-IOV VF), sans-IO: what it tells the
guest about its VF and how it takes the guest's data-path switches ([OV] below; Azure's side:
MicrosoftDocs/azure-docs articles/virtual-network/accelerated-networking-how-it-works.md).

What lives here: `GuestVf`, one NIC's VF state inside HostNvsp — the VF the host has for the NIC
(its serial, or none), whether the guest was told (`advertised`), and the data path the guest
asked for (`data_path_vf`) — and the NVSP 4 messages it sends: the VF association (type 128:
allocated, serial) and the host's switch back to synthetic (type 129 with active_datapath 0).

Behaviour follows OpenVMM ([OV] microsoft/openvmm vm/devices/net/netvsp/src/lib.rs):
* The guest may use a VF only at NVSP >= 4 with the NDIS-config capability `sriov` (bit 2):
  otherwise no association is ever sent ([OV] `guest_vf_is_available`).
* The association (allocated 1, serial) goes out in-band with completion requested and the fixed
  transaction id 0x8000000000000000 right after the RNDIS INITIALIZE completion when the host has a
  VF, or when a VF arrives later on an initialised channel ([OV] `handle_rndis_control_message`,
  `handle_state_change`). A completion of it is accepted and ignored ([OV] `parse_packet`).
* A guest SWITCH_DATA_PATH (type 129, primary only: on a subchannel the worker ends) is answered
  with an empty completion whatever happened; it switches only while the guest has been told of a
  VF ([OV] `switch_data_path`, `handle_state_change`); otherwise it is logged and nothing moves.
* VF removal: when the data path is the VF the host switches back and tells the guest with a
  type-129 message (active_datapath 0, completion requested, transaction id 0x8000000000000001),
  then — RNDIS initialised — the association with allocated 0 ([OV] `handle_state_change`:
  `UnavailableFromDataPathSwitched` then `UnavailableFromAvailable`, and
  `guest_vf_data_path_switched_to_synthetic`).
Emulator choice: the switch takes effect at once (OpenVMM completes it when its backend has moved
the filter); a removal while a switch is pending cannot happen here.

What must not live here: where frames go (the runtime reads `data_path_vf`: hvuio.sim.vsp), the
VF netdev (hvuio.sim.net), rings, clocks.
"""

from __future__ import annotations

from typing import Protocol

from hvuio.sim.host import wire as w
from hvuio.sim.host.events import DataPathSwitched, HostEvent, Rejection, RejectionLog
from hvuio.sim.host.receive import VF_ASSOCIATION_TID
from hvuio.sim.host.wire import HostPacket

SWITCH_DATA_PATH_TID = 0x8000000000000001  # [OV] SWITCH_DATA_PATH_TRANSACTION_ID
DATA_PATH_SYNTHETIC, DATA_PATH_VF = 0, 1  # NVSP 4 active_datapath ([GL const `linux:nvsp_datapath`])
HOST_TIDS = (VF_ASSOCIATION_TID, SWITCH_DATA_PATH_TID)


class VfOut(Protocol):
    """Where GuestVf puts what it sends and reports (HostNvsp's step under construction)."""

    packets: list[HostPacket]
    events: list[HostEvent]


class GuestVf:
    """One NIC's VF state as the host keeps it (see the module docstring)."""

    def __init__(self, serial: int | None, log: RejectionLog) -> None:
        self.serial = serial  # the host's VF for this NIC (None: no VF)
        self.advertised = False  # the guest got an association with allocated 1
        self.data_path_vf = False
        self.guest_allowed = False  # NVSP >= 4 and the guest's NDIS config set `sriov`
        self.rndis_ready = False  # RNDIS INITIALIZE completed: associations may go out
        self._log = log

    def status(self) -> dict[str, object]:
        return {"present": self.serial is not None, "serial": self.serial, "advertised": self.advertised,
                "data_path": "vf" if self.data_path_vf else "synthetic", "guest_allowed": self.guest_allowed}

    def negotiated(self, version: int, ndis_caps: int) -> None:
        self.guest_allowed = version >= w.NVSP_VERSION_4 and bool(ndis_caps & w.NDIS_CONF_SRIOV)

    def rndis_initialized(self, pad: int, out: VfOut) -> None:
        self.rndis_ready = True
        self._advertise(pad, out)

    def add(self, serial: int, pad: int, out: VfOut) -> None:
        """The host got a VF for this NIC (again)."""
        if self.serial is not None:
            return
        self.serial = serial
        self._advertise(pad, out)

    def remove(self, pad: int, out: VfOut) -> None:
        """The host lost the NIC's VF: back to synthetic (told), then allocated 0 (if told of it)."""
        if self.serial is None:
            return
        self.serial = None
        if self.data_path_vf:
            self.data_path_vf = False
            out.events.append(DataPathSwitched(False, "host"))
            out.packets.append(HostPacket(0, w.PKT_INBAND, w.FLAG_COMPLETION_REQUESTED, SWITCH_DATA_PATH_TID,
                                          w.nvsp(w.NVSP_SWITCH_DATA_PATH, DATA_PATH_SYNTHETIC, pad_to=pad)))
        if self.advertised:
            self.advertised = False
            out.packets.append(self._association(0, 0, pad))

    def switch(self, active: int, out: VfOut) -> None:
        """The guest's SWITCH_DATA_PATH (the caller answers it with an empty completion)."""
        to_vf = active == DATA_PATH_VF
        if not self.advertised:
            out.events.append(self._log.add(Rejection(
                "switch data path while the guest was told of no VF", w.NVSP_SWITCH_DATA_PATH, "active_datapath",
                active, "ignored")))
            return
        if to_vf != self.data_path_vf:
            self.data_path_vf = to_vf
            out.events.append(DataPathSwitched(to_vf, "guest"))

    def _advertise(self, pad: int, out: VfOut) -> None:
        if self.serial is None or self.advertised or not self.rndis_ready or not self.guest_allowed:
            return
        self.advertised = True
        out.packets.append(self._association(1, self.serial, pad))

    @staticmethod
    def _association(allocated: int, serial: int, pad: int) -> HostPacket:
        payload = w.nvsp(w.NVSP_SEND_VF_ASSOCIATION, allocated, serial, pad_to=pad)
        return HostPacket(0, w.PKT_INBAND, w.FLAG_COMPLETION_REQUESTED, VF_ASSOCIATION_TID, payload)
