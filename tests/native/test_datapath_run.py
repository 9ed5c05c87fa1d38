"""The pump: hvu_dp_run's return reasons, interrupt-mask handling, the background thread with its
control callback and call_soon, configuration errors, and the fd-error mapping."""

from __future__ import annotations

import os
import socket
import struct
import threading

import pytest

from hvuio.errors import HostProtocolError, LocalProtocolError, PlatformError, RescindedError, RingCorruptError
from hvuio.native.datapath import TX_RING_MIN, TX_TAG, DataPath, RunResult, Status
from hvuio.native.ring import Packet
from support.fakehost import PKT_INBAND, FakeHost, frame

WAIT = 10.0  # seconds a test waits for the pump thread before failing (never a speed assertion)


def test_run_reports_control_pending_after_moving_data(host: FakeHost, stop_pipe: tuple[int, int]) -> None:
    host.send_frames([frame(64, 1)], trans_id=1)
    host.writer.write(PKT_INBAND, struct.pack("<I", 128) + bytes(12), trans_id=0)
    host.tap_host.send(frame(70, 2))
    assert host.dp.run(stop_pipe[0], timeout_ms=-1) is RunResult.CONTROL_PENDING
    assert host.tap_frames() == [frame(64, 1)]
    assert host.dp.read_control().payload[:4] == struct.pack("<I", 128)


def test_control_packet_taken_back_by_the_host_is_a_host_error(host: FakeHost,
                                                               stop_pipe: tuple[int, int]) -> None:
    """The pump left a control packet; the host then moves write_index back over it: that is the
    host's fault (HostProtocolError), not a bug of ours."""
    host.writer.write(PKT_INBAND, struct.pack("<I", 128) + bytes(12), trans_id=0)
    assert host.dp.run(stop_pipe[0], timeout_ms=-1) is RunResult.CONTROL_PENDING
    base = host.tx_size                      # the inbound ring's header: write_index at 0, read_index at 4
    host.mem[base:base + 4] = host.mem[base + 4:base + 8]
    with pytest.raises(HostProtocolError, match="moved write_index back"):
        host.dp.read_control()


def test_run_stops_on_stop_fd(host: FakeHost, stop_pipe: tuple[int, int]) -> None:
    os.write(stop_pipe[1], b"x")
    host.tap_host.send(frame(70, 2))
    assert host.dp.run(stop_pipe[0], timeout_ms=-1) is RunResult.STOPPED
    assert len(host.drain()) == 1               # work already waiting was done before stopping


def test_run_times_out_and_leaves_inbound_unmasked(host: FakeHost, stop_pipe: tuple[int, int]) -> None:
    assert host.dp.run(stop_pipe[0], timeout_ms=0) is RunResult.TIMEOUT
    assert host.rx_ring.interrupt_mask == 0     # about to sleep: the host may interrupt us


def test_run_without_mask_management_never_touches_the_mask(stop_pipe: tuple[int, int]) -> None:
    h = FakeHost(manage_interrupt_mask=False)
    try:
        h.rx_ring.set_interrupt_mask(1)          # e.g. a subchannel on a kernel without d062463edf17
        assert h.dp.run(stop_pipe[0], timeout_ms=0) is RunResult.TIMEOUT
        assert h.rx_ring.interrupt_mask == 1
    finally:
        h.close()


def test_busy_poll_returns_on_timeout(stop_pipe: tuple[int, int]) -> None:
    h = FakeHost(busy_poll=True)
    try:
        h.tap_host.send(frame(64))
        assert h.dp.run(stop_pipe[0], timeout_ms=1) is RunResult.TIMEOUT
        assert h.dp.counters()["polls"] == 0 and len(h.drain()) == 1
    finally:
        h.close()


def test_interrupt_is_read_to_rearm(host: FakeHost, stop_pipe: tuple[int, int]) -> None:
    host.interrupt_guest()
    assert host.dp.run(stop_pipe[0], timeout_ms=0) is RunResult.TIMEOUT
    assert host.dp.counters()["irq_wakeups"] == 1
    with pytest.raises(BlockingIOError):
        host.irq_guest.recv(4)                   # consumed by the pump


def test_ring_fault_in_run_raises(host: FakeHost, stop_pipe: tuple[int, int]) -> None:
    struct.pack_into("<I", host.mem, 4, 0x10000 + 8)    # outbound read_index beyond the data area
    host.tap_host.send(frame(64))
    with pytest.raises(RingCorruptError) as exc:
        host.dp.run(stop_pipe[0], timeout_ms=0)
    assert exc.value.field == "read_index"


