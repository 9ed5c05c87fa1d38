"""Where RNDIS control messages travel: control pages (GPA-direct) or send sections, and the
one-way fallback from pages to sections (hvuio/proto/sections.py, hvuio/proto/netvsc.py).

NetvscGuest is driven with hand-built host replies (tests/support/nvsp_host.py, rndis_host.py);
ControlSections is exercised alone for the allocation rules, and under any order of sends,
completions and the fallback for its invariants. Time is the caller's: `tick(now)`.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from hvuio.errors import HostProtocolError, HostRefusedError, HostTimeoutError
from hvuio.proto import limits
from hvuio.proto.events import (
    CompletionDropped, ControlFallback, ControlSendComplete, Inbound, InboundKind, Outbound, RndisReady, Send,
)
from hvuio.proto.netvsc import NetvscGuest
from hvuio.proto.nvsp import BufferGrant
from hvuio.proto.sections import ControlSections, SectionPool
from hvuio.proto.states import RndisState

from support.golden import off
from support.nvsp_host import FAIL, chim_resp, init_resp, rxbuf_resp
from support.rndis_host import MT, init_cmplt, nvs_ack

RECV_SIZE = 64 * 1024
SEND_SIZE = 32 * 6144
SECTION = 6144
NO_SECTION = 0xFFFFFFFF
PAGE = limits.CONTROL_PAGE_SIZE


def sends(effects: list[object]) -> list[Send]:
    return [e for e in effects if isinstance(e, Send)]


def nvsp_107(send: Send) -> tuple[int, int, int]:
    """(channel type, section index, section size) of the NVSP message a Send writes."""
    p = send.payload
    return (struct.unpack_from("<I", p, off("hn_nvs_rndis", "rndis_mtype"))[0],
            struct.unpack_from("<I", p, off("hn_nvs_rndis", "chim_idx"))[0],
            struct.unpack_from("<I", p, off("hn_nvs_rndis", "chim_sz"))[0])


def at_rndis_init(control_pages: int = limits.CONTROL_PAGES) -> tuple[NetvscGuest, Send]:
    """A NetvscGuest whose NVSP bring-up is done; the RNDIS INITIALIZE Send it produced."""
    g = NetvscGuest(recv_buf=BufferGrant(1, RECV_SIZE), send_buf=BufferGrant(2, SEND_SIZE),
                    control_pages=control_pages)
    last = sends(g.start())[-1]
    for reply in (init_resp(), rxbuf_resp(sections=[(0, 2048, RECV_SIZE // 2048, RECV_SIZE)]),
                  chim_resp(sectsz=SECTION)):
        last = sends(g.receive(Inbound(InboundKind.COMPLETION, last.message.trans_id, reply)))[-1]
    assert last.message.rndis is not None
    assert struct.unpack_from("<I", last.message.rndis)[0] == MT["RNDIS_INITIALIZE_MSG"]
    return g, last


def complete(g: NetvscGuest, send: Send, status: int = 1) -> list[object]:
    return g.receive(Inbound(InboundKind.COMPLETION, send.message.trans_id, nvs_ack(status)))


def request_id(send: Send) -> int:
    assert send.message.rndis is not None
    return int(struct.unpack_from("<I", send.message.rndis, 8)[0])


def msg(xid: int, size: int = 64) -> Outbound:
    return Outbound(bytes(40), xid, True, bytes([xid & 0xFF]) * size)


# ---- NetvscGuest: pages vs sections ---------------------------------------------------------------

def test_with_control_pages_the_initialize_goes_to_a_page_naming_no_section() -> None:
    g, init = at_rndis_init()
    assert init.gpa_direct and init.page == 0 and init.section is None and init.offset == 0
    assert nvsp_107(init) == (1, NO_SECTION, 0)  # control channel, section 0xFFFFFFFF, size 0
    assert init.message.want_completion
    assert g.gpa_direct and g.sections is not None and g.sections.gpa_direct


def test_without_control_pages_everything_is_as_before() -> None:
    g, init = at_rndis_init(control_pages=0)
    assert not init.gpa_direct and init.page is None and init.section is not None
    assert init.section >= g.data_sections and init.offset == init.section * SECTION
    assert nvsp_107(init) == (1, init.section, len(init.message.rndis or b""))
    assert not g.gpa_direct


def test_the_page_is_freed_on_completion_and_the_next_request_reuses_it() -> None:
    g, init = at_rndis_init()
    assert g.sections is not None and g.sections.in_flight == 1
    assert complete(g, init) == [ControlSendComplete(trans_id=init.message.trans_id)]
    assert g.sections.in_flight == 0 and g.sections.pages is not None and g.sections.pages.available == 16
    nxt = sends(g.receive(Inbound(InboundKind.RNDIS, 0x55, init_cmplt(request_id(init)))))
    assert len(nxt) == 1 and nxt[0].gpa_direct
    assert g.sections.sent_gpa == 2 and g.sections.sent_section == 0


def test_control_pages_outside_the_contract_are_refused() -> None:
    from hvuio.errors import LocalProtocolError

    with pytest.raises(LocalProtocolError, match="control_pages 17"):
        NetvscGuest(recv_buf=BufferGrant(1, RECV_SIZE), send_buf=BufferGrant(2, SEND_SIZE), control_pages=17)
    with pytest.raises(LocalProtocolError, match="may not cross"):
        ControlSections(SectionPool(8, 8, SECTION), pages=SectionPool(0, 4, 2 * PAGE))


# ---- ControlSections alone ------------------------------------------------------------------------

def placement(pages: int = 4, sections: int = 2) -> ControlSections:
    return ControlSections(SectionPool(10, sections, SECTION), pages=SectionPool(0, pages, PAGE), limit=8)


def test_messages_wait_when_every_page_is_busy_and_take_the_freed_page() -> None:
    cs = placement(pages=2)
    out = cs.place([msg(1), msg(2), msg(3)])
    assert [(s.page, s.offset) for s in out] == [(0, 0), (1, PAGE)]
    assert cs.waiting == 1 and cs.queued == 1
    freed = cs.release(2)
    assert [(s.message.trans_id, s.page) for s in freed] == [(3, 1)]
    assert cs.waiting == 0 and cs.in_flight == 2


def test_a_message_larger_than_a_page_takes_a_section_never_two_pages() -> None:
    cs = placement()
    big, small = msg(1, PAGE + 1), msg(2, PAGE)
    out = cs.place([big, small])
    assert (out[0].section, out[0].page, out[0].offset) == (10, None, 10 * SECTION)
    assert nvsp_107(out[0])[1:] == (10, PAGE + 1)
    assert (out[1].page, out[1].section) == (0, None) and nvsp_107(out[1])[1:] == (NO_SECTION, 0)
    assert cs.is_gpa_direct(2) and not cs.is_gpa_direct(1)
    cs.release(1)
    assert cs.pool.available == 2


def test_order_is_kept_a_small_message_never_overtakes_a_waiting_large_one() -> None:
    cs = placement(pages=4, sections=1)
    first = cs.place([msg(1, PAGE + 8), msg(2, PAGE + 8), msg(3)])
    assert [s.message.trans_id for s in first] == [1]
    assert cs.waiting == 2  # 3 fits a free page but waits behind 2
    assert [s.message.trans_id for s in cs.release(1)] == [2, 3]


def test_a_host_that_never_completes_is_stopped_at_the_limit() -> None:
    cs = placement(pages=1, sections=1)
    cs.place([msg(1)] + [msg(i) for i in range(2, 10)])
    with pytest.raises(HostProtocolError, match="1 control pages and 1 send sections"):
        cs.place([msg(99)])


def test_fall_back_sends_the_following_messages_in_sections_and_drops_the_waiting() -> None:
    cs = placement(pages=1)
    cs.place([msg(1), msg(2)])
    cs.fall_back()
    assert not cs.gpa_direct and cs.waiting == 0
    assert [s.section for s in cs.place([msg(3)])] == [10]
    assert cs.release(1) == []  # the late completion of the page still frees its entry
    assert cs.in_flight == 1


# ---- the fallback ---------------------------------------------------------------------------------

def test_unanswered_gpa_direct_initialize_falls_back_to_sections_once() -> None:
    g, init = at_rndis_init()
    assert g.tick(0.0) == []
    effects = g.tick(limits.RNDIS_REPLY_TIMEOUT_S)
    fallback = [e for e in effects if isinstance(e, ControlFallback)]
    assert len(fallback) == 1 and "did not answer the RNDIS initialize sent GPA-direct" in fallback[0].reason
    again = sends(effects)
    assert len(again) == 1 and again[0].section is not None and not again[0].gpa_direct
    assert struct.unpack_from("<I", again[0].message.rndis or b"")[0] == MT["RNDIS_INITIALIZE_MSG"]
    # the fresh machine continues the ids: nothing of the abandoned send can be taken for its own
    assert again[0].message.trans_id > init.message.trans_id
    assert request_id(again[0]) == request_id(init) + 1
    assert not g.gpa_direct and g.fallback_reason == fallback[0].reason
    assert g.rndis is not None and g.rndis.state is RndisState.INIT_WAIT
    # a late completion of the page send is dropped (counted), not mistaken
    assert complete(g, init) == [CompletionDropped(trans_id=init.message.trans_id)]
    # bring-up goes on in sections
    complete(g, again[0])
    nxt = g.receive(Inbound(InboundKind.RNDIS, 0x55, init_cmplt(request_id(again[0]))))
    assert any(isinstance(e, RndisReady) for e in nxt)
    assert all(s.section is not None for s in sends(nxt))


def test_the_fallback_happens_once_a_second_silence_is_a_timeout() -> None:
    g, _ = at_rndis_init()
    g.tick(0.0)
    g.tick(limits.RNDIS_REPLY_TIMEOUT_S)
    g.tick(10.0)
    with pytest.raises(HostTimeoutError, match="initialize"):
        g.tick(10.0 + limits.RNDIS_REPLY_TIMEOUT_S)


def test_a_failed_completion_of_the_gpa_direct_initialize_falls_back_too() -> None:
    g, init = at_rndis_init()
    effects = complete(g, init, status=FAIL)
    fallback = [e for e in effects if isinstance(e, ControlFallback)]
    assert len(fallback) == 1 and "failed the GPA-direct RNDIS initialize" in fallback[0].reason
    assert [s.section is not None for s in sends(effects)] == [True]


def test_no_fallback_without_control_pages() -> None:
    g, init = at_rndis_init(control_pages=0)
    g.tick(0.0)
    with pytest.raises(HostTimeoutError):
        g.tick(limits.RNDIS_REPLY_TIMEOUT_S)
    g2, init2 = at_rndis_init(control_pages=0)
    with pytest.raises(HostRefusedError):
        complete(g2, init2, status=FAIL)


def test_no_fallback_once_rndis_answered_gpa_direct() -> None:
    g, init = at_rndis_init()
    complete(g, init)
    query = sends(g.receive(Inbound(InboundKind.RNDIS, 0x55, init_cmplt(request_id(init)))))
    assert query[0].gpa_direct
    g.tick(100.0)
    with pytest.raises(HostTimeoutError):
        g.tick(100.0 + limits.RNDIS_REPLY_TIMEOUT_S)
    assert g.gpa_direct and g.fallback_reason is None


# ---- placement invariants under any order of sends and completions --------------------------------


@settings(max_examples=300, deadline=None)
@given(ops=st.lists(st.one_of(st.tuples(st.just("send"), st.one_of(st.sampled_from([1, PAGE, PAGE + 1, SECTION]),
                                                                 st.integers(1, SECTION))),
                              st.tuples(st.just("complete"), st.integers(0, 40)),
                              st.tuples(st.just("fall_back"), st.just(0))), max_size=60))
@example(ops=[("send", SECTION), ("send", SECTION), ("send", 1), ("complete", 0), ("complete", 0)])
def test_no_place_is_ever_held_twice_and_messages_leave_in_order(ops: list[tuple[str, int]]) -> None:
    cs = ControlSections(SectionPool(10, 1, SECTION), pages=SectionPool(0, 2, PAGE), limit=1000)
    held: dict[tuple[str, int], int] = {}   # place -> trans_id
    placed: list[int] = []
    xid = 0

    def take(out: list[Send]) -> None:
        for s in out:
            size = len(s.message.rndis or b"")
            if s.page is not None:
                assert size <= PAGE and s.offset == s.page * PAGE and 0 <= s.page < 2
                key = ("page", s.page)
            else:
                assert s.section == 10 and s.offset == s.section * SECTION
                key = ("section", s.section)
            assert key not in held, f"{key} given to {s.message.trans_id} while {held.get(key)} holds it"
            held[key] = s.message.trans_id
            placed.append(s.message.trans_id)

    for op, arg in ops:
        if op == "send":
            xid += 1
            take(cs.place([msg(xid, arg)]))
        elif op == "fall_back":
            cs.fall_back()
            placed.clear()  # what waited was dropped; order is checked from here on
        elif held:
            key, tid = sorted(held.items())[arg % len(held)]
            del held[key]
            take(cs.release(tid))
    assert placed == sorted(placed)  # first placed first, whichever place each took
    assert cs.in_flight >= len(held)
