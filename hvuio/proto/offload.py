"""NDIS task offloads as the guest negotiates them, sans-IO: what to ask the host for.

What lives here: `OffloadRequest` (the values of OID_TCP_OFFLOAD_PARAMETERS and their encoding),
`OffloadWanted` (what the guest's data path can use) and `negotiate_offloads` (the host's
capabilities + what we want -> the request, by Linux rndis_netdev_set_hwcaps' rules). RndisGuest
(proto/rndis.py) sends the query and the set; hvuio/offloads.py maps the accepted values to the
data path and the tap.

What must not live here: messages, state, I/O, the data path itself (_native/tx.c, rx.c).
"""

from __future__ import annotations

from dataclasses import dataclass

from hvuio.proto.events import OffloadCaps
from hvuio.wire import nvsp as wn
from hvuio.wire import rndis as wr

__all__ = ["OffloadRequest", "OffloadWanted", "negotiate_offloads"]

_P = wr.NdisOffloadParam
_T = wr.NdisOffloadToggle


@dataclass(frozen=True, slots=True)
class OffloadRequest:
    """Values for OID_TCP_OFFLOAD_PARAMETERS.

    Default: everything off (what `hvuio up --no-offload` sets). With offloads, RndisGuest builds
    one from the host's capabilities instead (OffloadWanted, negotiate_offloads). RSC fields exist
    only from NDIS 6.30 and are dropped below it.
    """

    ip4_checksum: _P = _P.OFF
    tcp4_checksum: _P = _P.OFF
    udp4_checksum: _P = _P.OFF
    tcp6_checksum: _P = _P.OFF
    udp6_checksum: _P = _P.OFF
    lsov2_ip4: _T = _T.OFF
    lsov2_ip6: _T = _T.OFF
    rsc_ip4: _T = _T.OFF
    rsc_ip6: _T = _T.OFF

    def encode(self, ndis_version: int) -> bytes:
        p = wr.NdisOffloadParams()
        p.header.type = wr.NdisObjectType.DEFAULT
        if ndis_version >= wn.NdisVersion.V6_30:
            p.header.revision, size = wr.NDIS_OFFLOAD_PARAMS_REV_3, wr.NDIS_OFFLOAD_PARAMS_SIZE
            p.rsc_ip4, p.rsc_ip6 = self.rsc_ip4, self.rsc_ip6
        else:
            p.header.revision, size = wr.NDIS_OFFLOAD_PARAMS_REV_2, wr.NDIS_OFFLOAD_PARAMS_SIZE_6_1
        p.header.size = size
        p.ip4_checksum, p.tcp4_checksum, p.udp4_checksum = (
            self.ip4_checksum, self.tcp4_checksum, self.udp4_checksum)
        p.tcp6_checksum, p.udp6_checksum = self.tcp6_checksum, self.udp6_checksum
        p.lsov2_ip4, p.lsov2_ip6 = self.lsov2_ip4, self.lsov2_ip6
        return bytes(memoryview(p).cast("B"))[:size]


@dataclass(frozen=True, slots=True)
class OffloadWanted:
    """What the guest's data path can use; RndisGuest enables the part the host offers.

    `checksum`: TCP/UDP checksum offload, transmit and receive (never the IPv4 header checksum); `lso`: LSOv2
    for IPv4/IPv6 (needs the TCP checksum of that family, as in Linux); `rsc`: receive segment
    coalescing, which Linux asks for only from NVSP 6.1 (the NDIS config message then carries the
    RSC capability) and which exists only from NDIS 6.30 — the caller passes rsc=True only on
    NVSP >= 6.1, the machine checks NDIS 6.30.
    """

    checksum: bool = True
    lso: bool = True
    rsc: bool = False


# Capability bits (golden linux:ndis_offload_caps).
_ALL_TCP4 = int(wr.NdisTxCsumCap.TCP | wr.NdisTxCsumCap.TCPOPT)                          # 0x14
_ALL_TCP6 = int(wr.NdisTxCsumCap.TCP | wr.NdisTxCsumCap.TCPOPT | wr.NdisTxCsumCap.IP4OPT_OR_IP6EXT)  # 0x15
_LSOV2_CAP_IP6 = int(wr.NdisLsov2Cap.IP6EXT | wr.NdisLsov2Cap.TCP6OPT)                   # 5


def negotiate_offloads(want: OffloadWanted, caps: OffloadCaps,
                       ndis_version: int) -> tuple[OffloadRequest, int]:
    """The OID_TCP_OFFLOAD_PARAMETERS to set and the LSO maximum size (0 = no LSO), by Linux's
    rndis_netdev_set_hwcaps: TCP checksum of a family when its transmit capability has TCP and
    TCP options (IPv6: and extension headers); LSOv2 of that family when it has the TCP checksum
    and 802.3 encapsulation (IPv6: and the extension/option bits); UDP checksum when offered and
    NDIS >= 6.30 (Linux: not on NVSP <= 4, which uses NDIS 6.1); RSC when both families offer it.
    The IPv4 header checksum is always set OFF (TX and RX disabled), as Linux does whatever the host
    offers (rndis_filter.c rndis_netdev_set_hwcaps: the kernel computes and checks it itself).
    Everything not enabled is set OFF explicitly."""
    off, txrx = _P.OFF, _P.TX_RX
    ip4 = off   # never offloaded (VMBUS.md §4.22)
    tcp4 = udp4 = tcp6 = udp6 = off
    lso4 = lso6 = _T.OFF
    rsc = _T.OFF
    lso_max = 0
    udp_ok = ndis_version >= wn.NdisVersion.V6_30
    if want.checksum:
        if caps.ip4_tx_csum & _ALL_TCP4 == _ALL_TCP4:
            tcp4 = txrx
            if udp_ok and caps.ip4_tx_csum & wr.NdisTxCsumCap.UDP:
                udp4 = txrx
            if (want.lso and caps.lsov2_ip4_encap & wr.NdisOffloadEncap.ENCAP_8023
                    and caps.lsov2_ip4_max_size > 0):
                lso4 = _T.ON
                lso_max = caps.lsov2_ip4_max_size
        if caps.ip6_tx_csum & _ALL_TCP6 == _ALL_TCP6:
            tcp6 = txrx
            if udp_ok and caps.ip6_tx_csum & wr.NdisTxCsumCap.UDP:
                udp6 = txrx
            if (want.lso and caps.lsov2_ip6_encap & wr.NdisOffloadEncap.ENCAP_8023
                    and caps.lsov2_ip6_options & _LSOV2_CAP_IP6 == _LSOV2_CAP_IP6
                    and caps.lsov2_ip6_max_size > 0):
                lso6 = _T.ON
                lso_max = min(lso_max or caps.lsov2_ip6_max_size, caps.lsov2_ip6_max_size)
    if want.rsc and ndis_version >= wn.NdisVersion.V6_30 and caps.rsc_ip4 and caps.rsc_ip6:
        rsc = _T.ON
    req = OffloadRequest(ip4_checksum=ip4, tcp4_checksum=tcp4, udp4_checksum=udp4,
                         tcp6_checksum=tcp6, udp6_checksum=udp6, lsov2_ip4=lso4, lsov2_ip6=lso6,
                         rsc_ip4=rsc, rsc_ip6=rsc)
    return req, lso_max