def test_irq_fd_closed_by_peer_is_rescind(stop_pipe: tuple[int, int]) -> None:
    # a stream pair whose peer closes: read() returns 0, like a device that went away
    a, b = socket.socketpair()
    h = FakeHost()
    try:
        dp = DataPath(tx_ring=h.tx_ring, rx_ring=h.rx_ring, recv_buf=h.recv, recv_section_size=h.recv_section,
                      send_buf=h.send, send_section_size=h.send_section, send_section_count=8,
                      tap_fd=h.tap_guest.fileno(), irq_fd=a.fileno())
        b.close()
        with pytest.raises(RescindedError):
            dp.run(stop_pipe[0], timeout_ms=-1)
    finally:
        a.close()
        h.close()


def test_tap_error_is_platform_error(host: FakeHost) -> None:
    r, w = os.pipe()
    os.close(r)
    try:
        dp = DataPath(tx_ring=host.tx_ring, rx_ring=host.rx_ring, recv_buf=host.recv,
                      recv_section_size=host.recv_section, send_buf=host.send,
                      send_section_size=host.send_section, send_section_count=8, tap_fd=w,
                      irq_fd=host.irq_guest.fileno())
        with pytest.raises(PlatformError, match="tap fd"):
            dp.tx()                              # reading a pipe's write end: EBADF
    finally:
        os.close(w)


def test_tap_end_of_file_is_reported_and_the_tap_not_read_again(host: FakeHost) -> None:
    """A 0-byte read is the end of the tap (a tap never hands over an empty frame), not a runt:
    tx reports it as a tap-fd error, and every later call too, without reading the fd again."""
    host.tap_host.send(b"")                      # the stand-in's end of file: a 0-byte read
    with pytest.raises(PlatformError, match="tap fd reached end of file"):
        host.dp.tx()
    host.tap_host.send(frame(64))
    with pytest.raises(PlatformError, match="tap fd reached end of file"):
        host.dp.tx()
    assert host.tap_guest.recv(100) == frame(64)  # left where it was: the tap is not read any more
    c = host.dp.counters()
    assert c["tx_runt"] == 0 and c["tx_tap_err"] == 1 and c["tx_packets"] == 0
    host.send_frames([frame(70, 3)], trans_id=4)  # the receive side still works
    host.dp.rx()
    assert host.tap_frames() == [frame(70, 3)]


def test_run_ends_on_tap_end_of_file(host: FakeHost) -> None:
    """The pump thread over a tap whose writer closed (a pipe: read() returns 0 for ever): run
    returns with the error instead of spinning on "runts" past its timeout."""
    r, w = os.pipe()
    os.set_blocking(r, False)
    os.close(w)
    done = threading.Event()
    exits: list[tuple[RunResult, BaseException | None]] = []

    def on_exit(res: RunResult, err: BaseException | None) -> None:
        exits.append((res, err))
        done.set()

    try:
        dp = DataPath(tx_ring=host.tx_ring, rx_ring=host.rx_ring, recv_buf=host.recv,
                      recv_section_size=host.recv_section, send_buf=host.send,
                      send_section_size=host.send_section, send_section_count=8, tap_fd=r,
                      irq_fd=host.irq_guest.fileno())
        dp.start(lambda dp: None, on_exit=on_exit, timeout_ms=50)
        try:
            assert done.wait(WAIT), "run kept going after the tap ended"
        finally:
            dp.stop()
        (result, err), = exits
        assert result is RunResult.FAULT and isinstance(err, PlatformError)
        assert "end of file" in str(err)
        assert dp.counters()["tx_runt"] == 0
    finally:
        os.close(r)


def test_outbound_ring_too_small_for_one_message_is_refused() -> None:
    """A ring that cannot take one NVS message (descriptor + 40 bytes + trailer) plus the 8 bytes
    the ring core keeps free failed every later rx/tx with -EMSGSIZE: now it is refused at init.
    64 bytes is the smallest data area hvu_ring_attach takes and one message too small."""
    with pytest.raises(LocalProtocolError, match=rf"outbound ring's data area of 64 bytes .*minimum of {TX_RING_MIN}"):
        FakeHost(tx_data=64)


