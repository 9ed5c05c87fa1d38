"""What the emulated Hyper-V network VSP offers: one frozen `HostProfile` plus its checked limits.

What lives here: the knobs of the emulated host (NVSP version range, MTU bounds, MAC, link,
subchannels, buffer and receive layout, offloads, optional (non-default) host keep-alives, indirection table / VF
association policy, strictness) and the defaults with the source each mirrors. Source key:
[OV] microsoft/openvmm vm/devices/net/netvsp/src/lib.rs (a real host implementation),
[OV-BUF] the same crate's buffers.rs, [NVSC] torvalds/linux drivers/net/hyperv/netvsc.c,
[RF] drivers/net/hyperv/rndis_filter.c, golden = tests/golden/wire-layouts.json.

What must not live here: protocol state or I/O (see nvsp.py / rndis.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from hvuio.errors import UsageError
from hvuio.sim.host import wire as w

ETH_HEADER_LEN = 14
# NDIS config MTU counts the Ethernet header ([NVSC] negotiate_nvsp_ver sends ndev->mtu + ETH_HLEN).
DEFAULT_NDIS_MTU = 1514  # [OV] DEFAULT_MTU, also used for NVSP v1 where no NDIS config exists
MIN_NDIS_MTU = 1514  # [OV] MIN_MTU: smaller values are replaced by the default, "as in the vmswitch"
MAX_NDIS_MTU = 9216  # [OV] MAX_MTU; DPDK HN_MTU_MAX is also 9216 (golden hn_var_tunables)
SEND_SECTION_SIZE = 6144  # [OV] fixed section size in send-buffer-complete; golden NETVSC_SEND_SECTION_SIZE
RX_HEADER_RESERVE = 256  # [OV-BUF] RX_HEADER_LEN: bytes kept for RNDIS headers per receive section
RX_FOOTER_RESERVE = 36  # [OV-BUF] BROKEN_CO_NETVSC_FOOTER_LEN
CONTROL_SECTIONS = 16  # [OV] RX_RESERVED_CONTROL_BUFFERS: receive sections kept for control replies
MAX_SUBCHANNELS = 64  # [OV] NETVSP_MAX_SUBCHANNELS_PER_VNIC; Linux VRSS_CHANNEL_MAX 64
LSO_MAX_OFFLOAD = 0xF53C  # [OV] "same maximum as vmswitch"
RNDIS_MAX_TRANSFER = 0xEFFFFFFF  # [OV] max_transfer_size in the RNDIS init completion
RNDIS_MAX_PACKETS = 8  # [OV] max_packets_per_message
RNDIS_ALIGN_SHIFT = 3  # [OV] packet_alignment_factor (2^3 = 8 bytes)
MAX_MDL_CHAIN = 34  # [OV] maximum_mdl_chain_length in the init completion
# Receive layouts ([OV-BUF] BufferPool::write_header / lib.rs process_endpoint_rx for "openvmm"):
# "openvmm" = every range is the whole sub-allocation (message_length too), the frame at byte
# RX_HEADER_RESERVE of the section, checksum info always the first per-packet info;
# "compact" = the frame right after the header and its per-packet info, the range as long as the message.
RxLayout = Literal["openvmm", "compact"]
RX_LAYOUTS: tuple[RxLayout, ...] = ("openvmm", "compact")
# Smallest receive section we allow: must hold every host control reply (largest: a QUERY
# completion carrying the 156-byte NDIS_OFFLOAD, 180 bytes) and a minimal frame.
MIN_RECV_SECTION = 512
#: Indications HostProfile.indicate_at_init may name, and their RNDIS status
INIT_INDICATIONS: dict[str, int] = {"network_change": w.RNDIS_STATUS_NETWORK_CHANGE,
                                    "media_connect": w.RNDIS_STATUS_MEDIA_CONNECT,
                                    "media_disconnect": w.RNDIS_STATUS_MEDIA_DISCONNECT}


@dataclass(frozen=True, slots=True)
class OffloadCaps:
    """Offloads the host claims in OID_TCP_OFFLOAD_HARDWARE_CAPABILITIES ([OV] OffloadConfig)."""

    csum_tx_ip4: bool = True
    csum_tx_tcp4: bool = True
    csum_tx_udp4: bool = True
    csum_tx_tcp6: bool = True
    csum_tx_udp6: bool = True
    # [OV] "Always claim support for rx offloads since we can mark any given packet as unknown".
    csum_rx: bool = True
    lso4: bool = True
    lso6: bool = True
    # Receive segment coalescing (Hyper-V vRSC, NDIS_OFFLOAD.rsc); granted only at NVSP >= 6.1, the
    # version from which Linux sends RSC fragments' RNDIS_PKTINFO_ID ([NVSC] NVSP_PROTOCOL_VERSION_61).
    rsc: bool = True


@dataclass(frozen=True, slots=True)
class HostProfile:
    """The emulated host. Defaults follow OpenVMM's netvsp unless a comment says otherwise."""

    max_version: int = w.NVSP_VERSION_61
    min_version: int = w.NVSP_VERSION_1
    mac: bytes = bytes.fromhex("00155d000001")  # 00:15:5d = Microsoft's prefix ([OV] vendor id)
    mtu_default: int = DEFAULT_NDIS_MTU
    mtu_max: int = MAX_NDIS_MTU
    link_up: bool = True
    link_speed_bps: int = 10_000_000_000
    # The host's receive queues less the primary ([OV] max_queues - 1, max_queues being the
    # configured count clamped to [1, min(backend, 64)]); 7 = Linux VRSS_CHANNEL_DEFAULT's 8 channels.
    # Reported as OID_GEN_RECEIVE_SCALE_CAPABILITIES' number of receive queues (+ 1).
    max_subchannels: int = 7
    # None: [OV-BUF] layout (256 + mtu + 36 per section). Hyper-V is reported to use 1728-byte
    # sections for a 1500-byte MTU (golden NETVSC_RECV_SECTION_SIZE); set 1728 to mimic that, with
    # rx_layout "compact" (the openvmm layout keeps 256 + 36 bytes of a section besides the frame).
    recv_section_size: int | None = None
    send_section_size: int = SEND_SECTION_SIZE
    # How a received frame sits in its receive section (RX_LAYOUTS above); "openvmm" is [OV]'s.
    rx_layout: RxLayout = "openvmm"
    control_sections: int = CONTROL_SECTIONS
    offloads: OffloadCaps = field(default_factory=OffloadCaps)
    rss_table_entries: int = 128  # [OV] reports 128 when the endpoint has none ("DPDK gets confused by 0")
    # Host-initiated RNDIS KEEPALIVE period in seconds; None (the default) = never, as [OV], which
    # has no sender of them. Not a real host's behaviour: a test option to see that a guest drops
    # an unsolicited KEEPALIVE as Linux does ([RF] rndis_filter_receive: "unhandled rndis
    # message"). The host expects no answer; a guest's KEEPALIVE_CMPLT is a fault either way.
    keepalive_interval: float | None = None
    # Send an RNDIS media indication right after the RNDIS init completion. [OV] does not (the
    # guest queries OID_GEN_MEDIA_CONNECT_STATUS; indications follow link changes only); a
    # non-default option for guests that must cope with an early indication.
    indicate_link_at_init: bool = False
    # Indications sent right after the RNDIS init completion (after indicate_link_at_init's), in
    # order: "network_change", "media_connect", "media_disconnect" (the host's link stays as it
    # is, so the guest's media query answers it). No host is known to do this; an emulator choice
    # for the lifecycle tests: link events that arrive while the guest is still bringing the NIC up.
    indicate_at_init: tuple[str, ...] = ()
    # Seconds a link change waits after the previous indication when set_link() is given `now`
    # ([OV] LINK_DELAY_DURATION = 5 s: "Linux guests are known to not act on link state change
    # notifications if they happen in quick succession").
    link_flap_delay: float = 5.0
    # When to send the NVSP v5+ send indirection table: [OV] sends it once all granted subchannels
    # are open ("after_subchannels", the emulator calls HostNvsp.channels_opened(n)).
    indirection_table: Literal["after_subchannels", "after_rndis_init", "never"] = "after_subchannels"
    vf_serial: int | None = None  # send a VF association (v4+, guest advertised SR-IOV) when set
    # Emulator-only checks beyond what OpenVMM enforces (each is marked "strict" where it is made).
    strict: bool = True
    # True: errors that stop OpenVMM's channel worker raise ChannelFault and the host goes silent.
    # False: they are logged as Rejection and the message is dropped (useful for fault injection).
    fatal_faults: bool = True
    # Emulator choice modelling a trunk-mode Hyper-V port: tagged frames from the network reach the
    # guest untagged with the tag in the 802.1Q pktinfo (the guest announced 802.1Q at NVSP init);
    # False: they are delivered as they are. (A send's 802.1Q pktinfo is put onto the wire frame
    # either way, as OpenVMM hands it to its backend.)
    vlan_oob: bool = False

    def __post_init__(self) -> None:
        if self.max_version not in w.NVSP_VERSIONS or self.min_version not in w.NVSP_VERSIONS:
            raise UsageError(
                f"host profile: NVSP versions {self.min_version:#x}..{self.max_version:#x} must be "
                f"among {', '.join(hex(v) for v in w.NVSP_VERSIONS)}"
            )
        if self.min_version > self.max_version:
            raise UsageError(f"host profile: min_version {self.min_version:#x} > max_version {self.max_version:#x}")
        if len(self.mac) != 6:
            raise UsageError(f"host profile: mac must be 6 bytes, got {len(self.mac)}")
        if not MIN_NDIS_MTU <= self.mtu_default <= self.mtu_max:
            raise UsageError(
                f"host profile: mtu_default {self.mtu_default} must lie in [{MIN_NDIS_MTU}, mtu_max {self.mtu_max}]"
            )
        if self.mtu_max > 65535 + ETH_HEADER_LEN:  # Linux NETVSC_MTU 65535 caps the guest side
            raise UsageError(f"host profile: mtu_max {self.mtu_max} exceeds 65549 (NETVSC_MTU + Ethernet header)")
        if not 0 <= self.max_subchannels <= MAX_SUBCHANNELS - 1:
            raise UsageError(f"host profile: max_subchannels {self.max_subchannels} must lie in [0, 63]")
        if self.recv_section_size is not None and self.recv_section_size < MIN_RECV_SECTION:
            raise UsageError(f"host profile: recv_section_size {self.recv_section_size} cannot hold a frame")
        if self.rx_layout not in RX_LAYOUTS:
            raise UsageError(f"host profile: rx_layout {self.rx_layout!r} must be one of {', '.join(RX_LAYOUTS)}")
        if self.send_section_size <= w.RNDIS_PACKET_MSG_SIZE or self.send_section_size % 8:
            raise UsageError(f"host profile: send_section_size {self.send_section_size} must be a multiple of 8 > 44")
        bad = [name for name in self.indicate_at_init if name not in INIT_INDICATIONS]
        if bad:
            raise UsageError(f"host profile: indicate_at_init names {', '.join(map(repr, bad))}; known: "
                             f"{', '.join(INIT_INDICATIONS)}")
        if self.link_flap_delay < 0:
            raise UsageError(f"host profile: link_flap_delay {self.link_flap_delay} must be >= 0")
        if self.keepalive_interval is not None and self.keepalive_interval <= 0:
            raise UsageError(f"host profile: keepalive_interval {self.keepalive_interval} must be > 0")
        if not 0 <= self.control_sections <= 64:
            raise UsageError(f"host profile: control_sections {self.control_sections} must lie in [0, 64]")

    @property
    def versions(self) -> tuple[int, ...]:
        """Versions this host accepts, ascending."""
        return tuple(v for v in w.NVSP_VERSIONS if self.min_version <= v <= self.max_version)

    def recv_section_for_mtu(self, ndis_mtu: int) -> int:
        """Receive sub-allocation size for a negotiated NDIS MTU (Ethernet header included)."""
        if self.recv_section_size is not None:
            return self.recv_section_size
        return RX_HEADER_RESERVE + ndis_mtu + RX_FOOTER_RESERVE
