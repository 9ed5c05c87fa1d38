"""Emulated host NVSP: negotiation, buffers, subchannels, TX/RX data and every rejection path."""

from __future__ import annotations

import logging
import struct

import pytest

from hvuio.errors import LocalProtocolError
from hvuio.sim.host.events import (
    BufferRevoked, ChannelFault, FrameFromGuest, NvspNegotiated, ReceiveBufferConnected, Rejection,
    SendBufferConnected, SubchannelsOffered,
)
from hvuio.sim.host.nvsp import GuestPacket, parse_guest_packet
from hvuio.sim.host.profile import HostProfile
from support.golden import size
from support.simhost import (
    COMP, FAILED, FRAME, GPA, INBAND, NO_SECTION, NVS_V2, NVS_V4, NVS_V5, OK, RC, RECV_GPADL, RECV_SIZE,
    OID, RXBUF, RXBUF_SIG, SEND_GPADL, SEND_SIZE, T, VERSIONS, Env, c, completions, nvs_chim, nvs_init,
    nvs_ndis_conf, nvs_ndis_init, nvs_rndis, nvs_rndis_ack, nvs_rxbuf, nvs_subch, r_init, r_packet, r_query,
    r_set,
)


def faulted(env: Env, step_events: tuple[object, ...], field: str) -> Rejection:
    """Assert the step ended the channel, with the rejection naming `field`; return it."""
    assert any(isinstance(e, ChannelFault) for e in step_events), step_events
    rej = [e for e in step_events if isinstance(e, Rejection) and e.action == "fault"]
    assert rej and rej[-1].field == field, rej
    assert env.host.state == "stopped"
    return rej[-1]


# --- negotiation ---------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_full_init_for_every_version_the_profile_can_cap_at(version: int) -> None:
    env = Env(HostProfile(max_version=version))
    tid = 7
    step = env.send_nvsp(nvs_init(version), tid=tid)
    (p,) = step.packets
    assert (p.type, p.flags, p.trans_id) == (COMP, 0, tid)
    mtype, negotiated, _mdl, status = struct.unpack_from("<4I", p.payload)
    assert (mtype, status) == (c(T, "NVS_TYPE_INIT_RESP"), OK)
    assert negotiated == (version if version == VERSIONS[0] else 0xFFFFFFFF)
    assert NvspNegotiated(version) in step.events
    if version >= NVS_V2:
        assert env.send_nvsp(nvs_ndis_conf(1514), flags=0).packets == ()  # no reply without RC
    assert env.send_nvsp(nvs_ndis_init()).packets[0].payload == b""  # empty completion with RC
    step = env.send_nvsp(nvs_rxbuf())
    (p,) = step.packets
    mtype, status, nsect, start, slot, count, end = struct.unpack_from("<7I", p.payload)
    assert (mtype, status, nsect, start) == (c(T, "NVS_TYPE_RXBUF_CONNRESP"), OK, 1, 0)
    assert slot == 256 + 1514 + 36 and count == RECV_SIZE // slot and end == slot * count
    assert len(p.payload) == (40 if version == VERSIONS[-1] else 28)
    assert ReceiveBufferConnected(RECV_GPADL, slot, count) in step.events
    step = env.send_nvsp(nvs_chim())
    assert struct.unpack_from("<3I", step.packets[0].payload) == (c(T, "NVS_TYPE_CHIM_CONNRESP"), OK, 6144)
    assert SendBufferConnected(SEND_GPADL, 6144, SEND_SIZE // 6144) in step.events
    assert env.host.rejections == []


def test_unsupported_version_gets_status_none_and_guest_may_retry(caplog: pytest.LogCaptureFixture) -> None:
    env = Env(HostProfile(max_version=NVS_V4))
    with caplog.at_level(logging.WARNING, logger="hvuio.sim.host"):
        step = env.send_nvsp(nvs_init(NVS_V5))
    _, negotiated, _, status = struct.unpack_from("<4I", step.packets[0].payload)
    assert (negotiated, status) == (0xFFFFFFFF, 0)
    assert env.host.rejections[-1].field == "min_protocol_ver" and env.host.rejections[-1].value == NVS_V5
    assert "min_protocol_ver" in caplog.text
    step = env.send_nvsp(nvs_init(NVS_V4))
    assert struct.unpack_from("<4I", step.packets[0].payload)[3] == OK


def test_version_below_profile_minimum_is_refused() -> None:
    env = Env(HostProfile(min_version=NVS_V5))
    step = env.send_nvsp(nvs_init(NVS_V4))
    assert struct.unpack_from("<4I", step.packets[0].payload)[3] == 0 and env.host.state == "version"


def test_message_before_init_ends_the_channel() -> None:
    env = Env()
    step = env.send_nvsp(nvs_ndis_init())
    faulted(env, step.events, "msg_type")
    # afterwards the host is silent and says so
    step = env.send_nvsp(nvs_init(VERSIONS[-1]))
    assert step.packets == () and step.events[-1].action == "ignored"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "payload, field",
    [
        (struct.pack("<I", 1), "payload length"),  # INIT shorter than 12 bytes
        (b"\x01\x00", "NVSP header length"),  # not even a message type
        (struct.pack("<I", 999) + bytes(36), "msg_type"),  # unknown type
        (struct.pack("<I", 102) + bytes(36), "msg_type"),  # a host→guest type from the guest
    ],
)
def test_malformed_first_message_faults(payload: bytes, field: str) -> None:
    env = Env()
    faulted(env, env.send_nvsp(payload).events, field)


def test_init_twice_faults() -> None:
    env = Env()
    env.send_nvsp(nvs_init(NVS_V5))
    faulted(env, env.send_nvsp(nvs_init(NVS_V5)).events, "state")


def test_type_not_defined_at_negotiated_version_faults() -> None:
    env = Env()
    env.bring_up(NVS_V4)
    faulted(env, env.send_nvsp(nvs_subch(1, 2)).events, "msg_type")


