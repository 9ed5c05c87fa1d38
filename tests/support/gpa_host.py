"""A fake host that also reads GPA-direct (type 9) sends, for the C data path's GPA tests
(tests/native/test_datapath_gpa.py).

`slot_pool` is a tests/support/guestpool.py FakePool sized in GPA slots, page numbers from 0x5000
(shuffled, so a host that took "consecutive pages" for granted would read the wrong bytes).
`GpaHost` is tests/support/fakehost.py's FakeHost with such a pool
given to the DataPath; `messages` turns what the guest wrote to its outbound ring into the RNDIS
packet messages the host would see, in ring order: from send sections (split at msg_len when the
guest aggregated several) or by page number from the pool. A type-9 packet is checked as the
host must check it (VMBUS.md §3.7): one range, byte_offset 0, as many page numbers as the
range covers, every one of them a page of the pool; NVS 107 data with section 0xFFFFFFFF, size 0;
completion requested; trans_id TX_TAG | GPA_TAG | slot.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from hvuio.native.datapath import GPA_SLOT_SIZE, GPA_TAG, TX_TAG, Status
from hvuio.sim.vsp.ring import RingPacket
from support.fakehost import NVS_RNDIS, PKT_INBAND, FakeHost
from support.guestpool import FakePool

PAGE = 4096
PKT_GPA = 0x9
PFN_BASE = 0x5000


def slot_pool(slots: int, *, extra: int = 0, seed: int = 1) -> FakePool:
    """A FakePool of `slots` GPA slots plus `extra` pages."""
    return FakePool(slots * GPA_SLOT_SIZE + extra * PAGE, pfn_base=PFN_BASE, seed=seed)


@dataclass
class Msg:
    """One RNDIS packet message as the host received it."""

    data: bytes
    gpa: bool              # came GPA-direct
    trans_id: int


class GpaHost(FakeHost):
    """FakeHost with a FakePool of `slots` slots handed to the DataPath as its gpa_pool."""

    def __init__(self, *, slots: int = 4, pool: FakePool | None = None, **kw: Any) -> None:
        self.pool = pool if pool is not None else slot_pool(slots)
        kw.setdefault("send_section", 6144)
        kw.setdefault("tx_data", 256 * 1024)
        super().__init__(gpa_pool=self.pool, **kw)

    def gpa_message(self, pkt: RingPacket) -> bytes:
        """The RNDIS message of a type-9 send, every field checked."""
        assert pkt.type == PKT_GPA and pkt.flags == 1
        assert pkt.trans_id & (TX_TAG | GPA_TAG) == TX_TAG | GPA_TAG
        assert pkt.trans_id & ~(TX_TAG | GPA_TAG) < self.dp.gpa_slots
        reserved, nranges, count, offset = struct.unpack_from("<IIII", pkt.header)
        assert (reserved, nranges, offset) == (0, 1, 0) and count > 0
        npages = -(-count // PAGE)
        assert len(pkt.header) == 16 + 8 * npages and npages <= GPA_SLOT_SIZE // PAGE
        pfns = list(struct.unpack_from(f"<{npages}Q", pkt.header, 16))
        assert all(self.pool.knows(p) for p in pfns)
        nvs_type, chan, section, size = struct.unpack_from("<IIII", pkt.payload)
        assert (nvs_type, chan, section, size) == (NVS_RNDIS, 0, 0xFFFFFFFF, 0)
        assert len(pkt.payload) == 40 and pkt.payload[16:] == bytes(24)
        msg = self.pool.read(tuple(pfns), 0, count)
        assert struct.unpack_from("<II", msg) == (1, count)          # RNDIS packet, msg_len = the range
        return msg

    def section_messages(self, pkt: RingPacket) -> list[bytes]:
        """The RNDIS messages of an NVS 107 send-section send (one, or several aggregated)."""
        assert pkt.type == PKT_INBAND and pkt.flags == 1 and pkt.trans_id & TX_TAG
        assert not pkt.trans_id & GPA_TAG
        nvs_type, chan, idx, size = struct.unpack_from("<IIII", pkt.payload)
        assert (nvs_type, chan) == (NVS_RNDIS, 0) and idx == pkt.trans_id & ~TX_TAG
        data = self.section_bytes(idx, size)
        out, pos = [], 0
        while pos < size:
            mtype, mlen = struct.unpack_from("<II", data, pos)
            assert mtype == 1 and 0 < mlen <= size - pos
            out.append(data[pos:pos + mlen])
            pos += mlen
        return out

    def messages(self, pkts: list[RingPacket]) -> list[Msg]:
        out: list[Msg] = []
        for p in pkts:
            if p.type == PKT_GPA:
                out.append(Msg(self.gpa_message(p), True, p.trans_id))
            else:
                out.extend(Msg(m, False, p.trans_id) for m in self.section_messages(p))
        return out

    def pump(self, *, complete: bool = True, rounds: int = 10000) -> list[Msg]:
        """Runs TX (completing every send at once when `complete`) until the tap is empty."""
        out: list[Msg] = []
        for _ in range(rounds):
            status = self.dp.tx()
            pkts = self.drain()
            out.extend(self.messages(pkts))
            if complete:
                for p in pkts:
                    self.complete_tx(p.trans_id)
            self.dp.rx()
            if status is Status.IDLE and not pkts:
                return out
        raise AssertionError("TX did not settle")


def frame_of(msg: bytes) -> bytes:
    """The frame inside an RNDIS packet message (data offset counted from byte 8)."""
    doff, dlen = struct.unpack_from("<II", msg, 8)
    assert 8 + doff + dlen <= len(msg)
    return msg[8 + doff:8 + doff + dlen]


__all__ = ["GpaHost", "slot_pool", "Msg", "frame_of", "PAGE", "PFN_BASE", "PKT_GPA"]
