"""A NIC's offloads, from what the host granted to the bits the data path and the tap are set up with.

What lives here, as one chain of typed values:

    proto OffloadsConfigured (the NDIS values the host accepted: hvuio/proto/offload.py asks)
      -> datapath_offloads()  -> hvuio.native.datapath_config.Offloads (what the C data path may use)
      -> tun_offload()        -> hvuio.netdev.tap.TunOffload (TUNSETOFFLOAD: what the kernel may
                                 hand the tap unfinished)

and `NicOffloads`, the offload part of a NIC's negotiated values (NicInfo.offloads): whether
offloads were asked for, the host's capabilities, what it accepted, with `to_dict()`, their form
in `up --json` and the status record (`enabled`, by data-path meaning; `host`, the capability
values hvuio acts on).

The rules: a checksum is on for transmit when the host accepted TX or TX+RX for it; receive
checksums are on when the host accepted RX or TX+RX for any TCP/UDP family; LSOv2 of a family is
on when accepted ON, RSC when accepted ON for both families. The tap gets TUN_F_CSUM when
any transmit checksum is offloaded, TUN_F_TSO4/TSO6 with LSO of that family (the kernel wants the
checksum with TSO).

What must not live here: negotiating with the host (proto/), the data path (hvuio/native/,
_native/), opening or configuring the tap (hvuio/netdev/tap.py), text (hvuio/cli/render.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from hvuio.native.datapath_config import Offloads
from hvuio.netdev.tap import TunOffload
from hvuio.proto.events import OffloadCaps, OffloadsConfigured
from hvuio.wire import rndis as wr

__all__ = ["NicOffloads", "datapath_offloads", "offloads_enabled", "tun_offload"]

_TX = (wr.NdisOffloadParam.TX, wr.NdisOffloadParam.TX_RX)
_RX = (wr.NdisOffloadParam.RX, wr.NdisOffloadParam.TX_RX)


def datapath_offloads(o: OffloadsConfigured | None) -> Offloads:
    """What the data path may use of what the host accepted (all off for None: offloads off,
    refused, or not negotiated)."""
    if o is None:
        return Offloads()
    on = wr.NdisOffloadToggle.ON
    return Offloads(tx_csum_tcp4=o.tcp4_checksum in _TX, tx_csum_udp4=o.udp4_checksum in _TX,
                    tx_csum_tcp6=o.tcp6_checksum in _TX, tx_csum_udp6=o.udp6_checksum in _TX,
                    lso4=o.lsov2_ip4 == on, lso6=o.lsov2_ip6 == on, lso_max_size=o.lso_max_size,
                    rx_csum=any(v in _RX for v in (o.tcp4_checksum, o.udp4_checksum,
                                                    o.tcp6_checksum, o.udp6_checksum)),
                    rsc=o.rsc_ip4 == on and o.rsc_ip6 == on)


def tun_offload(d: Offloads) -> TunOffload:
    """The TUNSETOFFLOAD bits for a data path with offloads `d`."""
    bits = TunOffload(0)
    if d.any_tx:
        bits |= TunOffload.CSUM
    if d.lso4:
        bits |= TunOffload.TSO4
    if d.lso6:
        bits |= TunOffload.TSO6
    return bits


def offloads_enabled(o: OffloadsConfigured) -> dict[str, bool | int]:
    """What the host accepted, by data-path meaning: the `enabled` object of `up --json` (key
    order is the order `up` prints them in). `ip4_csum` is the IPv4 header checksum: always off,
    since hvuio never asks for it and the kernel computes and checks it itself, as with Linux's
    netvsc (VMBUS.md §4.22)."""
    d = datapath_offloads(o)
    return {"ip4_csum": o.ip4_checksum in _TX, "tx_csum_tcp4": d.tx_csum_tcp4,
            "tx_csum_udp4": d.tx_csum_udp4, "tx_csum_tcp6": d.tx_csum_tcp6,
            "tx_csum_udp6": d.tx_csum_udp6, "rx_csum": d.rx_csum, "lso4": d.lso4, "lso6": d.lso6,
            "lso_max_size": d.lso_max_size, "rsc": d.rsc}


def _host_dict(c: OffloadCaps) -> dict[str, bool | int]:
    return {"ip4_tx_csum": c.ip4_tx_csum, "ip4_rx_csum": c.ip4_rx_csum, "ip6_tx_csum": c.ip6_tx_csum,
            "ip6_rx_csum": c.ip6_rx_csum, "lsov2_ip4_max_size": c.lsov2_ip4_max_size,
            "lsov2_ip6_max_size": c.lsov2_ip6_max_size, "rsc_ip4": c.rsc_ip4, "rsc_ip6": c.rsc_ip6}


@dataclass(frozen=True, slots=True)
class NicOffloads:
    """The offloads of one NIC as bring-up left them."""

    #: offloads were asked for (False: `up --no-offload`, everything set off)
    requested: bool
    #: the host's capabilities, when it answered the query
    host: OffloadCaps | None = None
    #: what the host accepted, when it accepted a set that hvuio computed
    accepted: OffloadsConfigured | None = None

    def datapath(self) -> Offloads:
        """What the data path may use (all off unless the host accepted offloads)."""
        return datapath_offloads(self.accepted)

    def to_dict(self) -> dict[str, object]:
        """The `offloads` object of `up --json` and the status record."""
        out: dict[str, object] = {
            "requested": self.requested,
            "enabled": {} if self.accepted is None else offloads_enabled(self.accepted)}
        if self.host is not None:
            out["host"] = _host_dict(self.host)
        return out
