"""What a NIC's bring-up negotiated, as the user sees it, and the rule for the tap's MTU.

What lives here: `NicInfo` (the negotiated values, None until known, and their JSON form that
`up --json`, the status record and hvuio/cli/render.py use), what the bring-up's events say about
those values (`learn`: NVSP and NDIS versions, receive and send buffer sections, RNDIS version and
aggregation limits, MAC addresses, the host's maximum frame, offloads; the subchannels and RSS
the host granted or refused, logged), the names of NVSP and NDIS
versions, and the MTU rule: the tap gets min(the MTU asked, the host's maximum frame size
(OID_GEN_MAXIMUM_FRAME_SIZE, as Linux lowers its MTU to it in rndis_filter_device_add), what the
TX path carries: GPA_MTU with GPA-direct, `section_mtu` of the host's send section without), with
the reason when that is below the MTU asked (`tap_mtu`).

What must not live here: running the bring-up (hvuio/nic.py: the channel, the machines, what an
event asks of the channel), the link and its speed (hvuio/niclink.py), printing (hvuio/cli).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any, Final

from hvuio.errors import HostProtocolError, LocalProtocolError
from hvuio.native.datapath_config import ETH_HLEN, RNDIS_PACKET_HEADER, TxAggregation
from hvuio.netdev.tap import format_mac
from hvuio.offloads import NicOffloads
from hvuio.proto import events as ev
from hvuio.proto import limits
from hvuio.wire import nvsp as wn

log = logging.getLogger(__name__)

#: Largest MTU a GPA-direct TX path carries: Linux's range ends at 65521 (NETVSC_MTU 65535 minus
#: the Ethernet header).
GPA_MTU: Final = limits.MAX_MTU


def section_mtu(section_size: int) -> int:
    """The largest MTU whose frames one send section carries after the RNDIS packet header (the
    data path adds no pktinfo a frame needs: a checksum pktinfo that does not fit beside a
    full-size frame becomes a software checksum, _native/tx_stage.c stage_whole_csum)."""
    return section_size - RNDIS_PACKET_HEADER - ETH_HLEN


NVSP_NAMES: Final[dict[int, str]] = {wn.NvspVersion.V1: "1", wn.NvspVersion.V2: "2", wn.NvspVersion.V4: "4",
                     wn.NvspVersion.V5: "5", wn.NvspVersion.V6: "6", wn.NvspVersion.V61: "6.1"}


def nvsp_name(version: int) -> str:
    return NVSP_NAMES.get(version, f"{version:#x}")


def ndis_name(version: int) -> str:
    return f"{version >> 16}.{version & 0xFFFF}"


@dataclass
class NicInfo:
    """What bring-up negotiated (None until known)."""

    device: str
    uio: str
    relid: int
    monitored: bool
    ring_size: int
    nvsp_version: int | None = None
    ndis_version: int | None = None
    #: RNDIS (major, minor) from the initialize completion
    rndis_version: tuple[int, int] | None = None
    #: the host's limits for several RNDIS packets per send (max_packets, alignment, max_bytes)
    tx_aggregation: TxAggregation | None = None
    mtu: int | None = None
    mac: bytes | None = None
    permanent_mac: bytes | None = None
    recv_buffer_size: int = 0
    recv_section_size: int | None = None
    recv_section_count: int | None = None
    send_buffer_size: int = 0
    send_section_size: int | None = None
    send_section_count: int | None = None
    control_sections: int | None = None
    link_up: bool | None = None
    link_speed_bps: int | None = None
    queues: int = 1
    #: known from the moment the send buffer is connected (RNDIS starts then)
    offloads: NicOffloads | None = None
    #: how frames and control messages leave: "gpa-direct (<pool kind>)" or "send buffer (<reason>)"
    tx_path: str | None = None
    #: the MTU asked for (NDIS config), the host's OID_GEN_MAXIMUM_FRAME_SIZE (None: not answered),
    #: and why `mtu` is below the MTU asked (None: it is not)
    mtu_asked: int | None = None
    host_max_frame: int | None = None
    mtu_limited_by: str | None = None
    #: the accelerated-networking VF with `up --vf auto` (hvuio/vfwatch.py VfWatch.status: serial,
    #: netdev, data_path, tx_on_vf); None with --vf off
    vf: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (`up --json`, the status record; hvuio/cli/render.py prints it)."""
        agg = self.tx_aggregation
        return {
            "device": self.device, "uio": self.uio, "relid": self.relid, "monitored": self.monitored,
            "ring_size": self.ring_size, "nvsp_version": self.nvsp_version,
            "ndis_version": self.ndis_version,
            "rndis_version": None if self.rndis_version is None else "{}.{}".format(*self.rndis_version),
            "tx_aggregation": {} if agg is None else {"max_packets": agg.max_packets,
                                                      "alignment": agg.alignment,
                                                      "max_bytes": agg.max_bytes},
            "mtu": self.mtu,
            "mac": None if self.mac is None else format_mac(self.mac),
            "permanent_mac": None if self.permanent_mac is None else format_mac(self.permanent_mac),
            "recv_buffer_size": self.recv_buffer_size, "recv_section_size": self.recv_section_size,
            "recv_section_count": self.recv_section_count, "send_buffer_size": self.send_buffer_size,
            "send_section_size": self.send_section_size, "send_section_count": self.send_section_count,
            "control_sections": self.control_sections, "link_up": self.link_up,
            "link_speed_bps": self.link_speed_bps, "queues": self.queues,
            "offloads": {} if self.offloads is None else self.offloads.to_dict(),
            "tx_path": self.tx_path, "mtu_asked": self.mtu_asked, "host_max_frame": self.host_max_frame,
            "mtu_limited_by": self.mtu_limited_by,
            "nvsp": None if self.nvsp_version is None else nvsp_name(self.nvsp_version),
            "ndis": None if self.ndis_version is None else ndis_name(self.ndis_version),
            "vf": None if self.vf is None else dict(self.vf),
        }


