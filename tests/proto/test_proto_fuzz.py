"""Fuzz invariant of the guest machines.

Invariant: whatever bytes the host sends, fed whole (one packet or one RNDIS message per call,
as the channel hands them up), in any state, a machine either returns Outbound messages and
queues events, or raises HostProtocolError — or HostRefusedError, the host's well-formed "no"
(a status field it controls). Nothing else escapes: no IndexError, struct.error, ValueError,
KeyError, ctypes errors, LocalProtocolError. After raising, the machine is in ERROR and every
later call raises LocalProtocolError.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hvuio.errors import HostProtocolError, HostRefusedError, LocalProtocolError
from hvuio.proto.events import NEED_DATA, Event, Inbound, InboundKind, Outbound
from hvuio.proto.nvsp import BufferGrant, NvspGuest
from hvuio.proto.rndis import RndisGuest
from hvuio.proto.states import NvspState, RndisState

from support.nvsp_host import chim_resp, comp, init_resp, rxbuf_resp
from support.rndis_host import Host, init_cmplt
from support.strategies import nvsp_payload, rndis_message

HOST_ERRORS = (HostProtocolError, HostRefusedError)


def _nvsp_at(stage: int) -> tuple[NvspGuest, list[int]]:
    """A machine in one of its live states, and the trans_ids it has used."""
    m = NvspGuest(recv_buf=BufferGrant(1, 31 << 20), send_buf=BufferGrant(2, 16 << 20))
    outs = m.start()
    ids = [o.trans_id for o in outs]
    replies = [init_resp(2), init_resp(1), rxbuf_resp(), chim_resp()]
    for reply in replies[:min(stage, 4)]:
        outs = m.receive(comp(outs[-1], reply))
        ids += [o.trans_id for o in outs]
    if stage == 5:
        ids += [o.trans_id for o in m.request_subchannels(4)]
    elif stage == 6:
        ids += [o.trans_id for o in m.switch_datapath(True)]
    while m.next_event() is not NEED_DATA:
        pass
    return m, ids


def _check(m: NvspGuest | RndisGuest, item: Inbound) -> bool:
    """Feed one item; True if the machine is still alive."""
    try:
        outs = m.receive(item)
    except HOST_ERRORS:
        assert m.state in (NvspState.ERROR, RndisState.ERROR)
        try:
            m.next_event()
        except LocalProtocolError:
            return False
        raise AssertionError("a machine in ERROR accepted a call")
    assert all(isinstance(o, Outbound) for o in outs)
    while (ev := m.next_event()) is not NEED_DATA:
        assert isinstance(ev, Event)
    return True


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stage=st.integers(0, 6),
       packets=st.lists(st.tuples(st.sampled_from([InboundKind.INBAND, InboundKind.COMPLETION]),
                                  st.one_of(st.integers(0, 8), st.integers(0, 2**64 - 1)),
                                  nvsp_payload()), min_size=1, max_size=6))
def test_nvsp_any_host_bytes(stage: int, packets: list[tuple[InboundKind, int, bytes]]) -> None:
    m, ids = _nvsp_at(stage)
    for kind, xid, payload in packets:
        if xid <= 8 and ids:
            xid = ids[xid % len(ids)]  # mostly ids the machine really used
        if not _check(m, Inbound(kind, xid, payload)):
            break


def _rndis_at(stage: int) -> tuple[RndisGuest, list[int]]:
    m = RndisGuest(ndis_version=0x6001E)
    outs = m.start()
    ids = [o.trans_id for o in outs]
    if stage == 1:
        ids += [o.trans_id for o in m.receive(Inbound(InboundKind.RNDIS, 0, init_cmplt(1)))]
    elif stage == 2:
        Host(m).run(outs)
        ids += [o.trans_id for o in m.query(0x00010107)]
    while m.next_event() is not NEED_DATA:
        pass
    return m, ids


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stage=st.integers(0, 2),
       items=st.lists(st.one_of(
           st.tuples(st.just(InboundKind.RNDIS), st.just(0), rndis_message()),
           st.tuples(st.just(InboundKind.COMPLETION), st.integers(0, 2**64 - 1),
                     nvsp_payload())), min_size=1, max_size=6))
def test_rndis_any_host_bytes(stage: int, items: list[tuple[InboundKind, int, bytes]]) -> None:
    m, ids = _rndis_at(stage)
    for kind, xid, payload in items:
        if kind is InboundKind.COMPLETION and ids and xid % 2:
            xid = ids[xid % len(ids)]
        if not _check(m, Inbound(kind, xid, payload)):
            break