def test_ndis_config_twice_faults() -> None:
    env = Env()
    env.send_nvsp(nvs_init(NVS_V5))
    env.send_nvsp(nvs_ndis_conf())
    faulted(env, env.send_nvsp(nvs_ndis_conf()).events, "mtu")


@pytest.mark.parametrize("mtu, expect_slot", [(9014, 256 + 9014 + 36), (1000, 256 + 1514 + 36), (70000, 1806)])
def test_ndis_config_mtu_bounds(mtu: int, expect_slot: int) -> None:
    env = Env()
    env.send_nvsp(nvs_init(NVS_V5))
    env.send_nvsp(nvs_ndis_conf(mtu))
    env.send_nvsp(nvs_ndis_init())
    slot = struct.unpack_from("<7I", env.send_nvsp(nvs_rxbuf()).packets[0].payload)[4]
    assert slot == expect_slot
    substituted = [r for r in env.host.rejections if r.action == "substituted"]
    assert bool(substituted) == (expect_slot == 1806) and (not substituted or substituted[0].value == mtu)


def test_receive_buffer_before_ndis_config_faults_on_v2_plus() -> None:
    env = Env()
    env.send_nvsp(nvs_init(NVS_V5))
    env.send_nvsp(nvs_ndis_init())
    faulted(env, env.send_nvsp(nvs_rxbuf()).events, "state")


def test_receive_buffer_before_ndis_version_strict_only() -> None:
    env = Env()
    env.send_nvsp(nvs_init(NVS_V5))
    env.send_nvsp(nvs_ndis_conf())
    faulted(env, env.send_nvsp(nvs_rxbuf()).events, "state")
    lax = Env(HostProfile(strict=False))
    lax.send_nvsp(nvs_init(NVS_V5))
    lax.send_nvsp(nvs_ndis_conf())
    assert struct.unpack_from("<2I", lax.send_nvsp(nvs_rxbuf()).packets[0].payload)[1] == OK


@pytest.mark.parametrize("msg", [nvs_rxbuf(0x1234), nvs_chim(0x1234)])
def test_unknown_gpadl_faults(msg: bytes) -> None:
    env = Env()
    env.send_nvsp(nvs_init(NVS_V5))
    env.send_nvsp(nvs_ndis_conf())
    env.send_nvsp(nvs_ndis_init())
    if msg[0] == c(T, "NVS_TYPE_CHIM_CONN"):
        env.send_nvsp(nvs_rxbuf())
    rej = faulted(env, env.send_nvsp(msg).events, "gpadl_handle")
    assert rej.value == 0x1234


def test_non_fatal_profile_drops_instead_of_faulting() -> None:
    env = Env(HostProfile(fatal_faults=False))
    step = env.send_nvsp(nvs_ndis_init())
    assert step.packets == () and env.host.state == "version"
    assert env.host.rejections[-1].action == "dropped"
    assert struct.unpack_from("<4I", env.send_nvsp(nvs_init(NVS_V5)).packets[0].payload)[3] == OK


def test_same_gpadl_for_both_buffers_is_refused_strict() -> None:
    env = Env()
    env.send_nvsp(nvs_init(NVS_V5))
    env.send_nvsp(nvs_ndis_conf())
    env.send_nvsp(nvs_ndis_init())
    env.send_nvsp(nvs_rxbuf())
    faulted(env, env.send_nvsp(nvs_chim(RECV_GPADL)).events, "gpadl_handle")


def test_receive_buffer_id_other_than_cafe_is_logged_and_echoed() -> None:
    env = Env()
    env.send_nvsp(nvs_init(NVS_V5))
    env.send_nvsp(nvs_ndis_conf())
    env.send_nvsp(nvs_ndis_init())
    env.send_nvsp(nvs_rxbuf(sig=0xBEEF))
    assert env.host.rejections[-1].field == "id" and env.host.rejections[-1].value == 0xBEEF
    env.send_nvsp(nvs_chim())
    step = env.send_rndis(b"")  # RNDIS packet ends set-up; empty send completes OK
    assert env.host.state == "ready" and completions(step)
    assert env.host.recv is not None and env.host.recv[1] == 0xBEEF != RXBUF_SIG


def test_rndis_before_receive_buffer_faults() -> None:
    env = Env()
    env.send_nvsp(nvs_init(NVS_V5))
    env.send_nvsp(nvs_ndis_conf())
    env.send_nvsp(nvs_ndis_init())
    faulted(env, env.send_nvsp(nvs_rndis(1, NO_SECTION, 0)).events, "state")


def test_bad_flags_and_packet_types_fault() -> None:
    env = Env()
    faulted(env, env.send_nvsp(nvs_init(NVS_V5), flags=0x2).events, "flags")
    env = Env()
    faulted(env, env.send_nvsp(nvs_init(NVS_V5), ptype=RXBUF).events, "type")


def test_trans_id_zero_with_completion_requested_is_answered_quietly() -> None:
    # DPDK's NVS and RNDIS control requests all carry id 0 with completion requested ([OV] answers).
    env = Env()
    step = env.send_nvsp(nvs_init(NVS_V5), tid=0)
    (p,) = completions(step)
    assert p.trans_id == 0 and env.host.state == "init"
    assert env.send_nvsp(nvs_ndis_conf(1514, 0), flags=0, tid=0).packets == ()  # none asked, none sent
    assert env.send_nvsp(nvs_ndis_init(6, 30), flags=0, tid=0).packets == ()
    assert [q.trans_id for q in completions(env.send_nvsp(nvs_rxbuf(), tid=0))] == [0]
    assert [q.trans_id for q in completions(env.send_nvsp(nvs_chim(), tid=0))] == [0]
    step = env.send_rndis(r_init(1), tid=0)
    assert [q.trans_id for q in completions(step)] == [0]  # the RNDIS message's own completion
    assert env.host.rejections == [] and not any(isinstance(e, Rejection) for e in step.events)


def test_completion_during_setup_faults() -> None:
    env = Env()
    env.send_nvsp(nvs_init(NVS_V5))
    step = env.host.receive(GuestPacket(COMP, 0, 5, nvs_rndis_ack()))
    faulted(env, step.events, "trans_id")


