"""Fuzz invariant of the emulated host.

Invariant: any sequence of guest bytes — whole packets of any type/flags/id, mutated valid NVSP
messages, arbitrary send-buffer contents behind RNDIS sends, guest completions — interleaved with
host-side calls (deliver, tick, set_link, channels_opened) yields Steps whose packets are
well-formed, or Rejection records; never an uncaught exception, never a write outside the
receive buffer or across a section, never more outstanding receives than sections.
"""

from __future__ import annotations

import struct
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hvuio.sim.host.events import ChannelFault, Rejection, RndisHalted
from hvuio.sim.host.nvsp import GuestPacket, Step
from hvuio.sim.host.profile import HostProfile
from support.simhost import (
    COMP, FRAME, NVS_V5, Env, nvs_chim, nvs_init, nvs_ndis_conf, nvs_ndis_init, nvs_rndis, nvs_rndis_ack,
    nvs_rxbuf, nvs_subch, r_init, r_keepalive_cmplt, r_packet, r_query, r_set, r_simple,
)

VALID_NVSP = [nvs_init(NVS_V5), nvs_ndis_conf(), nvs_ndis_init(), nvs_rxbuf(), nvs_chim(), nvs_rndis(1, 0, 64),
              nvs_rndis(0, 0xFFFFFFFF, 0), nvs_subch(1, 3), nvs_rndis_ack()]
VALID_RNDIS = [r_init(1), r_query(2, 0x01010101), r_set(3, 0x0001010E, b"\x0d\x00\x00\x00"),
               r_simple("RNDIS_KEEPALIVE_MSG", 4), r_simple("RNDIS_HALT_MSG", 5), r_keepalive_cmplt(6),
               r_packet(FRAME), r_set(7, 0xFC01020C, bytes([0x80, 2, 28, 0]) + bytes(24))]


@st.composite
def mutated(draw: st.DrawFn, base: list[bytes]) -> bytes:
    msg = bytearray(draw(st.sampled_from(base)))
    for _ in range(draw(st.integers(0, 4))):
        if msg:
            msg[draw(st.integers(0, len(msg) - 1))] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, len(msg)))
    return bytes(msg[:cut]) if draw(st.booleans()) else bytes(msg)


payloads = st.one_of(st.binary(max_size=80), mutated(VALID_NVSP))
rndis_bytes = st.one_of(st.binary(max_size=200), mutated(VALID_RNDIS),
                        st.lists(mutated(VALID_RNDIS), max_size=3).map(b"".join))

actions = st.one_of(
    st.tuples(st.just("pkt"), st.sampled_from([0x6, 0x7, 0x9, 0xB, 0x0, 0xFFFF]), st.integers(0, 3),
              st.sampled_from([0, 1, 2, 0x8000000000000000, 2**64 - 1]), payloads, st.binary(max_size=48),
              st.integers(0, 3)),
    st.tuples(st.just("rndis"), st.integers(0, 12), st.integers(0, 1), rndis_bytes),
    st.tuples(st.just("complete"), st.integers(0, 40), st.integers(0, 3)),
    st.tuples(st.just("deliver"), st.lists(st.binary(min_size=0, max_size=1600), max_size=4),
              st.sampled_from([None, "pageset", "range_past_buffer", "range_over_section", "zero_length",
                               "rndis_len", "data_offset", "nvsp_type"])),
    st.tuples(st.just("tick"), st.floats(0, 1e4, allow_nan=False)),
    st.tuples(st.just("link"), st.booleans(), st.one_of(st.none(), st.floats(0, 1e4, allow_nan=False))),
    st.tuples(st.just("opened")),
    st.tuples(st.just("raw"), st.binary(max_size=96), st.integers(0, 3)),
)


def check(env: Env, step: Step, section: int, sections: int, injected: bool) -> None:
    assert isinstance(step, Step)
    for p in step.packets:
        raw = p.encode()
        assert len(raw) % 8 == 0 and len(raw) >= 16
        if not injected:
            for count, offset in p.ranges:
                assert offset % section == 0 and count <= section
                assert offset + count <= sections * section <= len(env.recv)
    for e in step.events:
        if isinstance(e, Rejection):
            assert e.reason and isinstance(e.value, int)
    assert env.host.outstanding_receives <= sections


def run(env: Env, plan: list[tuple[Any, ...]]) -> None:
    sent: list[int] = []
    for act in plan:
        kind = act[0]
        if kind == "pkt":
            _, ptype, flags, tid, payload, extra, channel = act
            step = env.host.receive(GuestPacket(ptype, flags, tid, payload, extra, channel))
        elif kind == "rndis":
            _, section, chan_type, data = act
            sec = 6144
            if (section + 1) * sec <= len(env.send):
                env.send[section * sec:section * sec + len(data[:sec])] = data[:sec]
            step = env.send_nvsp(nvs_rndis(chan_type, section, len(data)))
        elif kind == "complete":
            _, idx, status = act
            tid = sent[idx % len(sent)] if sent else idx
            step = env.host.receive(GuestPacket(COMP, 0, tid, nvs_rndis_ack(status)))
        elif kind == "deliver":
            step = env.host.deliver_batch(act[1], inject=act[2])
        elif kind == "tick":
            step = env.host.tick(act[1])
        elif kind == "link":
            step = env.host.set_link(act[1], act[2])
        elif kind == "raw":
            step = env.host.receive_raw(act[1], act[2])
        else:
            step = env.host.channels_opened(env.host.subchannels + 1)
        sent.extend(p.trans_id for p in step.packets if p.type == 0x7)
        recv = env.host.recv
        section, count = (recv[2], recv[3]) if recv else (1, 0)
        check(env, step, section, count, kind == "deliver" and act[2] is not None)
        if any(isinstance(e, ChannelFault) for e in step.events):
            assert env.host.state == "stopped"


FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.lists(actions, max_size=25))
def test_fresh_host_survives_anything(plan: list[tuple[Any, ...]]) -> None:
    run(Env(HostProfile(keepalive_interval=5.0)), plan)


@FUZZ
@given(st.lists(actions, max_size=25), st.booleans(), st.booleans())
def test_running_host_survives_anything(plan: list[tuple[Any, ...]], strict: bool, fatal: bool) -> None:
    env = Env(HostProfile(strict=strict, fatal_faults=fatal, keepalive_interval=5.0, recv_section_size=512),
              recv=bytearray(512 * 8))
    env.bring_up(NVS_V5)
    env.host.receive(GuestPacket(0x6, 1, 9, nvs_subch(1, 3)))
    run(env, plan)


@FUZZ
@given(st.binary(min_size=8, max_size=300))
def test_any_rndis_control_bytes_get_an_answer_or_a_record(body: bytes) -> None:
    env = Env()
    env.bring_up()
    msg = struct.pack("<II", struct.unpack_from("<I", body)[0], len(body)) + body[8:]
    before = len(env.host.rejections)
    step = env.send_rndis(msg)
    # Every control message is answered, refused with a record, or is one that has no answer (HALT).
    answered = bool(env.rndis_out(step)) or any(isinstance(e, RndisHalted) for e in step.events)
    assert answered or len(env.host.rejections) > before
