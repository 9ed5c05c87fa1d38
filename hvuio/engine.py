"""The engine: a NIC that is up, run as a Linux network interface — a tap plus the C data path.

What lives here: `Engine`, around a `Nic` that finished bring-up (hvuio/nic.py): a tap
(hvuio/netdev/tap.py) with the NIC's MAC and MTU, its carrier following the RNDIS link status (and
network changes) as hvuio/linkwatch.py decides, its neighbours told of its addresses when the host
repeats a media connect (hvuio/netdev/peers.py, in the pump's thread), and its TUNSETOFFLOAD bits
what the host granted (hvuio/offloads.py); the C pump of
hvuio.native.datapath in its thread, with the NIC's data sections, offloads and TX aggregation
limits. Control packets the pump leaves (CONTROL_PENDING) are read in the pump's thread and
handed to the Nic (`take_control_packet`); the Nic's ticks are queued into that thread too
(hvuio/native/datapath.py's threading rule). The data path gets the NIC's GPA TX area
(`Nic.gpa_pool`: frames larger than a send section go GPA-direct) when the NIC has one, and the
NIC's trace (`Nic.trace`, hvuio/trace/writer.py), which records the frames both ways in C. Every
tick the pump's health is looked at (hvuio/health.py: host stalls, drops per reason) and what it
reports is logged; `live_counters()` adds what is in flight, drops per reason, the stall
counters and the trace's counters to the pump's counters. The run loop waits on the caller's stop fd
(netdev/signals.py's StopPipe) and on the pump's exit. Teardown stops the pump first, so the Nic's
halt and revokes run on the caller's thread with the rings to themselves; the tap is removed. A
RescindedError of the pump (its irq fd failed with EIO/EOF) is raised as the platform explains it
(`Platform.explain_loss`: a rescind, or the emulator gone).

What must not live here: bring-up and teardown of the protocols, the NIC's negotiated values and
their text (hvuio/nic.py), the NDIS -> data path -> tap offload mapping (hvuio/offloads.py), ring
code (channel.py, hvuio/native/), tap plumbing (hvuio/netdev/), printing (hvuio/cli/).
"""

from __future__ import annotations

import logging
import os
import select
import time
from collections.abc import Callable

from hvuio.errors import HvuioError, LocalProtocolError, RescindedError
from hvuio.health import HealthWatch, Sample
from hvuio.native.datapath import MAX_SECTIONS, DataPath, RunResult
from hvuio.netdev.peers import PeerNotifier
from hvuio.netdev.tap import Tap, TunOffload
from hvuio.nic import TICK_PERIOD, Nic
from hvuio.offloads import datapath_offloads, tun_offload

log = logging.getLogger(__name__)