def test_setup_message_on_running_channel_faults() -> None:
    env = Env()
    env.bring_up()
    faulted(env, env.send_nvsp(nvs_ndis_init()).events, "msg_type")


def test_revoke_stops_the_channel() -> None:
    env = Env()
    env.bring_up()
    step = env.send_nvsp(struct.pack("<IH", c(T, "NVS_TYPE_RXBUF_DISCONN"), RXBUF_SIG) + bytes(34))
    assert BufferRevoked("receive") in step.events and env.host.state == "stopped"


def test_teardown_after_revoke_is_quiet() -> None:
    # Linux revokes the receive buffer, then the send buffer; completions may still be in flight
    env = Env()
    env.bring_up()
    env.send_nvsp(struct.pack("<IH", c(T, "NVS_TYPE_RXBUF_DISCONN"), RXBUF_SIG) + bytes(34))
    rejections = len(env.host.rejections)
    step = env.send_nvsp(struct.pack("<IH", c(T, "NVS_TYPE_CHIM_DISCONN"), c("nvs_misc", "NVS_CHIM_SIG")) + bytes(34))
    assert BufferRevoked("send") in step.events
    step = env.send_nvsp(struct.pack("<IH", c(T, "NVS_TYPE_CHIM_DISCONN"), c("nvs_misc", "NVS_CHIM_SIG")) + bytes(34))
    assert step.events == () and step.packets == ()  # a repeat is only counted
    assert env.host.counters["ignored_after_stop"] == 1
    assert len(env.host.rejections) == rejections


# --- subchannels ---------------------------------------------------------------------------------


def test_subchannel_grant_in_full_and_table_follows_open() -> None:
    env = Env(HostProfile(max_subchannels=3))
    env.bring_up(NVS_V5)
    step = env.send_nvsp(nvs_subch(c("nvs_subch_op", "NVS_SUBCH_OP_ALLOC"), 3))
    (p,) = step.packets
    assert struct.unpack_from("<3I", p.payload) == (c(T, "NVS_TYPE_SUBCH_RESP"), OK, 3)
    assert SubchannelsOffered(3) in step.events
    assert env.host.channels_opened(1).packets == () and env.host.channels_opened(3).packets == ()  # not all yet
    (table,) = env.host.channels_opened(4).packets
    # [OV] guest_send_indirection_table: 76 bytes in-band on the primary, no completion, id 0
    assert (table.channel, table.type, table.flags, table.trans_id, len(table.payload)) == (0, INBAND, 0, 0, 76)
    mtype, count, offset = struct.unpack_from("<3I", table.payload)
    assert (mtype, count, offset) == (c(T, "NVS_TYPE_TXTBL_NOTE"), c("linux:netvsc_misc", "VRSS_SEND_TAB_SIZE"), 12)
    entries = struct.unpack_from("<16I", table.payload, offset)
    assert entries == tuple(i % 4 for i in range(16))
    assert env.host.channels_opened(4).packets == ()  # once per grant ([OV] tx_spread_sent)
    # a frame may now be delivered on subchannel 2, and packets arrive from it
    assert env.host.deliver(FRAME, channel=2).packets[0].channel == 2
    with pytest.raises(LocalProtocolError):
        env.host.deliver(FRAME, channel=4)


def test_a_later_grant_sends_the_table_again_once_its_channels_are_open() -> None:
    """[OV]: a grant clears tx_spread_sent and sets requested_num_queues; the table follows when
    num_sub_channels_opened reaches it, with entries i % channels open."""
    env = Env(HostProfile(max_subchannels=5))
    env.bring_up(NVS_V5)
    env.send_nvsp(nvs_subch(c("nvs_subch_op", "NVS_SUBCH_OP_ALLOC"), 1))
    (first,) = env.host.channels_opened(2).packets
    assert struct.unpack_from("<16I", first.payload, 12) == tuple(i % 2 for i in range(16))
    env.send_nvsp(nvs_subch(c("nvs_subch_op", "NVS_SUBCH_OP_ALLOC"), 4))
    assert env.host.channels_opened(2).packets == () and env.host.channels_opened(4).packets == ()
    (second,) = env.host.channels_opened(5).packets
    assert struct.unpack_from("<16I", second.payload, 12) == tuple(i % 5 for i in range(16))
    # a grant of 0 subchannels changes nothing and sends nothing
    env.send_nvsp(nvs_subch(c("nvs_subch_op", "NVS_SUBCH_OP_ALLOC"), 0))
    assert env.host.subchannels == 4 and env.host.channels_opened(5).packets == ()


def test_no_send_table_below_nvsp_5() -> None:
    env = Env(HostProfile(max_subchannels=3))
    env.bring_up(NVS_V4)
    env.host.queues.count = 3  # cannot be granted below NVSP 5: forced to see the version check
    assert env.host.channels_opened(4).packets == ()


@pytest.mark.parametrize("asked", [4, 16, 63])
def test_subchannel_request_beyond_the_queues_fails_and_grants_nothing(asked: int) -> None:
    # OpenVMM: count must stay below max_queues (max_subchannels + 1); no partial grant
    env = Env(HostProfile(max_subchannels=3))
    env.bring_up(NVS_V5)
    step = env.send_nvsp(nvs_subch(c("nvs_subch_op", "NVS_SUBCH_OP_ALLOC"), asked))
    (p,) = step.packets
    assert struct.unpack_from("<3I", p.payload) == (c(T, "NVS_TYPE_SUBCH_RESP"), FAILED, 0)
    assert not any(isinstance(e, SubchannelsOffered) for e in step.events)
    assert env.host.rejections[-1].action == "failure-status"
    assert env.host.channels_opened(1).packets == ()  # nothing granted, no table
    with pytest.raises(LocalProtocolError):
        env.host.deliver(FRAME, channel=1)
    # the channel goes on: a request the host can grant is granted in full
    step = env.send_nvsp(nvs_subch(c("nvs_subch_op", "NVS_SUBCH_OP_ALLOC"), 3))
    assert struct.unpack_from("<3I", step.packets[0].payload)[1:] == (OK, 3)


