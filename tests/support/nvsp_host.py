"""Host NVSP messages for the guest's sans-IO NvspGuest (tests/proto, tests/nic).

Packed with struct from the golden numbers (message types, status codes, field offsets of DPDK's
hn_nvs_* structs), never with hvuio.wire, so an encoder bug and a decoder bug cannot cancel out.
`comp(out, payload)` wraps a reply as the completion of one of the guest's Outbound messages.
"""

from __future__ import annotations

from hvuio.proto.events import Inbound, InboundKind, Outbound
from support.golden import GOLDEN, off, pack

T = GOLDEN["constants"]["nvs_msg_type"]
ST = GOLDEN["constants"]["linux:nvsp_status"]
OK, FAIL = ST["NVSP_STAT_SUCCESS"], ST["NVSP_STAT_FAIL"]


def init_resp(status: int = OK, ver: int = 0) -> bytes:
    return pack("hn_nvs_init_resp", type=T["NVS_TYPE_INIT_RESP"], ver=ver, status=status)


def rxbuf_resp(status: int = OK, sections: list[tuple[int, int, int, int]] | None = None,
               nsect: int | None = None) -> bytes:
    if sections is None:
        sections = [(0, 1728, 18811, 1728 * 18811)]
    head = pack("hn_nvs_rxbuf_connresp", type=T["NVS_TYPE_RXBUF_CONNRESP"], status=status,
                nsect=len(sections) if nsect is None else nsect)
    head = head[:off("hn_nvs_rxbuf_connresp", "nvs_sect")]
    body = b"".join(
        pack("hn_nvs_rxbuf_sect", start=s, slotsz=z, slotcnt=c, end=e) for s, z, c, e in sections)
    return head + body


def chim_resp(status: int = OK, sectsz: int = 6144) -> bytes:
    return pack("hn_nvs_chim_connresp", type=T["NVS_TYPE_CHIM_CONNRESP"], status=status,
                sectsz=sectsz)


def subch_resp(status: int = OK, n: int = 0) -> bytes:
    # Linux's minimum: header + nvsp_5_subchannel_complete (12 bytes), not DPDK's padded 40.
    return pack("hn_nvs_subch_resp", type=T["NVS_TYPE_SUBCH_RESP"], status=status,
                nsubch=n)[:12]


def comp(out: Outbound, payload: bytes) -> Inbound:
    return Inbound(InboundKind.COMPLETION, out.trans_id, payload)
