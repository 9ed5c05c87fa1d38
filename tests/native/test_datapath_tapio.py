"""Tap I/O of the C pump on a real tap, in both modes: one readv/writev per frame ("readv") and
batched through an io_uring ("uring", _native/tapio.c).

Each test runs once per mode over the same tap (IFF_VNET_HDR, in a namespace of its own): frames
reach the host byte-exact and in order from the tap, and the tap in order from the host, also in
bursts larger than the io_uring's batches; a tap that refuses writes (link down: EIO) drops
frames counted and completes their transfer-page packets FAILED; a packet's completion is only
written once its frames were written; the mode a pump runs is reported; close() leaves the tap's
frames where they are. The fake host (tests/support/fakehost.py) owns the rings; frames enter the
tap's transmit side through an AF_PACKET socket in the namespace and leave its receive side
through another.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest

from hvuio.errors import LocalProtocolError
from hvuio.native.datapath import TAP_IO_RX_SLOTS, TAP_IO_TX_SLOTS, DataPath, Status
from hvuio.native.datapath_config import tap_io_probe
from hvuio.netdev.tap import Tap
from support.fakehost import STATUS_FAILED, STATUS_OK, FakeHost, rndis_packet
from support.namespaces import NetnsFactory
from support.waiting import wait_until

MAC = bytes.fromhex("020000000c01")
ETHERTYPE = 0x88B5          # local experimental: no protocol of the namespace answers or sends it
CLONE_NEWNET = 0x40000000
SECTIONS = 256
BURST = 3 * max(TAP_IO_TX_SLOTS, TAP_IO_RX_SLOTS) + 7   # larger than either batch of the io_uring

T = TypeVar("T")


def uring_skip_reason() -> str | None:
    try:
        with open("/proc/sys/kernel/io_uring_disabled") as f:
            if f.read().strip() == "2":
                return "io_uring is disabled (kernel.io_uring_disabled = 2)"
    except FileNotFoundError:
        return "the kernel has no io_uring"
    h = FakeHost(tap_io="uring")
    try:
        return None if h.dp.tap_io == "uring" else f"io_uring_setup refused: {h.dp.tap_io_error}"
    finally:
        h.dp.close()
        h.close()


@pytest.fixture(params=["readv", "uring"])
def mode(request: pytest.FixtureRequest) -> str:
    if request.param == "uring":
        reason = uring_skip_reason()
        if reason is not None:
            pytest.skip(reason)
    return str(request.param)


def in_netns(ns: str, fn: Callable[[], T]) -> T:
    """fn() in a thread that joined namespace `ns` (setns moves the calling thread only)."""
    out: list[T] = []
    err: list[BaseException] = []

    def body() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns")
            finally:
                os.close(fd)
            out.append(fn())
        except BaseException as exc:  # surfaced below
            err.append(exc)

    th = threading.Thread(target=body)
    th.start()
    th.join()
    if err:
        raise err[0]
    return out[0]


class Rig:
    """A real tap in a namespace, a fake host's rings and buffers, one DataPath on the tap."""

    def __init__(self, ns: str, tap: Tap, mode: str) -> None:
        self.tap = tap
        self.host = FakeHost(tx_data=256 * 1024, rx_data=256 * 1024, recv_size=SECTIONS * 2048,
                             send_count=SECTIONS, tap_io="readv")   # its own DataPath stays idle
        h = self.host
        self.dp = DataPath(tx_ring=h.tx_ring, rx_ring=h.rx_ring, recv_buf=h.recv, recv_section_size=h.recv_section,
                           send_buf=h.send, send_section_size=h.send_section, send_section_count=SECTIONS,
                           tap_fd=tap.fileno(), irq_fd=h.irq_guest.fileno(), vnet_hdr=True, tap_io=mode)
        name = tap.name

        def sockets() -> tuple[socket.socket, socket.socket]:
            out = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
            out.bind((name, 0))
            inn = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETHERTYPE))
            inn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            inn.bind((name, ETHERTYPE))
            inn.setblocking(False)
            return out, inn

        self.inject, self.capture = in_netns(ns, sockets)

    def close(self) -> None:
        self.dp.close()
        self.inject.close()
        self.capture.close()
        self.host.close()

    # ---- tap -> host -----------------------------------------------------------------------------

    def host_takes(self) -> list[bytes]:
        """The frames of every NVS 107 send in the outbound ring, each send completed OK."""
        frames = []
        for p in self.host.drain():
            if p.type == 0xB:
                continue
            _nvs, _chan, idx, size = struct.unpack_from("<IIII", p.payload)
            msg = self.host.section_bytes(idx, size)
            doff, dlen = struct.unpack_from("<II", msg, 8)
            frames.append(msg[8 + doff:8 + doff + dlen])
            self.host.complete_tx(p.trans_id)
        self.dp.rx()   # the completions free the sections
        return frames

    def pump_tx(self, want: int) -> list[bytes]:
        got: list[bytes] = []

        def more() -> bool:
            self.dp.tx()
            got.extend(f for f in self.host_takes() if f[12:14] == struct.pack("!H", ETHERTYPE))
            return len(got) >= want

        wait_until(more, f"{want} frames from the tap")
        return got

    # ---- host -> tap -----------------------------------------------------------------------------

    def tap_gets(self, want: int) -> list[bytes]:
        got: list[bytes] = []

        def more() -> bool:
            while True:
                try:
                    got.append(self.capture.recv(70000))
                except BlockingIOError:
                    return len(got) >= want
                except OSError as exc:   # a link that went down is reported once, then it reads on
                    if exc.errno != errno.ENETDOWN:
                        raise

        wait_until(more, f"{want} frames on the tap")
        return got