def test_subchannel_request_needs_a_data_section_per_queue() -> None:
    env = Env(HostProfile(max_subchannels=63))
    env.bring_up(NVS_V5)
    data = env.host._rx.data_sections
    assert 1 <= data < 64, "the test's receive buffer must hold fewer data sections than 64 queues"
    step = env.send_nvsp(nvs_subch(c("nvs_subch_op", "NVS_SUBCH_OP_ALLOC"), data))  # data + 1 queues
    assert struct.unpack_from("<3I", step.packets[0].payload)[1:] == (FAILED, 0)
    step = env.send_nvsp(nvs_subch(c("nvs_subch_op", "NVS_SUBCH_OP_ALLOC"), data - 1))
    assert struct.unpack_from("<3I", step.packets[0].payload)[1:] == (OK, data - 1)


def test_subchannel_request_exact_and_bad_op() -> None:
    env = Env()
    env.bring_up(NVS_V5)
    assert struct.unpack_from("<3I", env.send_nvsp(nvs_subch(1, 2)).packets[0].payload)[1:] == (OK, 2)
    step = env.send_nvsp(nvs_subch(7, 2))
    assert struct.unpack_from("<3I", step.packets[0].payload)[1:] == (FAILED, 0)
    assert env.host.rejections[-1].field == "op"


def test_control_message_on_subchannel_faults() -> None:
    env = Env()
    env.bring_up(NVS_V5)
    env.send_nvsp(nvs_subch(1, 2))
    faulted(env, env.send_nvsp(nvs_subch(1, 2), channel=1).events, "channel")
    env2 = Env()
    env2.bring_up(NVS_V5)
    faulted(env2, env2.send_nvsp(nvs_ndis_init(), channel=1).events, "channel")  # never offered


# --- TX ------------------------------------------------------------------------------------------


def test_tx_frame_becomes_event_and_completion_with_same_trans_id() -> None:
    env = Env()
    env.bring_up()
    step = env.send_rndis(r_packet(FRAME), section=3, chan_type=0)
    assert FrameFromGuest(FRAME, 0) in step.events
    (p,) = completions(step)
    assert p.trans_id == env.tid
    assert struct.unpack_from("<2I", p.payload) == (c(T, "NVS_TYPE_RNDIS_ACK"), OK)
    assert env.host.counters["tx_frames"] == 1


def test_tx_several_messages_in_one_section() -> None:
    env = Env()
    env.bring_up()
    other = FRAME[::-1]
    step = env.send_rndis(r_packet(FRAME) + r_packet(other), chan_type=0)
    assert [e.frame for e in step.events if isinstance(e, FrameFromGuest)] == [FRAME, other]


def _padded(msg: bytes, align: int = 8) -> bytes:
    n = -len(msg) % align
    return msg[:4] + struct.pack("<I", len(msg) + n) + msg[8:] + bytes(n)


@pytest.mark.parametrize("strict", [True, False], ids=["strict", "lenient"])
@pytest.mark.parametrize("frames, padding, field, value", [
    ([FRAME + bytes([i]) for i in range(9)], True, "message_count", 9),     # one past max_packets_per_message
    ([FRAME + b"x", FRAME], False, "offset", 105),                          # 44 + 61 bytes: not 8-aligned
], ids=["nine", "misaligned"])
def test_tx_aggregation_past_the_rndis_limits_is_logged_and_served(
        strict: bool, frames: list[bytes], padding: bool, field: str, value: int) -> None:
    env = Env(profile=HostProfile(strict=strict))
    env.bring_up()
    msgs = [r_packet(f) for f in frames]
    data = b"".join(_padded(m) if padding else m for m in msgs[:-1]) + msgs[-1]
    step = env.send_rndis(data, chan_type=0)
    assert [e.frame for e in step.events if isinstance(e, FrameFromGuest)] == frames
    (p,) = completions(step)
    assert struct.unpack_from("<2I", p.payload) == (c(T, "NVS_TYPE_RNDIS_ACK"), OK)
    logged = [e for e in step.events if isinstance(e, Rejection)]
    if strict:
        assert [(e.field, e.value, e.action) for e in logged] == [(field, value, "logged")]
    else:
        assert logged == []


def test_tx_aggregation_within_the_rndis_limits_is_quiet() -> None:
    env = Env()
    env.bring_up()
    frames = [FRAME + bytes(i) for i in range(8)]
    msgs = [r_packet(f) for f in frames]
    step = env.send_rndis(b"".join(_padded(m) for m in msgs[:-1]) + msgs[-1], chan_type=0)
    assert [e.frame for e in step.events if isinstance(e, FrameFromGuest)] == frames
    assert not [e for e in step.events if isinstance(e, Rejection)]


@pytest.mark.parametrize(
    "msg, field",
    [
        (r_packet(FRAME, data_offset=20), "data_offset"),
        (r_packet(FRAME, data_offset=4000), "data_offset"),
        (r_packet(b""), "data_length"),
        (r_packet(FRAME, ppi=struct.pack("<3I", 4, 0, 12)), "per_packet_info.size"),
        (r_packet(FRAME)[:30], "RNDIS len"),
    ],
)
def test_tx_malformed_rndis_packet_fails_the_send(msg: bytes, field: str) -> None:
    env = Env()
    env.bring_up()
    step = env.send_rndis(msg, chan_type=0)
    (p,) = completions(step)
    assert struct.unpack_from("<2I", p.payload)[1] == FAILED
    assert not any(isinstance(e, FrameFromGuest) for e in step.events)
    assert env.host.rejections[-1].field == field and env.host.state == "ready"


def test_tx_before_packet_filter_and_before_rndis_init_is_refused() -> None:
    env = Env()
    env.bring_up(packet_filter=None)
    step = env.send_rndis(r_packet(FRAME), chan_type=0)
    assert struct.unpack_from("<2I", completions(step)[0].payload)[1] == FAILED
    assert env.host.rejections[-1].field == "packet_filter"
    env = Env()
    env.bring_up(rndis=False)
    step = env.send_rndis(r_packet(FRAME), chan_type=0)
    assert struct.unpack_from("<2I", completions(step)[0].payload)[1] == FAILED
    assert env.host.rejections[-1].field == "state"


