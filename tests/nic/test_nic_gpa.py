"""GPA-direct control messages and the honest MTU, through Channel and Nic.

The channel alone: a Channel over anonymous mappings, its control pages a FakePool
(tests/support/guestpool.py: scrambled page numbers), the host's side of the outbound ring read
with hvuio.sim.vsp.ring and the type-9 packet decoded by tests/support/fakehost.py.

The Nic: the emulator in-process (SimEnvironment), the Nic given a FakePlatform that wraps the
emulator's platform and hands out a FakePool; the emulated host (hvuio.sim.host.HostNvsp) reads
GPA-direct ranges by page number from that pool (`read_guest_pages`), or, as a host that does not
take GPA-direct control messages, ignores type-9 packets or fails them. Expected values come from
the host profile; waits are bounded polls.
"""

from __future__ import annotations

import logging
import mmap
import socket
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hvuio.channel import Channel
from hvuio.device.bind import bind_device
from hvuio.device.platform import TreePlatform
from hvuio.device.uio import Interrupt
from hvuio.errors import HostProtocolError, LocalProtocolError
from hvuio.nic import CONTROL_AREA, NIC_POOL_SIZE, Nic
from hvuio.nicinfo import section_mtu
from hvuio.proto.events import Outbound, Send
from hvuio.sim.host import nvsp as host_nvsp
from hvuio.sim.host import profile as hp
from hvuio.sim.host import rndis as host_rndis
from hvuio.sim.host import wire as hw
from hvuio.sim.vsp import session as vsp_session
from hvuio.sim.vsp.host import SimEnvironment
from hvuio.sim.vsp.ring import HostRingReader
from hvuio.wire import nvsp as wn

from support.fakehost import PKT_GPA, gpa_direct_bytes, gpa_direct_ranges
from support.guestpool import FakePlatform, FakePool

PAGE = 4096
RING = mmap.PAGESIZE + 64 * 1024


# ---- the channel alone ----------------------------------------------------------------------------

class _Quiet:
    def signal(self) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.fixture
def chan() -> Iterator[tuple[Channel, FakePool, HostRingReader]]:
    rings = mmap.mmap(-1, 2 * RING)
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    c = Channel(rings, ring_size=RING, interrupt=Interrupt(a.detach(), "uio-gpa"), signaller=_Quiet(),
                recv_buf=mmap.mmap(-1, 8 * PAGE), send_buf=mmap.mmap(-1, 8 * 6144), name="gpa channel")
    pool = FakePool(NIC_POOL_SIZE)
    c.control_pages = pool.memory.whole.region(0, CONTROL_AREA)
    reader = HostRingReader(rings, offset=0, size=RING)
    try:
        yield c, pool, reader
    finally:
        c.close()
        c.interrupt.close()
        b.close()
        pool.memory.close()


def rndis_send(xid: int, rndis: bytes, page: int) -> Send:
    nv = wn.NvspSendRndisPacket(type=wn.NvspType.SEND_RNDIS_PACKET, channel_type=wn.RndisChannelType.CONTROL,
                                section_index=wn.SEND_SECTION_NONE, section_size=0)
    return Send(Outbound(wn.to_bytes(nv), xid, True, rndis), offset=page * PAGE, page=page)


def test_a_page_send_is_one_type_9_packet_the_host_reads_by_page_number(chan: Any) -> None:
    c, pool, reader = chan
    message = bytes(range(256)) * 3
    c.send(rndis_send(0x1234, message, page=5))
    (pkt,), _ = reader.read_batch(8)
    assert pkt.type == PKT_GPA and pkt.flags == 1 and pkt.trans_id == 0x1234  # completion requested
    assert len(pkt.header) == 24  # reserved, range_count, one range with one page number
    assert gpa_direct_ranges(pkt.header) == [(len(message), 0, (pool.pfns[5],))]
    assert pool.pfns[5] != pool.pfns[0] + 5  # the page numbers are scrambled: only a real lookup reads it
    assert gpa_direct_bytes(pkt, pool.read) == message
    nvsp = struct.unpack_from("<IIII", pkt.payload)
    assert nvsp == (wn.NvspType.SEND_RNDIS_PACKET, wn.RndisChannelType.CONTROL, 0xFFFFFFFF, 0)
    assert c.counters.control_gpa == 1 and c.counters.control_sections == 0