@pytest.fixture
def rig(netns_factory: NetnsFactory, mode: str) -> Iterator[Rig]:
    ns = netns_factory.namespace("tio")
    tap = Tap.open(netns_factory.ifname("tio"), MAC, 1500, netns=ns, vnet_hdr=True)
    netns_factory.defer("close tap", tap.close)
    tap.up()
    os.set_blocking(tap.fileno(), False)
    r = Rig(ns, tap, mode)
    netns_factory.defer("close rig", r.close)
    assert r.dp.tap_io == mode
    yield r


def frame(i: int, size: int) -> bytes:
    """A frame addressed to the tap with the test's EtherType, its index in the first 4 bytes."""
    head = MAC + bytes.fromhex("020000000c02") + struct.pack("!HI", ETHERTYPE, i)
    return head + bytes((i * 13 + k) & 0xFF for k in range(size - len(head)))


def sizes(n: int) -> list[int]:
    return [(60, 64, 1514, 333, 1000, 1500)[i % 6] for i in range(n)]


def test_tap_to_host_frames_are_byte_exact_and_in_order(rig: Rig) -> None:
    frames = [frame(i, s) for i, s in enumerate(sizes(BURST))]
    for f in frames:
        rig.inject.send(f)
    assert rig.pump_tx(len(frames)) == frames
    c = rig.dp.counters()
    assert c["tx_packets"] >= len(frames) and c["tx_tap_err"] == c["tx_runt"] == c["tx_oversize"] == 0
    if rig.dp.tap_io == "uring":
        # batched: bursts of reads, many per io_uring_enter
        assert c["uring_reads"] >= len(frames) and c["uring_enters"] < len(frames) // 4
    else:
        assert c["uring_reads"] == c["uring_enters"] == 0


def test_host_to_tap_frames_are_byte_exact_and_in_order_and_completed_after(rig: Rig) -> None:
    frames = [frame(i, s) for i, s in enumerate(sizes(BURST))]
    tid = 1
    for start in range(0, len(frames), 4):   # transfer-page packets of 4 ranges (frames) each
        rig.host.send_frames(frames[start:start + 4], trans_id=tid, first_section=start % SECTIONS)
        tid += 1
    while rig.dp.rx() is Status.BUDGET:
        pass
    comps = [p for p in rig.host.drain() if p.type == 0xB]
    # every packet completed once, OK, and only after its frames were on the tap: they are there
    assert [(p.trans_id, rig.host.comp_fields(p)[1]) for p in comps] == [(t, STATUS_OK) for t in range(1, tid)]
    assert rig.tap_gets(len(frames)) == frames
    c = rig.dp.counters()
    assert c["rx_packets"] == c["rx_ranges_written"] == len(frames) and c["rx_tap_drop"] == 0
    if rig.dp.tap_io == "uring":
        assert c["uring_writes"] == len(frames) and c["uring_enters"] < len(frames) // 4


