"""Our guest machines joined in memory to the emulator's host machines (hvuio.sim.host.nvsp).

The two sides were written independently from the sources (ours from Linux/DPDK, the host from
OpenVMM's netvsp), so agreement here is evidence, not tautology. `GuestHostPair` plays the I/O
side of hvuio/nic.py around the same NetvscGuest: it writes the guest's Sends (RNDIS control
messages into the send-buffer sections the guest picked), copies RNDIS messages out of
receive-buffer ranges, acks each transfer-page packet and feeds everything back to the guest.
Both sides' events are recorded and asserted; the host's rejection log must stay empty.
"""

from __future__ import annotations

import dataclasses
import struct
from collections import deque
from typing import Any

import pytest

from hvuio.proto.events import (
    BuffersRevoked, Inbound, InboundKind, IndirectionTable, KeepaliveDropped, LinkStatus, MacAddress, NvspReady,
    QueryResult,
    RecvBufReady, RequestFailed, RndisConfigured, RndisReady, RssCaps, RssConfigured, Send, SendBufReady,
    SendTableFixed, SetComplete, StatusIndication, SubchannelsGranted, SubchannelsRefused,
    DatapathSwitched, HostDatapathSwitched, VfAssociation,
)
from hvuio.errors import HostTimeoutError
from hvuio.proto import rss
from hvuio.proto.limits import RNDIS_REPLY_TIMEOUT_S
from hvuio.wire import rndis as wr
from hvuio.proto.netvsc import Effect, NetvscGuest
from hvuio.proto.nvsp import BufferGrant, NvspGuest
from hvuio.proto.rndis import RndisGuest
from hvuio.proto.states import NvspState, RndisState
from hvuio.wire import nvsp as wn
from hvuio.wire import rndis as wr

from support.golden import GOLDEN

host_nvsp = pytest.importorskip("hvuio.sim.host.nvsp", reason="host emulator not available")
host_profile = pytest.importorskip("hvuio.sim.host.profile")
sim_events = pytest.importorskip("hvuio.sim.host.events")
if not (hasattr(host_nvsp, "HostNvsp") and hasattr(sim_events, "RndisHalted")):
    pytest.skip("hvuio.sim.host.nvsp/events do not provide the host API (HostNvsp) right now",
                allow_module_level=True)

PT = GOLDEN["constants"]["vmbus_chanpkt_type"]
INBAND, RXBUF, COMP = (PT["VMBUS_CHANPKT_TYPE_INBAND"], PT["VMBUS_CHANPKT_TYPE_RXBUF"],
                       PT["VMBUS_CHANPKT_TYPE_COMP"])
RC = GOLDEN["constants"]["vmbus_chanpkt_flag"]["VMBUS_CHANPKT_FLAG_RC"]
RECV_GPADL, SEND_GPADL = 0xE1E10, 0xE1E11
RECV_SIZE, SEND_SIZE = 4 << 20, 1 << 20  # smaller than maps 3/4 to keep the test light