def test_smallest_outbound_ring_works() -> None:
    """TX_RING_MIN bytes hold one message at a time: completions and sends take turns."""
    h = FakeHost(tx_data=TX_RING_MIN)
    try:
        for i in range(3):
            h.send_frames([frame(64, i)], trans_id=10 + i)
            assert h.dp.rx() is Status.IDLE
            h.tap_host.send(frame(80, i))
            assert h.dp.tx() is Status.BLOCKED      # the receive completion fills the ring
            assert [p.trans_id for p in h.drain()] == [10 + i]
            assert h.dp.tx() is Status.BLOCKED      # the send fills it again
            (send,) = h.drain()
            assert send.trans_id & TX_TAG
            h.complete_tx(send.trans_id)
        assert h.dp.rx() is Status.IDLE
        assert h.tap_frames() == [frame(64, i) for i in range(3)]
        c = h.dp.counters()
        assert c["tx_packets"] == 3 and c["tx_completions"] == 3 and c["rx_comp_sent"] == 3
    finally:
        h.close()


@pytest.mark.parametrize("kwargs,match", [
    ({"send_section_count": 0}, "send_section_count"),
    ({"send_section_size": 4096}, "exceed"),
    ({"recv_section_size": 0}, "recv_section_size"),
    ({"monitor_id": 3}, "monitor_page"),
    ({"send_section_size": 40}, "refused"),
    ({"mtu": 10}, "refused"),
    ({"budget": 0}, "budget"),
])
def test_bad_configuration_is_local_error(host: FakeHost, kwargs: dict[str, int], match: str) -> None:
    args: dict[str, object] = dict(tx_ring=host.tx_ring, rx_ring=host.rx_ring, recv_buf=host.recv,
                                   recv_section_size=host.recv_section, send_buf=host.send,
                                   send_section_size=host.send_section, send_section_count=8,
                                   tap_fd=host.tap_guest.fileno(), irq_fd=host.irq_guest.fileno())
    args.update(kwargs)
    with pytest.raises(LocalProtocolError, match=match):
        DataPath(**args)  # type: ignore[arg-type]


def test_swapped_rings_are_refused(host: FakeHost) -> None:
    with pytest.raises(LocalProtocolError):
        DataPath(tx_ring=host.rx_ring, rx_ring=host.tx_ring, recv_buf=host.recv, recv_section_size=2048,
                 send_buf=host.send, send_section_size=2048, send_section_count=8,
                 tap_fd=host.tap_guest.fileno(), irq_fd=host.irq_guest.fileno())


def test_thread_moves_frames_hands_up_control_and_stops(host: FakeHost) -> None:
    controls: list[Packet] = []
    exits: list[tuple[RunResult, BaseException | None]] = []
    got_control = threading.Event()
    sent_by_call_soon = threading.Event()

    def on_control(dp: DataPath) -> None:
        controls.append(dp.read_control())
        got_control.set()

    host.dp.start(on_control, on_exit=lambda r, e: exits.append((r, e)), timeout_ms=50)
    try:
        host.writer.write(PKT_INBAND, struct.pack("<I", 134) + bytes(76), trans_id=0)
        host.send_frames([frame(64, 1)], trans_id=5)
        host.interrupt_guest()
        assert got_control.wait(WAIT)
        host.tap_host.setblocking(True)
        host.tap_host.settimeout(WAIT)
        assert host.tap_host.recv(2000) == frame(64, 1)
        host.tap_host.send(frame(100, 2))         # the pump polls the tap: no interrupt needed

        def send_keepalive() -> None:
            host.dp.send_control(struct.pack("<I", 1) + bytes(36), trans_id=77)
            sent_by_call_soon.set()

        host.dp.call_soon(send_keepalive)
        assert sent_by_call_soon.wait(WAIT)
    finally:
        host.dp.stop()
    assert exits == [(RunResult.STOPPED, None)]
    assert [p.trans_id for p in controls] == [0] and controls[0].type == PKT_INBAND
    ids = sorted(p.trans_id for p in host.drain())
    assert 5 in ids and 77 in ids and len(ids) == 3     # rx completion, data send, control send


def test_thread_reports_fault(host: FakeHost) -> None:
    done = threading.Event()
    exits: list[tuple[RunResult, BaseException | None]] = []

    def on_exit(r: RunResult, e: BaseException | None) -> None:
        exits.append((r, e))
        done.set()

    host.dp.start(lambda dp: None, on_exit=on_exit, timeout_ms=20)
    try:
        struct.pack_into("<I", host.mem, host.tx_size, 3)     # inbound write_index corrupt
        host.interrupt_guest()
        assert done.wait(WAIT)
    finally:
        host.dp.stop()
    (result, err), = exits
    assert result is RunResult.FAULT and isinstance(err, RingCorruptError) and err.field == "write_index"
