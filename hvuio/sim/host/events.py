"""What the emulated host's protocol machines report: events, rejections and faults.

What lives here: the frozen event dataclasses HostNvsp and HostRndis return next to the packets
they produce (`NvspNegotiated`, `ReceiveBufferConnected`, `SendBufferConnected`, `BufferRevoked`,
`SubchannelsOffered`, `FrameFromGuest`, `RndisInitialized`, `RndisHalted`, `PacketFilterSet`,
`LinkIndicated`, `DataPathSwitched`, `StatusIndicated`; `HostEvent` is their union), `Rejection` (something the guest
sent that a real host would not accept as is, and what the host did: `Action`), `ChannelFault`
(the host stopped servicing the channel), `HostFault` / `fault()` (raised inside the machines
where a real host would stop the channel) and `RejectionLog`, which keeps every Rejection and
logs it once under "hvuio.sim.host".

What must not live here: protocol state or decisions (nvsp.py, rndis.py), I/O, clocks. The
runtime (hvuio.sim.vsp) acts on these records; nothing here knows it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

LOG = logging.getLogger("hvuio.sim.host")

Action = Literal["fault", "failure-status", "ignored", "dropped", "substituted", "logged"]


# --- records and events --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rejection:
    """Something the guest sent that a real host would not accept as is, and what the host did."""

    reason: str
    message_type: int
    field: str
    value: int
    action: Action = "ignored"


@dataclass(frozen=True, slots=True)
class ChannelFault:
    """The host stopped servicing the channel, as OpenVMM's worker does on a protocol error."""

    reason: str


@dataclass(frozen=True, slots=True)
class NvspNegotiated:
    version: int


@dataclass(frozen=True, slots=True)
class ReceiveBufferConnected:
    gpadl: int
    section_size: int
    section_count: int


@dataclass(frozen=True, slots=True)
class SendBufferConnected:
    gpadl: int
    section_size: int
    section_count: int


@dataclass(frozen=True, slots=True)
class BufferRevoked:
    """The guest revoked a buffer; like [OV] the host stops processing the channel afterwards."""

    which: Literal["receive", "send"]


@dataclass(frozen=True, slots=True)
class SubchannelsOffered:
    """The emulator must now create `count` subchannels (relids, rings) for this device."""

    count: int


@dataclass(frozen=True, slots=True)
class FrameFromGuest:
    frame: bytes
    channel: int = 0


@dataclass(frozen=True, slots=True)
class RndisInitialized:
    max_transfer_size: int


@dataclass(frozen=True, slots=True)
class RndisHalted:
    pass


@dataclass(frozen=True, slots=True)
class PacketFilterSet:
    value: int


@dataclass(frozen=True, slots=True)
class LinkIndicated:
    up: bool


@dataclass(frozen=True, slots=True)
class DataPathSwitched:
    """Frames from the network for this NIC now go over its VF (`to_vf`) or the synthetic rings."""

    to_vf: bool
    by: Literal["guest", "host"]  # the guest's SWITCH_DATA_PATH, or the host's (VF removal)


@dataclass(frozen=True, slots=True)
class StatusIndicated:
    """A scripted indication other than a link change was sent (HostRndis.indicate)."""

    status: int


HostEvent = (
    Rejection | ChannelFault | NvspNegotiated | ReceiveBufferConnected | SendBufferConnected
    | BufferRevoked | SubchannelsOffered | FrameFromGuest | RndisInitialized | RndisHalted | StatusIndicated
    | PacketFilterSet | LinkIndicated | DataPathSwitched
)


class HostFault(Exception):
    """Raised inside the host layers when the real host would stop the channel."""

    def __init__(self, rejection: Rejection) -> None:
        super().__init__(rejection.reason)
        self.rejection = rejection


class RejectionLog:
    """Keeps every Rejection for tests and logs it once under "hvuio.sim.host"."""

    def __init__(self) -> None:
        self.records: list[Rejection] = []

    def add(self, rej: Rejection, *, quiet: bool = False) -> Rejection:
        """Record `rej`; `quiet` logs at DEBUG (used for the flood after a channel has stopped)."""
        self.records.append(rej)
        (LOG.debug if quiet else LOG.warning)(
            "host rejected message type %#x: %s (%s = %#x) -> %s",
            rej.message_type, rej.reason, rej.field, rej.value, rej.action,
        )
        return rej


def fault(reason: str, message_type: int, field: str, value: int) -> HostFault:
    return HostFault(Rejection(reason, message_type, field, value, "fault"))