def test_a_tap_that_refuses_writes_drops_counted_and_completes_failed(rig: Rig) -> None:
    rig.tap.down()   # tun answers a write to a link that is down with EIO
    frames = [frame(i, 100) for i in range(10)]
    rig.host.send_frames(frames[:6], trans_id=1, first_section=0)
    rig.host.send_frames(frames[6:], trans_id=2, first_section=6)
    assert rig.dp.rx() is Status.IDLE
    comps = [p for p in rig.host.drain() if p.type == 0xB]
    assert [(p.trans_id, rig.host.comp_fields(p)[1]) for p in comps] == [(1, STATUS_FAILED), (2, STATUS_FAILED)]
    c = rig.dp.counters()
    assert c["rx_tap_drop"] == c["rx_range_drops"] == 10 and c["rx_packets"] == c["rx_ranges_written"] == 0
    assert rig.dp.last_drop() == ("tap_write", 5)   # EIO
    assert rig.dp.drop_counts() == {"tap_write": 10}
    rig.tap.up()   # and back: frames flow again, the packet completes OK
    rig.host.send_frames([frame(99, 200)], trans_id=3, first_section=20)
    assert rig.dp.rx() is Status.IDLE
    assert [(p.trans_id, rig.host.comp_fields(p)[1]) for p in rig.host.drain()] == [(3, STATUS_OK)]
    assert rig.tap_gets(1) == [frame(99, 200)]


def test_a_packet_is_completed_only_when_all_its_writes_completed(rig: Rig) -> None:
    """A packet whose frames span a full batch of queued writes (and one the tap refuses among
    them): its completion comes once, after the last, with the status of all of them."""
    n = TAP_IO_RX_SLOTS + 5
    frames = [frame(i, 90) for i in range(n)]
    big = frame(7777, 1514)
    # one packet of n + 1 ranges: more frames than the queue holds, one of them oversize for the MTU
    ranges = [rig.host.place(i, b) for i, b in enumerate(rndis_packet(f) for f in frames)]
    ranges.append(rig.host.place(n, rndis_packet(big + b"x" * 20)))
    rig.host.send_xfer(ranges, trans_id=42)
    assert rig.dp.rx() is Status.IDLE
    comps = [p for p in rig.host.drain() if p.type == 0xB]
    assert [(p.trans_id, rig.host.comp_fields(p)[1]) for p in comps] == [(42, STATUS_FAILED)]
    assert rig.tap_gets(n) == frames
    c = rig.dp.counters()
    assert c["rx_packets"] == n and c["rx_oversize"] == 1 and c["rx_comp_sent"] == 1


def test_close_leaves_the_taps_frames_where_they_are(rig: Rig) -> None:
    rig.inject.send(frame(1, 64))
    assert rig.pump_tx(1) == [frame(1, 64)]
    rig.dp.close()
    rig.inject.send(frame(2, 64))
    got = None

    def read() -> bool:
        nonlocal got
        try:
            got = os.read(rig.tap.fileno(), 2048)
        except BlockingIOError:
            return False
        return True

    wait_until(read, "the frame on the tap")
    assert got is not None and got[12:] == frame(2, 64)   # after the vnet header: nobody took it
    with pytest.raises(LocalProtocolError):
        rig.dp.tx()
    assert rig.dp.counters()["tx_tap_closed"] == 0


def test_the_mode_is_reported_and_an_unknown_one_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    h = FakeHost(tap_io="readv")
    try:
        assert h.dp.tap_io == "readv" and h.dp.tap_io_error is None and h.dp.counters()["tap_uring"] == 0
        monkeypatch.setenv("HVUIO_TAP_IO", "readv")
        assert FakeHost().dp.tap_io == "readv"           # the environment forces the old path
        monkeypatch.setenv("HVUIO_TAP_IO", "nope")
        with pytest.raises(LocalProtocolError, match="tap I/O mode 'nope'"):
            FakeHost()
    finally:
        h.close()
    if uring_skip_reason() is None:
        monkeypatch.delenv("HVUIO_TAP_IO")
        u = FakeHost()
        try:
            assert u.dp.tap_io == "uring" and u.dp.counters()["tap_uring"] == 1
        finally:
            u.dp.close()
            u.close()



def test_frames_a_burst_read_ahead_are_counted_when_the_pump_closes() -> None:
    reason = uring_skip_reason()
    if reason is not None:
        pytest.skip(reason)
    h = FakeHost(send_count=2, tap_io="uring")   # two sections: TX blocks after two frames
    try:
        frames = [frame(i, 64) for i in range(10)]
        for f in frames:
            h.tap_host.send(f)
        assert h.dp.tx() is Status.BLOCKED
        assert h.dp.counters()["tx_packets"] == 2
        h.dp.close()
        # the first burst read four; two went out, two were read ahead and are dropped counted,
        # and the rest never left the tap
        assert h.dp.counters()["tx_tap_closed"] == 2
        left = []
        while True:
            try:
                left.append(h.tap_guest.recv(2048))
            except BlockingIOError:
                break
        assert left == frames[4:]
    finally:
        h.close()