def test_a_page_outside_the_control_pages_or_a_message_past_its_page_never_leaves(chan: Any) -> None:
    c, _, reader = chan
    with pytest.raises(LocalProtocolError, match="outside the 16 control pages"):
        c.send(rndis_send(1, b"x" * 64, page=16))
    with pytest.raises(LocalProtocolError, match="would cross its 4096-byte page"):
        c.send(rndis_send(2, b"x" * (PAGE + 1), page=0))
    c.control_pages = None
    with pytest.raises(LocalProtocolError, match="no control pages"):
        c.send(rndis_send(3, b"x" * 64, page=0))
    assert reader.read_batch(8)[0] == []


# ---- the Nic against the emulator -----------------------------------------------------------------

class IgnoringGpaHost(host_nvsp.HostNvsp):
    """A host that never answers a GPA-direct packet (as one that does not take them might)."""

    ignored = 0

    def receive(self, pkt: hw.GuestPacket) -> host_nvsp.Step:
        if pkt.type == hw.PKT_GPA_DIRECT:
            IgnoringGpaHost.ignored += 1
            return host_nvsp.Step()
        return super().receive(pkt)


class Rig:
    """The emulator, one bound NIC, a FakePlatform over the emulator's platform, and the hosts made."""

    def __init__(self, env: SimEnvironment, platform: FakePlatform) -> None:
        self.env = env
        self.platform = platform
        self.guid = env.nics[0].guid
        self.hosts: list[host_nvsp.HostNvsp] = []

    def nic(self, **kw: Any) -> Nic:
        return Nic(self.env.sysroot, self.guid, platform=self.platform, **kw)  # type: ignore[arg-type]


@pytest.fixture
def rig_factory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Rig]]:
    """rig(host="reads" | "no-reader" | "ignores", unavailable=None, profile=None)."""
    made: list[SimEnvironment] = []

    def make(host: str = "reads", unavailable: str | None = None, profile: hp.HostProfile | None = None) -> Rig:
        env = SimEnvironment(tmp_path / f"env{len(made)}", profile="6.17", nics=1, host_profile=profile)
        env.__enter__()
        made.append(env)
        bind_device(env.sysroot, env.nics[0].guid, force=True)
        rig = Rig(env, FakePlatform(TreePlatform(env.sysroot), unavailable=unavailable))
        cls = IgnoringGpaHost if host == "ignores" else host_nvsp.HostNvsp

        def hostnvsp(*args: Any, **kw: Any) -> host_nvsp.HostNvsp:
            # the fake pool's reader, or none (whatever the emulator itself would pass)
            kw["read_guest_pages"] = None if host == "no-reader" else rig.platform.read_guest_pages
            h = cls(*args, **kw)
            rig.hosts.append(h)
            return h
        monkeypatch.setattr(vsp_session, "HostNvsp", hostnvsp)
        return rig

    yield make
    for env in made:
        env.__exit__(None, None, None)


