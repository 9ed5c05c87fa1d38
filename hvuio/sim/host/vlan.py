"""802.1Q tags between the emulated host's network and the guest's per-packet info, sans-IO.

What lives here: the conversion between a tag in an Ethernet frame (TPID 0x8100 after the MAC
addresses, then the TCI: priority bits 13-15, DEI bit 12, VLAN id bits 0-11) and the NDIS 802.1Q
pktinfo value (type 6: priority bits 0-2, CFI bit 3, VLAN id bits 4-15; [OV] rndisprot.rs
`EthVlanInfo`), `strip` (a frame from the network loses its tag, which goes to the guest out of
band) and `insert` (the tag a guest sent in the pktinfo goes back onto the wire frame). A frame
with a virtio_net_hdr (offload.GsoFrame) keeps its offsets right: they move with the 4 bytes.

Who uses it: receive.py with `HostProfile.vlan_oob` (a trunk-mode Hyper-V port: the host delivers
tags out of band), send.py always ([OV] lib.rs hands a send's 802.1Q pktinfo to its backend as
the frame's VLAN metadata). What must not live here: pktinfo parsing (offload.py), I/O.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Final

from hvuio.sim.host import offload as ho

__all__ = ["TPID", "info_of_tci", "insert", "strip", "tci_of_info"]

TPID: Final = 0x8100
_HLEN: Final = 4


def info_of_tci(tci: int) -> int:
    """The 802.1Q pktinfo value of a TCI."""
    return (tci >> 13) | ((tci >> 12) & 1) << 3 | (tci & 0xFFF) << 4


def tci_of_info(info: int) -> int:
    """The TCI of an 802.1Q pktinfo value (its reserved bits 16-31 ignored)."""
    return (info & 0x7) << 13 | ((info >> 3) & 1) << 12 | (info >> 4) & 0xFFF


def _moved(frame: bytes, body: bytes, delta: int) -> bytes:
    """`body` with the virtio_net_hdr of `frame` (if it has one) shifted by delta bytes."""
    if not isinstance(frame, ho.GsoFrame):
        return body
    v = frame.vnet
    return ho.GsoFrame.make(body, replace(
        v, csum_start=v.csum_start + delta if v.flags & ho.VNET_F_NEEDS_CSUM else v.csum_start,
        hdr_len=v.hdr_len + delta if v.hdr_len > _HLEN else v.hdr_len))


def strip(frame: bytes) -> tuple[bytes, int | None]:
    """(the frame without its outer 802.1Q tag, the tag's pktinfo value), or (frame, None) when it
    has none. A frame whose offsets point into the tag keeps it (None)."""
    if len(frame) < 18 or int.from_bytes(frame[12:14], "big") != TPID:
        return frame, None
    if isinstance(frame, ho.GsoFrame) and frame.vnet.flags & ho.VNET_F_NEEDS_CSUM and frame.vnet.csum_start < 18:
        return frame, None
    info = info_of_tci(int.from_bytes(frame[14:16], "big"))
    return _moved(frame, bytes(frame[:12]) + bytes(frame[16:]), -_HLEN), info


def insert(frame: bytes, info: int) -> bytes:
    """The frame with the 802.1Q tag of pktinfo value `info` after its MAC addresses."""
    tag = TPID.to_bytes(2, "big") + tci_of_info(info).to_bytes(2, "big")
    return _moved(frame, bytes(frame[:12]) + tag + bytes(frame[12:]), _HLEN)
