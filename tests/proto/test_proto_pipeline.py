"""NvspGuest and RndisGuest driven together the way an engine drives them.

A scripted host (hand-built replies from tests/support/nvsp_host.py and
tests/support/rndis_host.py, i.e. struct + golden numbers) sits behind an in-memory "channel":
completions are routed with `expects()`, RNDIS control messages are copied into send-buffer
sections and sent with `Outbound.placed()`, and the host reads them back out of the section the
NVSP message names — so the whole Outbound contract is exercised, including section reuse on
ControlSendComplete.
"""

from __future__ import annotations

import struct
from typing import Any

from hvuio.proto.events import (
    NEED_DATA, ControlSendComplete, Inbound, InboundKind, LinkStatus, MacAddress, NvspReady,
    Outbound, RndisConfigured, SendBufReady,
)
from hvuio.proto.nvsp import BufferGrant, NvspGuest
from hvuio.proto.rndis import RndisGuest

from support.golden import off
from support.nvsp_host import T as NVS_T
from support.nvsp_host import chim_resp, init_resp, rxbuf_resp
from support.rndis_host import MT, PERM_MAC, Host, nvs_ack

SEND_SIZE = 64 * 1024
SECTION = 6144


class Engine:
    """The minimum an engine does: route, place, free sections, collect events."""

    def __init__(self) -> None:
        self.nvsp = NvspGuest(recv_buf=BufferGrant(0x10, 31 << 20),
                              send_buf=BufferGrant(0x11, SEND_SIZE))
        self.rndis: RndisGuest | None = None
        self.send_buf = bytearray(SEND_SIZE)
        self.free: list[int] = []
        self.in_use: dict[int, int] = {}  # trans_id -> section
        self.wire: list[tuple[int, bytes, bool]] = []  # what the host sees: (xid, nvsp, rc)
        self.events: list[Any] = []

    def send(self, outs: list[Outbound]) -> None:
        for o in outs:
            payload = o.payload
            if o.rndis is not None:
                section = self.free.pop(0)
                assert len(o.rndis) <= SECTION
                self.send_buf[section * SECTION:section * SECTION + len(o.rndis)] = o.rndis
                self.in_use[o.trans_id] = section
                payload = o.placed(section)
            self.wire.append((o.trans_id, payload, o.want_completion))

    def deliver(self, item: Inbound) -> None:
        if item.kind is InboundKind.COMPLETION and self.rndis and self.rndis.expects(item.trans_id):
            machine: NvspGuest | RndisGuest = self.rndis
        elif item.kind is InboundKind.RNDIS:
            assert self.rndis is not None
            machine = self.rndis
        else:
            machine = self.nvsp
        self.send(machine.receive(item))
        while (ev := machine.next_event()) is not NEED_DATA:
            self.events.append(ev)
            if isinstance(ev, SendBufReady):
                self.free = list(range(min(ev.count, SEND_SIZE // SECTION)))
            elif isinstance(ev, NvspReady):
                self.rndis = RndisGuest(ndis_version=ev.ndis_version)
            elif isinstance(ev, ControlSendComplete):
                self.free.append(self.in_use.pop(ev.trans_id))


def test_engine_brings_up_nvsp_then_rndis_over_send_buffer_sections() -> None:
    eng = Engine()
    eng.send(eng.nvsp.start())
    replies = {NVS_T["NVS_TYPE_INIT"]: init_resp(), NVS_T["NVS_TYPE_RXBUF_CONN"]: rxbuf_resp(),
               NVS_T["NVS_TYPE_CHIM_CONN"]: chim_resp(1, SECTION)}
    sent_types = []
    while eng.wire:  # phase 1: NVSP; NDIS config/version get no reply
        xid, payload, rc = eng.wire.pop(0)
        mtype = struct.unpack_from("<I", payload)[0]
        sent_types.append(mtype)
        if mtype in replies:
            assert rc
            eng.deliver(Inbound(InboundKind.COMPLETION, xid, replies[mtype]))
        else:
            assert not rc
    assert sent_types == [NVS_T[k] for k in ("NVS_TYPE_INIT", "NVS_TYPE_NDIS_CONF",
                                             "NVS_TYPE_NDIS_INIT", "NVS_TYPE_RXBUF_CONN",
                                             "NVS_TYPE_CHIM_CONN")]
    assert isinstance(eng.events[-1], SendBufReady) and eng.rndis is not None

    # phase 2: the engine starts RNDIS after SendBufReady
    host = Host(eng.rndis)
    seen_rndis: list[int] = []
    eng.send(eng.rndis.start())
    while eng.wire:
        xid, payload, rc = eng.wire.pop(0)
        assert rc and struct.unpack_from("<I", payload)[0] == NVS_T["NVS_TYPE_RNDIS"]
        idx, size = struct.unpack_from("<II", payload, off("hn_nvs_rndis", "chim_idx"))
        raw = bytes(eng.send_buf[idx * SECTION:idx * SECTION + size])
        seen_rndis.append(struct.unpack_from("<I", raw)[0])
        eng.deliver(Inbound(InboundKind.COMPLETION, xid, nvs_ack()))
        reply = _rndis_reply(host, raw)
        if reply is not None:
            eng.deliver(Inbound(InboundKind.RNDIS, 0, reply))
    last: Any = eng.events[-1]
    assert last == RndisConfigured()
    assert MacAddress(PERM_MAC, True) in eng.events and LinkStatus(True) in eng.events
    assert seen_rndis[0] == MT["RNDIS_INITIALIZE_MSG"] and len(seen_rndis) == 1 + len(host.seen)
    assert sorted(eng.free) == list(range(SEND_SIZE // SECTION))  # every section came back
    assert not eng.in_use

    # teardown: halt RNDIS, then revoke both buffers; the caller closes the channel
    eng.send(eng.rndis.halt())
    eng.send(eng.nvsp.stop())
    kinds = [struct.unpack_from("<I", p)[0] for _, p, _ in eng.wire]
    assert kinds == [NVS_T["NVS_TYPE_RNDIS"], NVS_T["NVS_TYPE_RXBUF_DISCONN"],
                     NVS_T["NVS_TYPE_CHIM_DISCONN"]]


def _rndis_reply(host: Host, raw: bytes) -> bytes | None:
    """The host's RNDIS answer to `raw` (Host's answer table, without touching the machine)."""
    from support.rndis_host import BASE, NOT_SUPPORTED, SUCCESS, init_cmplt, query_cmplt, set_cmplt

    mtype, _, rid = struct.unpack_from("<III", raw)
    if mtype == MT["RNDIS_INITIALIZE_MSG"]:
        return init_cmplt(rid)
    if mtype == MT["RNDIS_HALT_MSG"]:
        return None
    oid, ilen, ioff = struct.unpack_from("<III", raw, 12)
    host.seen.append((mtype, oid, raw[BASE + ioff:BASE + ioff + ilen]))
    if mtype == MT["RNDIS_SET_MSG"]:
        return set_cmplt(rid, SUCCESS)
    answer = host.answers.get(oid, NOT_SUPPORTED)
    if isinstance(answer, int):
        return query_cmplt(rid, b"", status=answer)
    return query_cmplt(rid, answer)