class GuestHostPair:
    def __init__(self, profile: Any = None, **guest_kw: Any) -> None:
        self.recv = bytearray(RECV_SIZE)
        self.send = bytearray(SEND_SIZE)
        self.host = host_nvsp.HostNvsp(
            profile or host_profile.HostProfile(),
            gpadls={RECV_GPADL: RECV_SIZE, SEND_GPADL: SEND_SIZE},
            read_send_buffer=lambda o, n: bytes(self.send[o:o + n]),
            write_recv_buffer=self._write_recv)
        self.guest = NetvscGuest(recv_buf=BufferGrant(RECV_GPADL, RECV_SIZE),
                                 send_buf=BufferGrant(SEND_GPADL, SEND_SIZE), **guest_kw)
        self.host_profile = profile or host_profile.HostProfile()
        self.guest_events: list[Any] = []
        self.host_events: list[Any] = []
        self._to_guest: deque[Any] = deque()

    @property
    def nvsp(self) -> NvspGuest:
        return self.guest.nvsp

    @property
    def rndis(self) -> RndisGuest | None:
        return self.guest.rndis

    def _write_recv(self, offset: int, data: bytes) -> None:
        self.recv[offset:offset + len(data)] = data

    # guest -> host
    def write(self, msg: Send) -> None:
        if msg.message.rndis is not None:
            assert msg.section is not None and self.guest.sections is not None
            assert len(msg.message.rndis) <= self.guest.sections.pool.size
            self.send[msg.offset:msg.offset + len(msg.message.rndis)] = msg.message.rndis
        pkt = host_nvsp.GuestPacket(INBAND, RC if msg.message.want_completion else 0,
                                    msg.message.trans_id, msg.payload)
        self._host_step(self.host.receive(pkt))
        self.pump()

    def _host_step(self, step: Any) -> None:
        self.host_events.extend(step.events)
        self._to_guest.extend(step.packets)

    # host -> guest
    def pump(self) -> None:
        while self._to_guest:
            pkt = self._to_guest.popleft()
            assert pkt.channel == 0
            if pkt.type == COMP:
                self._feed(Inbound(InboundKind.COMPLETION, pkt.trans_id, pkt.payload))
            elif pkt.type == INBAND:
                self._feed(Inbound(InboundKind.INBAND, pkt.trans_id, pkt.payload))
            else:
                assert pkt.type == RXBUF and pkt.xfer_pageset_id == wn.RECV_BUFFER_ID
                nv = wn.NvspSendRndisPacket.from_buffer_copy(pkt.payload.ljust(40, b"\0"))
                assert nv.type == wn.NvspType.SEND_RNDIS_PACKET
                assert nv.channel_type == wn.RndisChannelType.CONTROL
                for count, offset in pkt.ranges:
                    msg = bytes(self.recv[offset:offset + count])
                    self._feed(Inbound(InboundKind.RNDIS, pkt.trans_id, msg))
                ack = host_nvsp.GuestPacket(COMP, 0, pkt.trans_id, wn.receive_ack())
                self._host_step(self.host.receive(ack))

    def _feed(self, item: Inbound) -> None:
        self.do(self.guest.receive(item))

    def do(self, effects: list[Effect]) -> None:
        """Perform the guest's effects in order: record its events, write its Sends."""
        for e in effects:
            if isinstance(e, Send):
                self.write(e)
            else:
                self.guest_events.append(e)

    def bring_up(self) -> None:
        self.do(self.guest.start())
        assert self.nvsp.state is NvspState.READY and self.rndis is not None
        assert self.guest.ready

    def host_of(self, cls: type) -> list[Any]:
        return [e for e in self.host_events if isinstance(e, cls)]

    def guest_of(self, cls: type) -> list[Any]:
        return [e for e in self.guest_events if isinstance(e, cls)]


