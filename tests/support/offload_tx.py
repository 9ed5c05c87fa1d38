"""What the guest's C data path transmitted, as the host sees it, for the offload tests
(tests/native/test_offload_guest_tx.py, test_datapath_tx_agg.py).

`decode_msg` reads one RNDIS packet message with its per-packet info from the golden layout
(rndis_packet_msg, rndis_pktinfo), never from hvuio.wire, and checks every length and offset on
the way; `Sent` is the result. SECTION is Linux's send-section size, ALL the checksum offloads
all on (keyword arguments of hvuio.native.datapath.Offloads).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from support.golden import GOLDEN
from support.offload_frames import Pkt, parse

C = GOLDEN["constants"]
SIZES = C["linux:derived_sizes"]
SECTION = 6144                       # golden linux:netvsc_misc NETVSC_SEND_SECTION_SIZE
ALL = dict(tx_csum_tcp4=True, tx_csum_udp4=True, tx_csum_tcp6=True, tx_csum_udp6=True)


def fields(struct_name: str) -> dict[str, int]:
    return {f["name"]: f["offset"] for f in GOLDEN["structs"][struct_name]["fields"]}


RPM = fields("rndis_packet_msg")
RPI = fields("rndis_pktinfo")


@dataclass
class Sent:
    ppis: dict[int, int]     # pktinfo type -> 4-byte value
    frame: bytes

    @property
    def pkt(self) -> Pkt:
        return parse(self.frame)


def decode_msg(msg: bytes) -> Sent:
    """One unpadded RNDIS packet message (exactly msg_len bytes), checked against the golden layout."""
    size = len(msg)

    def u32(name: str) -> int:
        return int(struct.unpack_from("<I", msg, RPM[name])[0])

    assert u32("type") == C["rndis_msg_type"]["RNDIS_PACKET_MSG"] and u32("len") == size
    ppi_off, ppi_len, doff, dlen = u32("pktinfooffset"), u32("pktinfolen"), u32("dataoffset"), u32("datalen")
    base = C["rndis_offset_bases"]["RNDIS_PACKET_MSG_OFFSET_ABS(0)"]
    if ppi_len:
        assert ppi_off == GOLDEN["structs"]["rndis_packet_msg"]["size"] - base
    assert doff == GOLDEN["structs"]["rndis_packet_msg"]["size"] - base + ppi_len   # data right after
    assert base + doff + dlen == size
    ppis: dict[int, int] = {}
    pos, end = base + ppi_off, base + ppi_off + ppi_len
    while pos < end:
        psize = struct.unpack_from("<I", msg, pos + RPI["size"])[0]
        ptype = struct.unpack_from("<I", msg, pos + RPI["type"])[0]
        poff = struct.unpack_from("<I", msg, pos + RPI["offset"])[0]
        assert psize == SIZES["NDIS_CSUM_PPI_SIZE"] and poff == C["rndis_misc"]["RNDIS_PKTINFO_OFFSET"]
        assert ptype not in ppis
        ppis[ptype] = struct.unpack_from("<I", msg, pos + poff)[0]
        pos += psize
    return Sent(ppis, msg[base + doff:base + doff + dlen])