def test_a_kernel_that_refuses_a_ring_falls_back_to_readv() -> None:
    """io_uring_setup refused (here EMFILE: no fd number left under RLIMIT_NOFILE; ENOSYS or EPERM
    on other kernels): the pump says why and moves frames with readv/writev."""
    import resource

    from support.fakehost import frame as pattern

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    h = FakeHost(tap_io="readv")
    try:
        lowest = os.dup(0)   # the lowest free fd number: the ring's would be this one
        os.close(lowest)
        resource.setrlimit(resource.RLIMIT_NOFILE, (lowest, hard))
        try:
            dp = DataPath(tx_ring=h.tx_ring, rx_ring=h.rx_ring, recv_buf=h.recv, recv_section_size=h.recv_section,
                          send_buf=h.send, send_section_size=h.send_section, send_section_count=8,
                          tap_fd=h.tap_guest.fileno(), irq_fd=h.irq_guest.fileno(), tap_io="uring")
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        assert dp.tap_io == "readv" and dp.tap_io_error is not None
        assert uring_skip_reason() is not None or dp.tap_io_error.startswith("EMFILE")
        h.tap_host.send(pattern(64, 1))
        assert dp.tx() is Status.IDLE
        assert [p.trans_id >> 63 for p in h.drain()] == [1]
        h.send_frames([pattern(80, 2)], trans_id=9)
        assert dp.rx() is Status.IDLE
        assert h.tap_frames() == [pattern(80, 2)]
        c = dp.counters()
        assert c["tap_uring"] == c["uring_enters"] == c["uring_reads"] == c["uring_writes"] == 0
        assert c["tx_packets"] == c["rx_packets"] == 1
        dp.close()
    finally:
        h.close()


def test_large_frames_are_read_straight_to_their_place_small_ones_in_bursts() -> None:
    """While the frames read lately are large (jumbo, GSO) a read is one readv into the send
    section (copying them out of a slot costs more than the call saved); small ones come back to
    bursts. Either way the host gets every frame, in order."""
    reason = uring_skip_reason()
    if reason is not None:
        pytest.skip(reason)
    h = FakeHost(mtu=9000, send_section=16384, send_count=32, tx_data=256 * 1024, tap_io="uring")
    try:
        sent: list[bytes] = []
        got: list[bytes] = []

        def batch(frames: list[bytes]) -> None:
            for f in frames:
                h.tap_host.send(f)
            sent.extend(frames)
            assert h.dp.tx() is Status.IDLE
            for p in h.drain():
                _nvs, _chan, idx, size = struct.unpack_from("<IIII", p.payload)
                msg = h.section_bytes(idx, size)
                doff, dlen = struct.unpack_from("<II", msg, 8)
                got.append(msg[8 + doff:8 + doff + dlen])
                h.complete_tx(p.trans_id)
            assert h.dp.rx() is Status.IDLE

        batch([frame(i, 8000) for i in range(3)])
        assert h.dp.counters()["uring_reads"] == 3          # the first ones through a burst
        batch([frame(i, 8000) for i in range(3, 6)])
        assert h.dp.counters()["uring_reads"] == 3          # then straight: no burst, no copy
        batch([frame(i, 64) for i in range(6, 26)])
        assert h.dp.counters()["uring_reads"] > 3 + 10      # small frames: bursts again
        assert got == sent and h.dp.counters()["tx_packets"] == 26
    finally:
        h.dp.close()
        h.close()


def test_the_probe_answers_as_a_pumps_set_up_does() -> None:
    """tap_io_probe (what `hvuio doctor` asks) sets up and closes the ring a pump sets up: the
    same answer as a pump's tap_io_error, here and with no fd number left (EMFILE)."""
    import resource

    from hvuio.native import lib

    h = FakeHost(tap_io="uring")
    try:
        assert tap_io_probe() == h.dp.tap_io_error
    finally:
        h.dp.close()
        h.close()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lowest = os.dup(0)
    os.close(lowest)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowest, hard))
    try:
        refused = tap_io_probe()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert refused is not None and (uring_skip_reason() is not None or refused.startswith("EMFILE"))
    assert tap_io_probe() == h.dp.tap_io_error   # the trial ring was closed: nothing left behind
    assert lib.hvu_dp_tap_io_probe(0) == errno.EINVAL