def test_bring_up_against_the_emulated_host() -> None:
    pair = GuestHostPair()
    pair.bring_up()
    assert pair.host.rejections == []
    profile = host_profile.HostProfile()
    assert pair.guest_of(NvspReady) == [NvspReady(0x60001, 0x6001E)]
    [rb] = pair.guest_of(RecvBufReady)
    assert rb.sections[0].sub_alloc_size == profile.recv_section_for_mtu(1514)
    assert pair.guest_of(SendBufReady) == [SendBufReady(6144, SEND_SIZE // 6144)]
    [ready] = pair.guest_of(RndisReady)
    assert ready.alignment == 8 and ready.max_packets_per_message == 8
    assert MacAddress(profile.mac, True) in pair.guest_events
    assert LinkStatus(True) in pair.guest_events
    assert RndisConfigured() in pair.guest_events
    assert pair.rndis is not None and pair.rndis.state is RndisState.READY
    assert pair.host_of(sim_events.NvspNegotiated) == [sim_events.NvspNegotiated(0x60001)]
    assert pair.host_of(sim_events.PacketFilterSet) == [sim_events.PacketFilterSet(0x0D)]
    assert pair.host_of(sim_events.RndisInitialized) == [sim_events.RndisInitialized(0x4000)]
    assert pair.host.outstanding_receives == 0  # every transfer-page packet was acked
    sections = pair.guest.sections
    assert sections is not None and sections.in_flight == 0 and sections.waiting == 0  # every section came back
    assert sections.pool.available == sections.pool.count
    # the host indicated its offload config after our set; we report what we do not interpret
    assert all(isinstance(e, StatusIndication) for e in pair.guest_of(StatusIndication))


@pytest.mark.parametrize("max_version", [0x50000, 0x40000, 0x30002, 0x2])
def test_version_walk_against_an_older_host(max_version: int) -> None:
    pair = GuestHostPair(host_profile.HostProfile(max_version=max_version))
    pair.bring_up()
    assert [e.version for e in pair.guest_of(NvspReady)] == [max_version]
    assert pair.host_of(sim_events.NvspNegotiated) == [sim_events.NvspNegotiated(max_version)]
    assert RndisConfigured() in pair.guest_events
    # the host's only complaints are the versions it refused, once each, newest first
    refused = [r.value for r in pair.host.rejections]
    assert refused == [v for v in wn.SUPPORTED_NVSP_VERSIONS if v > max_version]


def test_subchannels_link_changes_and_teardown() -> None:
    pair = GuestHostPair()
    pair.bring_up()
    pair.do(pair.guest.request_subchannels(3))
    assert pair.guest_of(SubchannelsGranted) == [SubchannelsGranted(3)]
    assert pair.host_of(sim_events.SubchannelsOffered) == [sim_events.SubchannelsOffered(3)]
    pair._host_step(pair.host.channels_opened(4))  # the primary and the 3 granted subchannels
    pair.pump()
    [table] = pair.guest_of(IndirectionTable)
    assert set(table.channels) == {0, 1, 2, 3}

    pair._host_step(pair.host.set_link(False))
    pair.pump()
    assert pair.guest_events[-1] == LinkStatus(False)

    assert pair.rndis is not None
    pair.do(pair.guest.halt())
    pair.do(pair.guest.stop())
    assert pair.host_of(sim_events.RndisHalted) == [sim_events.RndisHalted()]
    # both revokes are part of a clean teardown: taken, neither is a rejection
    assert pair.host_of(sim_events.BufferRevoked) == [sim_events.BufferRevoked("receive"),
                                                      sim_events.BufferRevoked("send")]
    assert pair.guest_of(BuffersRevoked) == [BuffersRevoked(True, True)]
    assert pair.host.rejections == []


def test_teardown_sets_the_packet_filter_to_0_before_the_halt() -> None:
    # Linux: rndis_filter_close_device (filter 0) before rndis_filter_device_remove (halt)
    pair = GuestHostPair()
    pair.bring_up()
    effects = pair.guest.close_filter()
    assert pair.guest.filter_closing and any(isinstance(e, Send) for e in effects)
    pair.do(effects)                       # written, answered and fed back in one go
    assert not pair.guest.filter_closing
    assert pair.guest_events[-1] == SetComplete(oid=wr.Oid.GEN_CURRENT_PACKET_FILTER)
    pair.do(pair.guest.halt())
    pair.do(pair.guest.stop())
    order = [e for e in pair.host_events if isinstance(e, (sim_events.PacketFilterSet, sim_events.RndisHalted))]
    assert order == [sim_events.PacketFilterSet(0x0D), sim_events.PacketFilterSet(0), sim_events.RndisHalted()]
    assert pair.host.rejections == []


def test_close_filter_is_nothing_before_rndis_is_ready() -> None:
    pair = GuestHostPair()
    assert pair.guest.close_filter() == [] and not pair.guest.filter_closing


def test_the_liveness_probe_is_a_link_query_the_host_answers() -> None:
    """probe(): OID_GEN_MEDIA_CONNECT_STATUS, answered by the host with the link (QueryResult)."""
    pair = GuestHostPair()
    assert pair.guest.probe() == []  # before RNDIS is ready: nothing
    pair.bring_up()
    effects = pair.guest.probe()
    assert [e for e in effects if isinstance(e, Send)]
    pair.do(effects)
    assert pair.guest_events[-1] == QueryResult(oid=wr.Oid.GEN_MEDIA_CONNECT_STATUS, data=struct.pack("<I", 0))
    assert pair.host.rejections == []


def test_the_liveness_probe_waits_behind_an_outstanding_request_and_times_out_unanswered() -> None:
    pair = GuestHostPair()
    pair.bring_up()
    sent = pair.guest.probe()
    assert sent and pair.guest.probe() == []  # one question at a time
    pair.guest.tick(100.0)                    # the reply's clock starts
    with pytest.raises(HostTimeoutError, match="GEN_MEDIA_CONNECT_STATUS"):
        pair.guest.tick(100.0 + RNDIS_REPLY_TIMEOUT_S)


@pytest.mark.parametrize("wanted,host_subchannels,asked", [
    (8, 3, 3),    # the host's 4 queues cap the request at 3 subchannels
    (2, 7, 1),    # the guest wants fewer than the host has
    (64, 63, 63),  # 64 queues on both sides
])
def test_subchannels_asked_within_the_host_queues(wanted: int, host_subchannels: int, asked: int) -> None:
    pair = GuestHostPair(host_profile.HostProfile(max_subchannels=host_subchannels), channels=wanted)
    pair.bring_up()
    [caps] = pair.guest_of(RssCaps)
    assert caps.receive_queues == host_subchannels + 1
    assert caps.table_entries == pair.host_profile.rss_table_entries
    assert pair.guest_of(SubchannelsGranted) == [SubchannelsGranted(asked)]
    assert pair.host_of(sim_events.SubchannelsOffered) == [sim_events.SubchannelsOffered(asked)]
    assert pair.guest.channels == asked + 1
    assert pair.host.rejections == []


@pytest.mark.parametrize("profile,guest_kw", [
    (dict(max_subchannels=0), dict(channels=8)),                      # one host queue
    (dict(), dict(channels=1)),                                       # the guest wants one channel
    (dict(), dict(channels=8, versions=(wn.NvspVersion.V4,))),        # NVSP 4: no vRSS
])
def test_no_subchannel_request_when_nothing_to_ask(profile: dict[str, Any], guest_kw: dict[str, Any]) -> None:
    pair = GuestHostPair(host_profile.HostProfile(**profile), **guest_kw)
    pair.bring_up()
    assert pair.guest_of(SubchannelsGranted) == [] and pair.guest_of(SubchannelsRefused) == []
    assert pair.guest.channels == 1 and pair.host.rejections == []
    if guest_kw.get("versions"):
        assert pair.guest_of(RssCaps) == []  # Linux asks RSS capabilities from NVSP 5 on only


def test_refused_subchannels_leave_the_primary_running() -> None:
    # 64 queues but a receive buffer too small to give each a data section: OpenVMM answers FAILURE
    profile = host_profile.HostProfile(max_subchannels=63, recv_section_size=128 * 1024)
    pair = GuestHostPair(profile, channels=64)
    pair.bring_up()  # ready: the refusal is no error
    assert pair.guest_of(SubchannelsRefused) == [SubchannelsRefused(asked=63, status=2)]
    assert pair.guest.channels == 1 and pair.nvsp.state is NvspState.READY
    assert [r.action for r in pair.host.rejections] == ["failure-status"]
    assert pair.host_of(sim_events.SubchannelsOffered) == []
    pair._host_step(pair.host.set_link(False))  # the primary still carries control traffic
    pair.pump()
    assert pair.guest_events[-1] == LinkStatus(False)


def test_host_keepalives_are_dropped_and_the_host_stays_up() -> None:
    # a non-default host that sends KEEPALIVEs: the guest answers none (a KEEPALIVE_CMPLT would
    # be a fault to this host, as to OpenVMM) and counts each
    profile = dataclasses.replace(host_profile.HostProfile(), keepalive_interval=1.0)
    pair = GuestHostPair(profile)
    pair.bring_up()
    for now in (10.0, 11.5, 13.0, 14.5):
        pair._host_step(pair.host.tick(now))
        pair.pump()
    assert len(pair.guest_of(KeepaliveDropped)) == 3
    assert pair.host.state == "ready" and pair.host.rejections == []


def test_no_link_indication_at_initialize_the_query_tells_the_link() -> None:
    pair = GuestHostPair()
    pair.bring_up()
    assert pair.host_of(sim_events.LinkIndicated) == []
    assert pair.guest_of(LinkStatus) == [LinkStatus(True)]  # from OID_GEN_MEDIA_CONNECT_STATUS


# ---- vRSS ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("wanted,host_subchannels", [(2, 7), (4, 3), (3, 7)])
def test_rss_is_set_as_linux_sets_it(wanted: int, host_subchannels: int) -> None:
    pair = GuestHostPair(host_profile.HostProfile(max_subchannels=host_subchannels), channels=wanted)
    pair.bring_up()
    queues = pair.guest.channels
    assert queues == min(wanted, host_subchannels + 1)
    # what the host holds is what the guest enabled: Linux's key, i % queues, the offered hash types
    state = pair.host.rss
    assert state is not None
    assert state.key == bytes.fromhex("6d5a56da255b0ec24167253d43a38fb0d0ca2bcbae7b30b477cb2da38030f20c"
                                      "6a42b73bbeac01fa")
    size = pair.host_profile.rss_table_entries
    assert state.table == tuple(i % queues for i in range(size))
    # the host offers IPv4 and IPv6 (TCP): Linux's 0x1701
    assert state.hash_info == 0x1701
    [done] = pair.guest_of(RssConfigured)
    assert done == pair.guest.rss and done.queues == queues and done.table == state.table
    assert pair.host.rejections == [] and pair.guest_of(RequestFailed) == []


def test_rss_disable_goes_first() -> None:
    pair = GuestHostPair(host_profile.HostProfile(max_subchannels=3), channels=4)
    sets: list[bytes] = []
    write = pair.write

    def spy(msg: Send) -> None:
        raw = msg.message.rndis
        if raw is not None and int.from_bytes(raw[8 + 4:8 + 8], "little") == wr.Oid.GEN_RECEIVE_SCALE_PARAMETERS:
            info_len, info_off = struct.unpack_from("<II", raw, 16)
            sets.append(raw[8 + info_off:8 + info_off + info_len])
        write(msg)
    pair.write = spy  # type: ignore[method-assign]
    pair.bring_up()
    assert len(sets) == 2
    flags = [struct.unpack_from("<H", s, 4)[0] for s in sets]
    assert flags == [wr.NDIS_RSS_FLAG_DISABLE, 0]
    assert sets[0][8:] == sets[1][8:]  # the same table and key both times
    # layout: table at byte 40, key right after it
    head = wr.NdisRssParams.from_buffer_copy(sets[1][:40])
    assert head.table_offset == 40 and head.key_offset == 40 + head.table_size and head.key_size == 40
    assert sets[1][head.key_offset:head.key_offset + 40] == rss.LINUX_KEY


def test_no_rss_on_one_queue() -> None:
    pair = GuestHostPair(host_profile.HostProfile(max_subchannels=7), channels=1)
    pair.bring_up()
    assert pair.host.rss is None and pair.guest.rss is None and pair.guest_of(RssConfigured) == []


def test_refused_rss_leaves_the_channels_ready(monkeypatch: pytest.MonkeyPatch) -> None:
    # the host refuses the enable (a key size it does not take, OpenVMM: INVALID_DATA): Linux goes
    # on with its channels, so bring-up ends ready, with RSS off
    real = rss.parameters

    def bad_key_size(*args: Any, **kw: Any) -> bytes:
        raw = bytearray(real(*args, **kw))
        struct.pack_into("<H", raw, wr.NdisRssParams.key_size.offset, 32)
        return bytes(raw)
    monkeypatch.setattr(rss, "parameters", bad_key_size)
    pair = GuestHostPair(host_profile.HostProfile(max_subchannels=3), channels=4)
    pair.bring_up()
    assert pair.guest.channels == 4 and pair.guest.rss is None and pair.host.rss is None
    assert pair.guest_of(RequestFailed) == [RequestFailed(oid=wr.Oid.GEN_RECEIVE_SCALE_PARAMETERS,
                                                          status=wr.RndisStatus.INVALID_DATA)]
    assert pair.guest_of(RssConfigured) == []


def test_send_table_from_the_host_is_kept() -> None:
    pair = GuestHostPair(host_profile.HostProfile(max_subchannels=3), channels=4)
    pair.bring_up()
    assert pair.guest.send_table == tuple(i % 4 for i in range(16))  # before the host's table
    pair._host_step(pair.host.channels_opened(4))
    pair.pump()
    [table] = pair.guest_of(IndirectionTable)
    assert pair.guest.send_table == table.channels and pair.guest_of(SendTableFixed) == []


def test_send_table_naming_unknown_channels_is_reduced_and_reported() -> None:
    pair = GuestHostPair(host_profile.HostProfile(max_subchannels=3), channels=2)
    pair.bring_up()
    assert pair.guest.channels == 2
    entries = tuple(range(16))
    msg = struct.pack("<III", wn.NvspType.SEND_INDIRECTION_TABLE, 16, 12) + struct.pack("<16I", *entries)
    pair._feed(Inbound(InboundKind.INBAND, 0, msg))
    assert pair.guest.send_table == tuple(q % 2 for q in entries)
    assert pair.guest_of(SendTableFixed) == [SendTableFixed(queues=2, bad=tuple(range(2, 16)))]


@pytest.mark.parametrize("sriov", [True, False])
def test_vf_association_switch_and_openvmm_removal(sriov: bool) -> None:
    pair = GuestHostPair(host_profile.HostProfile(vf_serial=3), sriov=sriov)
    pair.bring_up()
    if not sriov:  # never offered: the host never speaks of its VF
        assert pair.guest_of(VfAssociation) == [] and not pair.host.vf.advertised
        assert pair.host.rejections == []
        return
    assert pair.guest_of(VfAssociation) == [VfAssociation(True, 3)] and pair.host.vf.advertised
    assert pair.guest.may_switch_datapath
    pair.do(pair.guest.switch_datapath(True))
    assert pair.guest_of(DatapathSwitched) == [DatapathSwitched(True)] and pair.host.vf.data_path_vf
    assert pair.guest.may_switch_datapath                              # the completion ended the wait
    pair._host_step(pair.host.vf_remove())
    pair.pump()
    # OpenVMM's order: the host's own switch to synthetic, then allocated 0
    assert pair.guest_events[-2:] == [HostDatapathSwitched(False), VfAssociation(False, 0)]
    assert not pair.host.vf.data_path_vf and pair.host.rejections == []