#: The bring-up's events that say what was negotiated (`learn`).
InfoEvent = (ev.NvspReady | ev.RecvBufReady | ev.SendBufReady | ev.RndisReady | ev.MacAddress | ev.Mtu
             | ev.OffloadCaps | ev.OffloadsConfigured | ev.SubchannelsGranted | ev.SubchannelsRefused
             | ev.RssConfigured)


def learn(info: NicInfo, e: InfoEvent) -> None:
    """What one bring-up event says about the negotiated values, written into `info` (the
    machines checked the values; what the event asks of the channel is the Nic's)."""
    if isinstance(e, ev.NvspReady):
        info.nvsp_version, info.ndis_version = e.version, e.ndis_version
    elif isinstance(e, ev.RecvBufReady):
        info.recv_section_size, info.recv_section_count = e.sections[0].sub_alloc_size, e.sections[0].num_sub_allocs
    elif isinstance(e, ev.SendBufReady):
        info.send_section_size, info.send_section_count = e.section_size, e.count
    elif isinstance(e, ev.RndisReady):
        info.rndis_version = (e.major_version, e.minor_version)
        info.tx_aggregation = TxAggregation(max_packets=e.max_packets_per_message, alignment=e.alignment,
                                            max_bytes=e.max_transfer_size)
    elif isinstance(e, ev.MacAddress):
        if e.permanent:
            info.permanent_mac = e.mac
            info.mac = info.mac or e.mac
        else:
            info.mac = e.mac
    elif isinstance(e, ev.Mtu):
        # limits.MIN_MTU..MAX_MTU (proto/rndis.py _on_mtu); `tap_mtu` takes it into account
        info.host_max_frame = e.mtu
    elif isinstance(e, ev.OffloadCaps):
        info.offloads = replace(_offloads(info), host=e)
    elif isinstance(e, ev.OffloadsConfigured):
        info.offloads = replace(_offloads(info), accepted=e)
    elif isinstance(e, ev.SubchannelsGranted):  # `queues` once they are mapped (hvuio/nic.py)
        log.info("the host granted %d subchannel(s)", e.count)
    elif isinstance(e, ev.SubchannelsRefused):
        log.warning("the host refused %d subchannel(s) (status %#x); running on the primary channel only",
                    e.asked, e.status)
    else:
        log.info("RSS on over %d queues: %d-entry table, hash information %#x", e.queues, len(e.table), e.hash_info)


def _offloads(info: NicInfo) -> NicOffloads:
    if info.offloads is None:
        raise LocalProtocolError("offload results before the send buffer was connected")
    return info.offloads


def tap_mtu(asked: int, host_max_frame: int | None, *, gpa: bool, send_section_size: int) -> tuple[int, str | None]:
    """min(asked, the host's maximum frame, what the TX path carries) and why, if below asked.
    HostProtocolError when the host's send sections cannot carry a minimum-MTU frame and there is
    no GPA-direct path."""
    mtu, why = asked, None
    if host_max_frame is not None and host_max_frame < mtu:
        mtu, why = host_max_frame, f"the host allows at most {host_max_frame}"
    if gpa:
        if GPA_MTU < mtu:
            mtu, why = GPA_MTU, f"GPA-direct carries at most {GPA_MTU}"
        return mtu, why
    path = section_mtu(send_section_size)
    if path < limits.MIN_MTU:
        raise HostProtocolError(f"the host's send sections of {send_section_size} bytes carry frames of at most "
                                f"{path} bytes, below the minimum MTU {limits.MIN_MTU}",
                                "Use a host with larger send sections, or GPA-direct (a platform "
                                "with huge pages).")
    if path < mtu:
        mtu, why = path, f"without GPA-direct a send section carries at most {path}"
    return mtu, why