def test_tx_section_outside_send_buffer_faults() -> None:
    env = Env()
    env.bring_up()
    faulted(env, env.send_nvsp(nvs_rndis(0, SEND_SIZE // 6144 + 1, 100)).events, "section_index")


def frames_filling(total: int) -> list[bytes]:
    """Frames whose RNDIS packet messages (44 + frame bytes, each a multiple of 8) tile `total` bytes."""
    out = []
    while total:
        n = min(1500, total - 44) if total - 1544 < 58 else 1500  # never leave a remainder below a frame
        out.append(bytes([len(out) + 1]) * n)
        total -= 44 + n
    assert all((44 + len(f)) % 8 == 0 and len(f) >= 14 for f in out)
    return out


def tx_status(step) -> int:  # type: ignore[no-untyped-def]
    return int(struct.unpack_from("<2I", completions(step)[0].payload)[1])


@pytest.mark.parametrize("section, size", [(2, 5 * 1544), (9, SEND_SIZE - 9 * 6144)],
                         ids=["two-sections", "to-the-buffer-end"])
def test_tx_send_spanning_sections_is_served(section: int, size: int) -> None:
    # [OV] parse_packet: the send is any sub-range of the send buffer, section index x 6144 + size.
    env = Env()
    env.bring_up()
    frames = frames_filling(size)
    assert size > 6144 and len(frames) <= 8  # more than a section, within max_packets_per_message
    step = env.send_rndis(b"".join(r_packet(f) for f in frames), section=section, chan_type=0)
    assert tx_status(step) == OK
    assert [e.frame for e in step.events if isinstance(e, FrameFromGuest)] == frames
    assert not [e for e in step.events if isinstance(e, Rejection)]


def test_tx_send_one_byte_past_the_send_buffer_faults() -> None:
    # [OV] parse_packet: try_subrange fails -> InvalidSendBufferIndex, the channel worker ends.
    env = Env()
    env.bring_up()
    faulted(env, env.send_nvsp(nvs_rndis(0, 9, SEND_SIZE - 9 * 6144 + 1)).events, "section_index")


@pytest.mark.parametrize("after", [
    r_query(5, c(OID, "OID_GEN_MEDIA_CONNECT_STATUS")),
    struct.pack("<II", 0x80000004, 16) + bytes(8),  # any other type, a completion's included
], ids=["control", "other-type"])
def test_tx_data_then_another_message_type_fails_the_whole_send(after: bytes) -> None:
    # [OV] handle_rndis_packet_messages: NonRndisPacketAfterPacket -> the send completes FAILURE.
    env = Env()
    env.bring_up()
    first = r_packet(bytes(60))  # 104 bytes: at the packet alignment
    step = env.send_rndis(first + after, chan_type=0)
    assert tx_status(step) == FAILED
    assert not [e for e in step.events if isinstance(e, FrameFromGuest)]
    assert not [p for p in step.packets if p.type == RXBUF]  # the control message was not answered
    rej = env.host.rejections[-1]
    assert (rej.field, rej.value, rej.action) == ("RNDIS message type", struct.unpack_from("<I", after)[0],
                                                  "failure-status")
    assert env.host.state == "ready" and env.host.counters["tx_failed"] == 1


def test_tx_control_message_takes_the_rest_of_its_send() -> None:
    # [OV] handle_rndis -> handle_rndis_message: a control message's data is the rest of the send;
    # nothing after it is read as a message (logged here, as the frame in it is lost).
    env = Env()
    env.bring_up()
    query = r_query(5, c(OID, "OID_GEN_MEDIA_CONNECT_STATUS"))
    step = env.send_rndis(query + r_packet(FRAME) + r_query(6, c(OID, "OID_GEN_MEDIA_CONNECT_STATUS")))
    assert tx_status(step) == OK
    assert not [e for e in step.events if isinstance(e, FrameFromGuest)]
    replies = env.rndis_out(step)
    assert [struct.unpack_from("<I", r, 8)[0] for r in replies] == [5]  # the first query only
    rej = env.host.rejections[-1]
    assert (rej.field, rej.value, rej.action) == ("offset", len(query), "ignored")


def test_tx_without_completion_requested_is_logged_not_answered() -> None:
    env = Env()
    env.bring_up()
    env.send[:len(r_packet(FRAME))] = r_packet(FRAME)
    step = env.send_nvsp(nvs_rndis(0, 0, len(r_packet(FRAME))), flags=0)
    assert step.packets == () and env.host.rejections[-1].field == "flags"


def test_tx_gpa_direct_needs_a_reader() -> None:
    msg = r_packet(FRAME)
    extra = struct.pack("<IIII", 0, 1, len(msg), 16) + struct.pack("<Q", 0x1234)
    env = Env()
    env.bring_up()
    step = env.send_nvsp(nvs_rndis(0, NO_SECTION, 0), ptype=GPA, extra=extra)
    assert struct.unpack_from("<2I", completions(step)[0].payload)[1] == FAILED
    seen: list[tuple[tuple[int, ...], int, int]] = []

    def reader(pfns: tuple[int, ...], offset: int, length: int) -> bytes:
        seen.append((pfns, offset, length))
        return msg

    env = Env(gpa_reader=reader)
    env.bring_up()
    step = env.send_nvsp(nvs_rndis(0, NO_SECTION, 0), ptype=GPA, extra=extra)
    assert FrameFromGuest(FRAME) in step.events and seen == [((0x1234,), 16, len(msg))]


def test_tx_gpa_direct_with_zero_ranges_faults() -> None:
    env = Env()
    env.bring_up()
    step = env.send_nvsp(nvs_rndis(0, NO_SECTION, 0), ptype=GPA, extra=struct.pack("<II", 0, 0))
    faulted(env, step.events, "range_cnt")


# --- RX ------------------------------------------------------------------------------------------


def test_rx_deliver_writes_rndis_packet_and_sends_transfer_page_packet() -> None:
    env = Env()
    env.bring_up()
    step = env.host.deliver(FRAME)
    (p,) = step.packets
    assert (p.type, p.xfer_pageset_id, len(p.ranges)) == (RXBUF, RXBUF_SIG, 1)
    assert struct.unpack_from("<4I", p.payload) == (c(T, "NVS_TYPE_RNDIS"), 0, NO_SECTION, 0)
    (msg,) = env.rndis_out(step)
    mtype, mlen, d_off, d_len = struct.unpack_from("<4I", msg)
    assert (mtype, mlen, d_len) == (1, len(msg), len(FRAME))
    assert msg[8 + d_off:8 + d_off + d_len] == FRAME
    raw = p.encode()
    assert len(raw) % 8 == 0 and struct.unpack_from("<HHHHQHBBI", raw)[0:2] == (RXBUF, (24 + 8) // 8)


def test_rx_section_is_freed_only_by_the_completion_and_drops_are_counted() -> None:
    env = Env()
    env.bring_up()
    delivered = []
    for _ in range(RECV_SIZE // 1806 + 1):  # bounded: there are fewer sections than this
        step = env.host.deliver(FRAME)
        if not step.packets:
            break
        delivered.append(step.packets[0])
    assert env.host.counters["rx_dropped_no_section"] == 1
    assert len({p.ranges[0][1] for p in delivered}) == len(delivered)  # distinct sections
    assert env.host.deliver(FRAME).packets == ()
    assert env.host.counters["rx_dropped_no_section"] == 2
    env.ack(delivered[0])
    again = env.host.deliver(FRAME).packets
    assert again and again[0].ranges[0][1] == delivered[0].ranges[0][1]


def test_rx_transfer_id_is_the_first_section_of_the_batch() -> None:
    # OpenVMM process_endpoint_rx / release_recv_buffers; DPDK hn_nvs_handle_rxbuf indexes by it.
    section = 2048
    env = Env(HostProfile(recv_section_size=section))
    env.bring_up(rndis=False)
    replies = [q for q in env.send_rndis(r_init(1)).packets if q.type == RXBUF]
    assert [q.trans_id for q in replies] == [q.ranges[0][1] // section for q in replies]
    assert replies[0].trans_id == 0  # the first control reply: section 0, id 0
    for q in replies:
        assert env.ack(q).events == ()
    assert env.host.outstanding_receives == 0
    env.ack_all(env.send_rndis(r_set(2, c(OID, "OID_GEN_CURRENT_PACKET_FILTER"), struct.pack("<I", 0xD))))
    step = env.host.deliver_batch([FRAME, FRAME, FRAME])
    (p,) = step.packets
    assert len(p.ranges) == 3 and p.trans_id == p.ranges[0][1] // section
    assert env.host.receive(GuestPacket(COMP, 0, p.ranges[1][1] // section, nvs_rndis_ack())).events  # not its id
    env = Env()
    env.bring_up()
    p = env.host.deliver_batch([FRAME, FRAME]).packets[0]
    assert env.ack(p).events == () and env.host.outstanding_receives == 0


def test_rx_unknown_and_duplicate_completion_fault() -> None:
    env = Env()
    env.bring_up()
    p = env.host.deliver(FRAME).packets[0]
    assert env.ack(p).events == ()
    faulted(env, env.ack(p).events, "trans_id")  # second completion of the same id
    env = Env()
    env.bring_up()
    faulted(env, env.host.receive(GuestPacket(COMP, 0, 0xDEAD, nvs_rndis_ack())).events, "trans_id")


def test_rx_completion_with_failure_status_is_logged() -> None:
    env = Env()
    env.bring_up()
    p = env.host.deliver(FRAME).packets[0]
    env.ack(p, status=FAILED)
    assert env.host.rejections[-1].field == "status" and env.host.outstanding_receives == 0


def test_rx_unknown_completion_type_faults() -> None:
    env = Env()
    env.bring_up()
    p = env.host.deliver(FRAME).packets[0]
    bad = struct.pack("<II", c(T, "NVS_TYPE_INIT_RESP"), OK)
    faulted(env, env.host.receive(GuestPacket(COMP, 0, p.trans_id, bad)).events, "msg_type")


def test_rx_drops_before_filter_and_for_oversize_frames() -> None:
    env = Env()
    env.bring_up(packet_filter=None)
    assert env.host.deliver(FRAME).packets == () and env.host.counters["rx_dropped_filtered"] == 1
    env = Env()
    assert env.host.deliver(FRAME).packets == () and env.host.counters["rx_dropped_not_ready"] == 1
    env.bring_up()
    assert env.host.deliver(bytes(1600)).packets == () and env.host.counters["rx_dropped_too_big"] == 1
    assert env.host.deliver(bytes(1514)).packets  # a full 1514-byte frame fits a 1806-byte section


def test_control_replies_wait_for_a_free_section() -> None:
    env = Env(HostProfile(recv_section_size=512), recv=bytearray(512 * 4))
    env.bring_up()  # init/filter replies were acknowledged inside bring_up
    held = [env.send_rndis(r_query(10 + i, c("ndis_oid", "OID_GEN_LINK_SPEED"))) for i in range(5)]
    xfer = [p for s in held for p in s.packets if p.type == RXBUF]
    assert len(xfer) == 4 and env.host.counters["control_queued"] == 1
    step = env.ack(xfer[0])
    (reply,) = env.rndis_out(step)
    assert struct.unpack_from("<3I", reply)[2] == 14  # request id of the fifth query


def test_vmbus_encoding_of_a_completion() -> None:
    env = Env()
    (p,) = env.send_nvsp(nvs_init(NVS_V5), tid=0x1122334455).packets
    raw = p.encode()
    ptype, hlen, tlen, flags, tid = struct.unpack_from("<HHHHQ", raw)
    assert (ptype, hlen, flags, tid) == (COMP, 2, 0, 0x1122334455)
    assert tlen * 8 == len(raw) == 16 + 32 and raw[16:16 + len(p.payload)] == p.payload


# --- the remaining set-up and data-path edges ----------------------------------------------------


def setup_to_ndis(env: Env) -> None:
    env.send_nvsp(nvs_init(NVS_V5))
    env.send_nvsp(nvs_ndis_conf())
    env.send_nvsp(nvs_ndis_init())


@pytest.mark.parametrize(
    "repeat, field", [("ndis_init", "major"), ("rxbuf", "gpadl_handle"), ("chim", "gpadl_handle")]
)
def test_setup_messages_repeated_fault(repeat: str, field: str) -> None:
    env = Env()
    setup_to_ndis(env)
    env.send_nvsp(nvs_rxbuf())
    env.send_nvsp(nvs_chim())
    msg = {"ndis_init": nvs_ndis_init(), "rxbuf": nvs_rxbuf(), "chim": nvs_chim()}[repeat]
    faulted(env, env.send_nvsp(msg).events, field)


def test_revoke_during_setup_faults() -> None:
    env = Env()
    setup_to_ndis(env)
    faulted(env, env.send_nvsp(struct.pack("<IH", c(T, "NVS_TYPE_CHIM_DISCONN"), 0) + bytes(34)).events, "msg_type")


def test_receive_buffer_smaller_than_a_section_faults() -> None:
    env = Env(recv=bytearray(1000))
    setup_to_ndis(env)
    faulted(env, env.send_nvsp(nvs_rxbuf()).events, "buffer size")


def test_switch_data_path_and_oid_query_ex_are_answered() -> None:
    env = Env()
    env.bring_up(NVS_V5)
    vf = c("nvs_datapath", "NVS_DATAPATH_VF")
    step = env.send_nvsp(struct.pack("<II", c(T, "NVS_TYPE_SET_DATAPATH"), vf) + bytes(32))
    assert [p.payload for p in step.packets] == [b""] and env.host.state == "ready"
    q = struct.pack("<IBBHI", c("linux:nvsp_msg_type", "NVSP_MSG5_TYPE_OID_QUERY_EX"), 0x80, 1, 8, 0x00010203)
    (p,) = env.send_nvsp(q + bytes(28)).packets
    assert struct.unpack_from("<3I", p.payload) == (c("linux:nvsp_msg_type", "NVSP_MSG5_TYPE_OID_QUERY_EX_COMP"),
                                                    c("rndis_status", "RNDIS_STATUS_NOT_SUPPORTED"), 0)


def test_send_section_without_send_buffer_faults() -> None:
    env = Env()
    setup_to_ndis(env)
    env.send_nvsp(nvs_rxbuf())
    faulted(env, env.send_nvsp(nvs_rndis(1, 0, 24)).events, "section_index")


def test_rndis_without_send_buffer_uses_no_section_and_is_allowed() -> None:
    env = Env()
    setup_to_ndis(env)
    env.send_nvsp(nvs_rxbuf())
    step = env.send_nvsp(nvs_rndis(1, NO_SECTION, 0))
    assert env.host.state == "ready" and struct.unpack_from("<2I", completions(step)[0].payload)[1] == OK


def test_tx_with_valid_per_packet_info_and_bad_oob() -> None:
    env = Env()
    env.bring_up()
    csum_ppi = struct.pack("<3II", 16, c("ndis_pktinfo_type", "NDIS_PKTINFO_TYPE_CSUM"), 12, 0x11)
    step = env.send_rndis(r_packet(FRAME, ppi=csum_ppi), chan_type=0)
    assert FrameFromGuest(FRAME) in step.events
    bad = bytearray(r_packet(FRAME))
    struct.pack_into("<I", bad, 20, 4)  # oob data length
    step = env.send_rndis(bytes(bad), chan_type=0)
    assert struct.unpack_from("<2I", completions(step)[0].payload)[1] == FAILED
    assert env.host.rejections[-1].field == "oob/vc_handle"


def test_rndis_data_on_subchannel_and_control_on_subchannel() -> None:
    env = Env()
    env.bring_up(NVS_V5)
    env.send_nvsp(nvs_subch(1, 2))
    step = env.send_rndis(r_packet(FRAME), chan_type=0, channel=2)
    assert FrameFromGuest(FRAME, 2) in step.events and completions(step)[0].channel == 2
    # [OV] handle_rndis_message: NotSupportedOnSubChannel -> the send completes FAILURE, the channel goes on
    step = env.send_rndis(r_query(3, 0x00010107), channel=1)
    assert tx_status(step) == FAILED and not [p for p in step.packets if p.type == RXBUF]
    assert env.host.rejections[-1].field == "channel" and env.host.state == "ready"


def test_channel_type_mismatch_is_logged_strict() -> None:
    env = Env()
    env.bring_up()
    step = env.send_rndis(r_packet(FRAME), chan_type=1)
    assert FrameFromGuest(FRAME) in step.events and env.host.rejections[-1].field == "channel_type"


def test_profile_validation() -> None:
    from hvuio.errors import UsageError

    for bad in (dict(max_version=5), dict(min_version=NVS_V5, max_version=NVS_V4), dict(mac=b"\0" * 5),
                dict(mtu_default=1000), dict(mtu_max=70000), dict(max_subchannels=64),
                dict(recv_section_size=100), dict(send_section_size=100), dict(send_section_size=40),
                dict(keepalive_interval=0.0), dict(control_sections=65)):
        with pytest.raises(UsageError):
            HostProfile(**bad)  # type: ignore[arg-type]
    assert HostProfile(max_version=NVS_V4).versions == tuple(v for v in VERSIONS if v <= NVS_V4)


# --- raw packets from a ring ---------------------------------------------------------------------


def raw_packet(ptype: int, flags: int, tid: int, payload: bytes, header: bytes = b"",
               offset8: int | None = None, len8: int | None = None) -> bytes:
    desc = size("vmbus_chanpkt_hdr")
    body = header + payload
    total = (desc + len(body) + 7) // 8 * 8
    o8 = (desc + len(header)) // 8 if offset8 is None else offset8
    l8 = total // 8 if len8 is None else len8
    return struct.pack("<HHHHQ", ptype, o8, l8, flags, tid) + body + bytes(total - desc - len(body))


def test_receive_raw_splits_the_descriptor() -> None:
    env = Env()
    step = env.host.receive_raw(raw_packet(INBAND, RC, 0x99, nvs_init(NVS_V5)))
    assert step.packets[0].trans_id == 0x99 and env.host.state == "init"
    pkt = parse_guest_packet(raw_packet(GPA, RC, 1, b"P" * 8, header=struct.pack("<IIIIQ", 0, 1, 8, 0, 5)))
    assert (pkt.type, pkt.payload, len(pkt.extra)) == (GPA, b"P" * 8, 24)


@pytest.mark.parametrize("kw, field", [({"offset8": 1}, "offset8"), ({"offset8": 9}, "offset8"),
                                       ({"len8": 3}, "len8")])
def test_receive_raw_bad_descriptor_faults(kw: dict[str, int], field: str) -> None:
    env = Env()
    faulted(env, env.host.receive_raw(raw_packet(INBAND, RC, 1, nvs_init(NVS_V5), **kw)).events, field)
    assert env.host.receive_raw(b"\x00" * 4).events[-1].action == "ignored"  # type: ignore[union-attr]


def test_version_range_and_odd_ndis_version_are_logged_strict() -> None:
    env = Env()
    step = env.send_nvsp(nvs_init(NVS_V4, ver_max=NVS_V5))
    assert NvspNegotiated(NVS_V4) in step.events  # the host takes min_protocol_ver, as OpenVMM
    assert env.host.rejections[-1].field == "max_protocol_ver"
    env.send_nvsp(nvs_ndis_conf())
    env.send_nvsp(nvs_ndis_init(5, 0))
    assert env.host.rejections[-1].field == "ndis_major_ver" and env.host.ndis_version == (5, 0)


# --- batched receive and injected host faults ----------------------------------------------------


def test_deliver_batch_uses_one_packet_with_a_range_per_frame() -> None:
    env = Env()
    env.bring_up()
    frames = [FRAME, FRAME[::-1], bytes(range(60, 160))]
    (p,) = env.host.deliver_batch(frames).packets
    assert len(p.ranges) == 3 and len({o for _, o in p.ranges}) == 3
    for (count, offset), frame in zip(p.ranges, frames, strict=True):
        msg = bytes(env.recv[offset:offset + count])
        d_off, d_len = struct.unpack_from("<2I", msg, 8)
        assert msg[8 + d_off:8 + d_off + d_len] == frame
    assert env.host.outstanding_receives == 3
    env.ack(p)
    assert env.host.outstanding_receives == 0


def test_deliver_batch_drops_what_does_not_fit() -> None:
    env = Env(HostProfile(recv_section_size=2048), recv=bytearray(2048 * 6))  # 3 control + 3 data
    env.bring_up()
    step = env.host.deliver_batch([FRAME] * 5 + [bytes(2000)])
    assert len(step.packets[0].ranges) == 3
    assert env.host.counters["rx_dropped_no_section"] == 2 and env.host.counters["rx_dropped_too_big"] == 1


@pytest.mark.parametrize("layout", ["openvmm", "compact"])
@pytest.mark.parametrize("inject", ["pageset", "range_past_buffer", "range_over_section", "zero_length",
                                    "rndis_len", "data_offset", "nvsp_type"])
def test_injected_receive_faults_break_the_rule_they_name(inject: str, layout: str) -> None:
    env = Env(HostProfile(rx_layout=layout))  # type: ignore[arg-type]
    env.bring_up()
    (p,) = env.host.deliver(FRAME, inject=inject).packets  # type: ignore[arg-type]
    assert env.host.recv is not None
    _, _, section, count = env.host.recv
    (byte_count, byte_offset), = p.ranges
    msg = bytes(env.recv[byte_offset % len(env.recv):][:section])
    # the message's length: the whole section in the openvmm layout, header + frame in the compact one
    written = section if layout == "openvmm" else size("rndis_packet_msg") + len(FRAME)
    broken = {
        "pageset": p.xfer_pageset_id != RXBUF_SIG,
        "range_past_buffer": byte_offset >= section * count,
        "range_over_section": byte_count > section,
        "zero_length": byte_count == 0,
        "rndis_len": struct.unpack_from("<I", msg, 4)[0] > written,
        "data_offset": 8 + struct.unpack_from("<I", msg, 8)[0] + len(FRAME) > written,
        "nvsp_type": struct.unpack_from("<I", p.payload)[0] != c(T, "NVS_TYPE_RNDIS"),
    }
    assert broken[inject] and sum(broken.values()) == 1
    env.ack(p, status=FAILED)  # the section is still the guest's to complete
    assert env.host.outstanding_receives == 0


def test_rx_batch_that_does_not_fit_the_ring_is_dropped_counted_and_its_sections_freed() -> None:
    # [OV] process_endpoint_rx: try_send fails -> rx_dropped_ring_full, receive buffers freed.
    env = Env()
    env.bring_up()
    free_before = len(env.host._rx.free_data)
    assert env.host.deliver_batch([FRAME, FRAME], room=64).packets == ()
    assert env.host.counters["rx_dropped_ring_full"] == 2 and env.host.counters["rx_delivered"] == 0
    assert env.host.outstanding_receives == 0 and len(env.host._rx.free_data) == free_before
    (p,) = env.host.deliver_batch([FRAME, FRAME], room=1 << 20).packets
    assert len(p.ranges) == 2 and env.host.counters["rx_delivered"] == 2
    need = -(-len(p.encode()) // 8) * 8 + 8
    env.ack(p)
    assert env.host.deliver_batch([FRAME, FRAME], room=need).packets == ()  # never filled completely
    assert env.host.deliver_batch([FRAME, FRAME], room=need + 1).packets
    assert env.host.counters["rx_dropped_ring_full"] == 4