def test_bring_up_sends_every_control_message_gpa_direct_and_the_host_reads_it_by_page(
        rig_factory: Callable[..., Rig]) -> None:
    rig = rig_factory()
    with rig.nic(mtu=9000) as nic:
        info = nic.open()
        pool = rig.platform.pools[-1]
        assert rig.platform.asked == [NIC_POOL_SIZE]
        assert info.tx_path == "gpa-direct (fake test memory)"
        counters = nic.counter_snapshot()
        assert counters["channel_control_gpa"] >= 8 and counters["channel_control_sections"] == 0
        assert pool.reads == counters["channel_control_gpa"]  # the host read each one by page number
        assert rig.hosts[-1].rejections == []
        assert rig.env.host.fault(rig.guid) is None
        # the data path's area: the pool after the 16 control pages, same memory, same page numbers
        area = nic.gpa_pool
        assert area is not None and area.size == NIC_POOL_SIZE - CONTROL_AREA
        assert list(area.pfns) == list(pool.pfns[CONTROL_AREA // PAGE:])
        # the MTU asked is within what the host (9216-byte frames) and GPA-direct carry
        assert info.mtu == 9000 and info.mtu_limited_by is None
        assert info.host_max_frame == 9000
        assert info.to_dict()["tx_path"] == info.tx_path
    assert nic.memory is None and pool.memory.closed  # the Nic closed its pool


def test_without_gpa_the_platform_is_not_asked_and_sections_carry_control(rig_factory: Callable[..., Rig]) -> None:
    rig = rig_factory()
    with rig.nic(gpa=False) as nic:
        info = nic.open()
        assert rig.platform.asked == []
        assert info.tx_path == "send buffer (GPA-direct turned off: --no-gpa)"
        assert nic.gpa_pool is None
        counters = nic.counter_snapshot()
        assert counters["channel_control_gpa"] == 0 and counters["channel_control_sections"] >= 8


def test_no_guest_memory_is_one_warning_and_the_send_buffer(rig_factory: Callable[..., Rig],
                                                            caplog: pytest.LogCaptureFixture) -> None:
    rig = rig_factory(unavailable="no huge pages are reserved (vm.nr_hugepages is 0)")
    with caplog.at_level(logging.WARNING, logger="hvuio.nic"), rig.nic() as nic:
        info = nic.open()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["no guest memory for GPA-direct sends: no huge pages are reserved (vm.nr_hugepages is 0); "
                        "using the send buffer only"]
    assert info.tx_path == "send buffer (no huge pages are reserved (vm.nr_hugepages is 0))"


def test_a_host_failing_gpa_direct_sends_makes_the_control_path_fall_back(
        rig_factory: Callable[..., Rig], caplog: pytest.LogCaptureFixture) -> None:
    rig = rig_factory(host="no-reader")  # the emulated host fails a GPA-direct send (NVSP status 2)
    with caplog.at_level(logging.WARNING, logger="hvuio.nic"), rig.nic() as nic:
        info = nic.open()
        assert nic.ready and nic.guest is not None and not nic.guest.gpa_direct
        assert info.tx_path is not None and info.tx_path.startswith(
            "send buffer (the host failed the GPA-direct RNDIS initialize")
        assert nic.gpa_pool is None  # no GPA-direct data either
        counters = nic.counter_snapshot()
        assert counters["control_fallbacks"] == 1 and counters["channel_control_gpa"] == 1
    assert any("sending the RNDIS initialize again in a send section" in r.getMessage() for r in caplog.records)


def test_a_host_ignoring_gpa_direct_makes_the_bring_up_fall_back_after_the_rndis_timeout(
        rig_factory: Callable[..., Rig]) -> None:
    rig = rig_factory(host="ignores")
    IgnoringGpaHost.ignored = 0
    skew = [0.0]
    nic = rig.nic()

    def clock() -> float:
        # time runs fast only while the host sits on the ignored initialize: no real 5 s wait
        if IgnoringGpaHost.ignored and nic.guest is not None and nic.guest.fallback_reason is None:
            skew[0] += 3.0
        return time.monotonic() + skew[0]
    nic.clock = clock
    with nic:
        info = nic.open(timeout=600)
        assert IgnoringGpaHost.ignored == 1
        assert info.tx_path is not None and "did not answer the RNDIS initialize sent GPA-direct" in info.tx_path
        assert nic.counter_snapshot()["channel_control_sections"] >= 8
        assert rig.env.host.fault(rig.guid) is None


# ---- the MTU --------------------------------------------------------------------------------------

def test_mtu_above_what_a_send_section_carries_is_lowered_with_the_reason(
        rig_factory: Callable[..., Rig], caplog: pytest.LogCaptureFixture) -> None:
    rig = rig_factory()
    limit = section_mtu(hp.SEND_SECTION_SIZE)
    with caplog.at_level(logging.WARNING, logger="hvuio.nic"), rig.nic(mtu=9000, gpa=False) as nic:
        info = nic.open()
    assert info.mtu == limit and info.host_max_frame == 9000
    assert info.mtu_limited_by == f"without GPA-direct a send section carries at most {limit}"
    assert f"MTU {limit} instead of the 9000 asked: without GPA-direct a send section carries at most {limit}" in [
        r.getMessage() for r in caplog.records]


def test_mtu_above_what_the_host_allows_is_lowered_with_the_reason(rig_factory: Callable[..., Rig]) -> None:
    rig = rig_factory()
    host_limit = hp.MAX_NDIS_MTU - hp.ETH_HEADER_LEN
    # the host takes NDIS MTUs up to 9216 and replaces larger ones with 1514, as OpenVMM
    with rig.nic(mtu=host_limit + 1) as nic:
        info = nic.open()
    assert info.host_max_frame == hp.DEFAULT_NDIS_MTU - hp.ETH_HEADER_LEN
    assert info.mtu == info.host_max_frame
    assert info.mtu_limited_by == f"the host allows at most {info.host_max_frame}"


def test_mtu_below_the_host_default_is_kept_not_raised_to_1500(rig_factory: Callable[..., Rig]) -> None:
    rig = rig_factory()
    with rig.nic(mtu=576) as nic:  # the host substitutes 1514 for NDIS MTUs under 1514
        info = nic.open()
    assert info.host_max_frame == 1500 and info.mtu == 576 and info.mtu_limited_by is None


def _host_answers_max_frame(monkeypatch: pytest.MonkeyPatch, info: bytes | None) -> None:
    real = host_rndis.HostRndis._answer_oid

    def answer(self: host_rndis.HostRndis, oid: int) -> bytes | None:
        return info if oid == hw.OID_GEN_MAXIMUM_FRAME_SIZE else real(self, oid)
    monkeypatch.setattr(host_rndis.HostRndis, "_answer_oid", answer)


@pytest.mark.parametrize("info", [struct.pack("<I", v) for v in (0, 67, 65522, 0xFFFFFFFF)]
                         + [b"\x00\x05\x00", struct.pack("<Q", 1500)],
                         ids=["0", "67", "65522", "u32max", "3-bytes", "8-bytes"])
def test_a_hostile_maximum_frame_size_stops_the_bring_up(
        rig_factory: Callable[..., Rig], monkeypatch: pytest.MonkeyPatch, info: bytes) -> None:
    rig = rig_factory()
    _host_answers_max_frame(monkeypatch, info)
    nic = rig.nic()
    with pytest.raises(HostProtocolError, match="GEN_MAXIMUM_FRAME_SIZE"):
        nic.open()
    assert nic.channel is None and nic.memory is None and rig.platform.pools[-1].memory.closed


def test_the_smallest_maximum_frame_size_is_used(rig_factory: Callable[..., Rig],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    rig = rig_factory()
    _host_answers_max_frame(monkeypatch, struct.pack("<I", 68))
    with rig.nic() as nic:
        info = nic.open()
    assert info.mtu == 68 and info.mtu_limited_by == "the host allows at most 68"


def test_a_host_that_does_not_answer_the_query_limits_nothing(rig_factory: Callable[..., Rig],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    rig = rig_factory()
    _host_answers_max_frame(monkeypatch, None)  # NOT_SUPPORTED: the query is optional
    with rig.nic(mtu=4000) as nic:
        info = nic.open()
    assert info.host_max_frame is None and info.mtu == 4000