class Engine:
    """A ready Nic plus a tap and the C data path pump (see module docstring)."""

    def __init__(self, nic: Nic, *, ifname: str | None = None, netns: str | None = None,
                 vnet_hdr: bool = True, busy_poll_us: int = 0, tx_aggregation: bool = True) -> None:
        self.nic = nic
        #: batch small frames into one send within the host's RNDIS limits (NicInfo.tx_aggregation)
        self.tx_aggregation = tx_aggregation
        self.ifname = ifname
        self.netns = netns
        self.vnet_hdr = vnet_hdr
        self.busy_poll_us = busy_poll_us
        self.tap_name: str | None = None
        self.counters: dict[str, int] = {}
        self._exit_r, self._exit_w = -1, -1
        self._dp: DataPath | None = None
        self._peers: PeerNotifier | None = None
        self.health = HealthWatch()

    def live_counters(self) -> dict[str, int]:
        """The pump's counters now (read while it runs: each value is one aligned u64 load), what it
        has in flight, its drops per reason (`drop_<reason>`), the stall counters (health.py) and,
        when the NIC is traced, the trace's counters."""
        dp = self._dp
        if dp is None:
            return dict(self.counters)
        live = dict(dp.counters())
        live.update(sections_in_use=dp.sections_in_use, gpa_slots_in_use=dp.gpa_slots_in_use,
                    pending_completions=dp.pending_completions)
        live.update({f"drop_{reason}": n for reason, n in dp.drop_counts().items()})
        live.update(self.health.counters())
        peers = self._peers
        if peers is not None:
            live.update(peer_frames_sent=peers.sent, peer_frames_failed=peers.failed)
        if self.nic.trace is not None:
            live.update(self.nic.trace.counters())
        return live

    def _watch(self, dp: DataPath) -> None:
        """One health look at the running pump (engine tick, caller's thread): log what changed."""
        c = dp.counters()
        events = self.health.observe(Sample(
            now=time.monotonic(), progress=c["tx_completions"] + c["tx_bad_comp"] + c["rx_comp_sent"] + c["rx_xfer"],
            sends_in_flight=dp.sections_in_use + dp.gpa_slots_in_use, completions_waiting=dp.pending_completions,
            drops=dp.drop_counts(), last_drop=dp.last_drop()))
        for event in events:
            log.warning("%s: %s", self.tap_name or "data path", event.text())

    def run(self, stop_fd: int, on_ready: Callable[[Engine], None] | None = None,
            on_tick: Callable[[], None] | None = None) -> dict[str, int]:
        """Open the tap, pump until `stop_fd` is readable or the pump fails; the pump's counters.

        The Nic stays open (the caller closes it); the tap is removed on return.
        """
        nic = self.nic
        info, chan = nic.negotiated, nic.primary_channel
        if not nic.ready or info.mac is None or info.mtu is None:
            raise LocalProtocolError("Engine.run needs a Nic that finished bring-up")
        handle = nic.uio_handle
        assert handle.recv_buffer is not None and handle.send_buffer is not None
        assert info.recv_section_size is not None and info.send_section_size is not None
        offloads = datapath_offloads(None if info.offloads is None else info.offloads.accepted)
        tap = Tap.open(self.ifname, info.mac, info.mtu, netns=self.netns, vnet_hdr=self.vnet_hdr,
                       offload=tun_offload(offloads) if self.vnet_hdr else TunOffload(0))
        self.tap_name = tap.name
        dp: DataPath | None = None
        peers: PeerNotifier | None = None
        self._exit_r, self._exit_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            tap.set_carrier(bool(info.link_up))
            tap.up()
            nic.on_link = tap.set_carrier
            peers = self._peers = PeerNotifier(tap, info.mac)
            nic.on_notify_peers = peers.notify
            mid = handle.device.monitor_id
            dp = DataPath(tx_ring=chan.tx, rx_ring=chan.rx, recv_buf=handle.recv_buffer,
                          recv_section_size=info.recv_section_size, send_buf=handle.send_buffer,
                          send_section_size=info.send_section_size,
                          send_section_count=min(nic.data_sections, MAX_SECTIONS),
                          tap_fd=tap.fileno(), irq_fd=handle.interrupt.fileno(),
                          monitor_page=handle.monitor_page if mid is not None else None, monitor_id=mid,
                          mtu=info.mtu, vnet_hdr=tap.vnet_hdr, busy_poll_us=self.busy_poll_us,
                          offloads=offloads, tap_offload=bool(tap.offload),
                          tx_aggregation=info.tx_aggregation if self.tx_aggregation else None,
                          gpa_pool=nic.gpa_pool)
            self._dp = dp
            if nic.trace is not None:
                dp.set_trace(nic.trace.sink)  # the frames both ways (C), beside the control records
            chan.data_sink = dp.deliver_data  # data messages of mixed packets (the pump's thread)
            dp.start(self._on_control, on_exit=self._on_exit)
            if on_ready is not None:
                on_ready(self)
            while True:
                ready, _, _ = select.select([stop_fd, self._exit_r], [], [], TICK_PERIOD)
                if ready:
                    break
                dp.call_soon(nic.tick)
                self._watch(dp)
                if on_tick is not None:
                    on_tick()
            dp.stop()
            self.counters = self.live_counters()
            if dp.error is not None:
                raise self._pump_error(dp)
            return self.counters
        finally:
            nic.on_link = None
            nic.on_notify_peers = None
            self._peers = None
            if peers is not None:
                peers.close()
            chan.data_sink = None
            if dp is not None:
                try:
                    dp.stop()
                except LocalProtocolError as err:
                    log.warning("teardown: %s", err.message)
                self.counters = self.counters or dp.counters()
                self._dp = dp = None  # drop its references to the rings and buffers before the Nic closes
            for fd in (self._exit_r, self._exit_w):
                os.close(fd)
            self._exit_r = self._exit_w = -1
            tap.close()

    def _pump_error(self, dp: DataPath) -> BaseException:
        """What the pump's error means, marked on the Nic: a RescindedError as the platform
        explains it (a rescind, or the emulator gone). Taken off the DataPath, without the pump
        thread's traceback (logged with --debug as the pump ended): those frames hold the
        DataPath, and the Nic keeps the error (`broken`), so the DataPath and its cffi buffers
        would end in a reference cycle, which the garbage collector clears in an order that
        crashes the interpreter (a memoryview cleared while exported)."""
        error, dp.error = dp.error, None
        assert error is not None
        error.__traceback__ = None
        if isinstance(error, RescindedError):
            handle = self.nic.uio_handle
            error = handle.platform.explain_loss(handle.uio.name, error)
        if isinstance(error, HvuioError):
            self.nic.mark_broken(error)
        return error

    def _on_control(self, dp: DataPath) -> None:
        """In the pump thread: the packet the pump left goes to the Nic."""
        self.nic.take_control_packet(dp.read_control())

    def _on_exit(self, result: RunResult, error: BaseException | None) -> None:
        if error is not None:
            log.debug("data path ended with %r", error, exc_info=error)
        try:
            os.write(self._exit_w, b"x")
        except OSError:
            pass
