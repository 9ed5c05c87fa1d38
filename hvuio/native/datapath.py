"""Typed wrapper of the C data path (_native/datapath.c, rx.c, tx.c, tapio.c): one `DataPath` per
VMBus channel moves frames between a tap fd and the channel's rings without the GIL (cffi API-mode
calls release it), its tap I/O batched through an io_uring where the kernel allows one.

What lives here: the pump: building the C configuration from `Ring` objects and buffers, return
code -> exception conversion, counters and drops, and a background-thread pump (`start`/`stop`)
that hands packets the C code does not handle (NVSP/RNDIS control) to a Python callback,
`set_trace` (the frames both ways into a hvuio.native.trace sink), the tap I/O mode a pump runs
(the io memory the C side's io_uring reads into, `close`). The values it is built from and reports
in (the C data path's sizes and limits, counter names, Offloads, TxAggregation, GpaPool, the tap
I/O modes and probe, Status, RunResult) live in ``hvuio.native.datapath_config``; the names
callers import from here are re-exported. What must not: loading the compiled module
(``hvuio.native``), ring logic (``hvuio.native.ring``), protocol logic (``hvuio.proto``), opening
devices or taps (the engine passes fds and maps in).

How the engine drives it:
  * Negotiate NVSP/RNDIS first (receive/send buffers connected, sections known), then build a
    DataPath from the channel's two `Ring` objects, map 3 (receive buffer), map 4 (send buffer),
    the tap fd (non-blocking), the uio fd, and map 2 + monitor_id for a monitored channel.
  * Threading rule: while the pump runs, it is the only user of both rings. Python code that must
    read or write the rings (control requests, keep-alives) runs in the pump's thread: inside the
    ``on_control`` callback, or queued with `call_soon`. Outside a running pump, call `rx`, `tx`,
    `run`, `read_control`, `deliver_data` and `send_control` from one thread.
  * ``run`` / the thread return CONTROL_PENDING when the packet at the head of the inbound ring is
    not data-path traffic; it is still unread. `read_control` reads exactly that one packet
    (through the normal Ring API) and signals the host if flow control asks for it; feed it to the
    protocol machines and resume. A transfer-page packet whose ranges mix RNDIS control and data
    messages is one of those: its reader hands each data message to `deliver_data` (the frames
    reach the tap, Linux netvsc_receive / DPDK hn_nvs_handle_rxbuf dispatch per range) and
    completes the packet once itself.
  * trans_id convention: the data path tags its sends with bit 63 (``TX_TAG | section``, and
    ``TX_TAG | GPA_TAG | slot`` for GPA-direct sends); completions carrying the tag are consumed
    in C. Control requests must use ids below 2**63 (`send_control` enforces it); their
    completions come back as CONTROL_PENDING.
  * GPA-direct (VMBUS.md §3.7): with a `gpa_pool` (pinned memory whose guest-physical page numbers
    are known: `GpaPool`), RNDIS packets too large for a send section (frames of a jumbo MTU, LSO
    packets up to the host's LSO maximum) are built in a slot of the pool and sent as type-9
    packets; small frames keep the send buffer. The pool is cut into `GPA_SLOT_SIZE` slots.
"""

from __future__ import annotations

import errno
import mmap
import os
import threading
import weakref
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from hvuio.errors import HostProtocolError, LocalProtocolError, PlatformError, RescindedError
from hvuio.native import MAX_LEN8, MONITOR_MAX_ID, Buffer
from hvuio.native import ffi as _ffi
from hvuio.native import lib as _lib
from hvuio.native.datapath_config import (
    COUNTER_NAMES, DEFAULT_BUDGET, ETH_HLEN, GPA_SLOT_SIZE, GPA_TAG, GSO_MAX, L2_MAX, MAX_SECTIONS, MTU_MAX, MTU_MIN,
    NVS_MESSAGE_SIZE, OFFLOAD_HDRS_MIN, PPI_SIZE, REASON_END, RNDIS_PACKET_HEADER, RSC_MAX_BYTES, TAP_IO_ENV,
    TAP_IO_MODES, TAP_IO_RX_SLOTS, TAP_IO_TX_SLOTS, TX_RING_MIN, TX_TAG, VNET_HDR_SIZE, GpaPool, Offloads, RunResult,
    Status, TxAggregation, errno_text, gpa_buffers, tap_io_mode, tap_io_slots)
from hvuio.native.ring import FLAG_COMPLETION_REQUESTED, Direction, Packet, PacketType, Ring

if TYPE_CHECKING:
    from hvuio._native import CData, DpPtr
    from hvuio.native.trace import TraceSink

_FD_NAMES = {_lib.HVU_DP_FD_TAP: "tap fd", _lib.HVU_DP_FD_IRQ: "uio/irq fd", _lib.HVU_DP_FD_WAKE: "wake eventfd",
             _lib.HVU_DP_FD_STOP: "stop fd", _lib.HVU_DP_FD_NONE: "poll()"}


class DataPath:
    """The C pump of one channel over caller-owned rings and buffers (kept alive by this object).

    Parameters: `recv_section_size` is the slot size of the host's receive-buffer reply (a range
    may not exceed it); `send_section_size`/`send_section_count` come from the send-buffer reply;
    `tap_fd` must be non-blocking; `irq_fd` is the uio fd (read/written 4 bytes at a time);
    `monitor_page` (map 2) with `monitor_id` selects monitor-bit signalling, otherwise the pump
    writes a 4-byte 1 to `irq_fd`; `vnet_hdr` when the tap has IFF_VNET_HDR (12-byte header, no
    offloads enabled); `manage_interrupt_mask=False` for channels whose inbound mask must never be
    cleared (subchannels on kernels without linux d062463edf17, VMBUS.md §1.10 item 39) — then use
    `busy_poll` or a short `timeout_ms`; `tx_hash_value` adds a hash-value per-packet info with
    that value to every send (Linux/DPDK do so on multi-queue devices so the completion comes back
    on this channel). `busy_poll_us` > 0: after traffic, keep polling rings and tap that long
    before sleeping (lower latency for a core's worth of spinning while packets flow; 0 sleeps at
    once, interrupt-driven). `offloads` (Offloads) says what the host accepted; `tap_offload` that
    the tap has TUNSETOFFLOAD bits set (hvuio.offloads.tun_offload), so its vnet headers may carry
    NEEDS_CSUM and TCP GSO frames (needs `vnet_hdr`). `tx_aggregation` (TxAggregation) lets
    several frames of one batch share a send section and its NVS message, within the host's
    limits. `gpa_pool` (GpaPool, or None = send buffer only): RNDIS packets whose message does not
    fit a send section go GPA-direct from `GPA_SLOT_SIZE` slots of it (at most GPA_MAX_SLOTS), and
    GSO frames are cut into LSO packets up to the host's `offloads.lso_max_size` instead of one
    section; the pool must stay mapped while this object lives (it keeps a reference). The
    outbound ring's feature bit 0 should be set (Ring.set_feature_bits(1)) so the host
    honours the pending_send_sz the pump sets when the ring is full.

    Multi-queue (one DataPath per channel, each in its own thread, sharing the receive and send
    buffers): `send_section_first` gives this pump the sections [first, first + count) of the
    send buffer (the NVS message names the buffer-wide index); uio has one interrupt counter for
    all channels, so one pump (the primary's) polls and reads `irq_fd` and writes 1 to every
    eventfd of `fanout_fds` after each wake-up, while every other pump polls its own eventfd
    (`wake_fd`) and only writes `irq_fd` to signal; `idle_poll_ms` caps its sleeps (a channel
    whose inbound mask stays set raises no interrupt of its own).

    `tap_io` (TAP_IO_MODES; None: $HVUIO_TAP_IO, else "uring"): "uring" reads the tap in bursts
    of non-blocking reads and writes a receive batch's frames, one io_uring_enter each
    (_native/tapio.c); where the kernel refuses io_uring the pump runs "readv" (one readv/writev
    per frame; `tap_io`, `tap_io_error` say so). `close()` closes the ring (done at collection
    otherwise).
    """

    def __init__(self, *, tx_ring: Ring, rx_ring: Ring, recv_buf: Buffer, recv_section_size: int,
                 send_buf: Buffer, send_section_size: int, send_section_count: int, tap_fd: int,
                 irq_fd: int, monitor_page: Buffer | None = None, monitor_id: int | None = None,
                 mtu: int = 1500, vnet_hdr: bool = False, busy_poll: bool = False,
                 manage_interrupt_mask: bool = True, tx_hash_value: int | None = None,
                 budget: int = DEFAULT_BUDGET, busy_poll_us: int = 0,
                 offloads: Offloads | None = None, tap_offload: bool = False,
                 tx_aggregation: TxAggregation | None = None, gpa_pool: GpaPool | None = None,
                 send_section_first: int = 0, wake_fd: int | None = None, fanout_fds: tuple[int, ...] = (),
                 idle_poll_ms: int = 0, tap_io: str | None = None) -> None:
        if tx_ring.direction is not Direction.TX or rx_ring.direction is not Direction.RX:
            raise LocalProtocolError("DataPath needs tx_ring attached as TX and rx_ring as RX")
        self._recv = _ffi.from_buffer(recv_buf)
        self._send = _ffi.from_buffer(send_buf, require_writable=True)
        if not 0 < recv_section_size <= len(self._recv):
            raise LocalProtocolError(f"recv_section_size {recv_section_size} must be within "
                                     f"[1, receive buffer size {len(self._recv)}]")
        if not 0 < send_section_count <= MAX_SECTIONS:
            raise LocalProtocolError(f"send_section_count {send_section_count} must be within [1, {MAX_SECTIONS}]")
        if not 0 <= send_section_first or send_section_size * (send_section_first + send_section_count) > len(self._send):
            raise LocalProtocolError(f"sections [{send_section_first}, {send_section_first + send_section_count}) "
                                     f"of {send_section_size} bytes exceed the send buffer of {len(self._send)} bytes")
        if len(fanout_fds) > int(_lib.HVU_DP_FANOUT_MAX) or any(fd < 0 for fd in fanout_fds):
            raise LocalProtocolError(f"fanout_fds {fanout_fds!r}: at most {int(_lib.HVU_DP_FANOUT_MAX)} open fds")
        if wake_fd is not None and (wake_fd < 0 or fanout_fds):
            raise LocalProtocolError("wake_fd must be an open eventfd, and a pump woken by one fans out to none")
        if not 0 <= idle_poll_ms <= 60_000:
            raise LocalProtocolError(f"idle_poll_ms must be within [0, 60000], not {idle_poll_ms}")
        if (monitor_page is None) != (monitor_id is None):
            raise LocalProtocolError("monitor_page and monitor_id go together (both or neither)")
        if monitor_id is not None and not 0 <= monitor_id < MONITOR_MAX_ID:
            raise LocalProtocolError(f"monitor_id {monitor_id} must be within [0, {MONITOR_MAX_ID - 1}] (VMBUS.md §3.12)")
        if budget < 1:
            raise LocalProtocolError(f"budget must be >= 1, not {budget}")
        if not 0 <= busy_poll_us <= 1_000_000:
            raise LocalProtocolError(f"busy_poll_us must be within [0, 1000000], not {busy_poll_us}")
        offloads = offloads or Offloads()
        if tap_offload and not vnet_hdr:
            raise LocalProtocolError("tap_offload needs vnet_hdr (the offloads travel in the vnet header)")
        if not 0 <= offloads.lso_max_size <= 0xFFFFFFFF:
            raise LocalProtocolError(f"lso_max_size {offloads.lso_max_size} is not a u32")
        self.offloads = offloads
        self.tx_ring, self.rx_ring = tx_ring, rx_ring
        self.budget = budget
        self.mtu = mtu
        self._mon: CData | None = (None if monitor_page is None
                                   else _ffi.from_buffer(monitor_page, require_writable=True))
        pkt_size = min(rx_ring.data_size, MAX_LEN8 * 8)
        self._pkt = _ffi.new("uint8_t[]", pkt_size)
        self._range = _ffi.new("uint8_t[]", recv_section_size)
        flags = ((_lib.HVU_DP_F_VNET_HDR if vnet_hdr else 0) | (_lib.HVU_DP_F_BUSY_POLL if busy_poll else 0)
                 | (_lib.HVU_DP_F_MANAGE_MASK if manage_interrupt_mask else 0)
                 | (_lib.HVU_DP_F_TX_HASH if tx_hash_value is not None else 0)
                 | (_lib.HVU_DP_F_WAKE_FD if wake_fd is not None else 0))
        cfg = _ffi.new("struct hvu_dp_config *")
        cfg.tx_ring, cfg.rx_ring = tx_ring.cptr, rx_ring.cptr
        cfg.recv_buf, cfg.recv_buf_size, cfg.recv_section_size = self._recv, len(self._recv), recv_section_size
        cfg.send_buf, cfg.send_buf_size = self._send, len(self._send)
        cfg.send_section_size, cfg.send_section_count = send_section_size, send_section_count
        cfg.send_section_first = send_section_first
        cfg.wake_fd = -1 if wake_fd is None else wake_fd
        self._fanout = _ffi.new("int[]", list(fanout_fds)) if fanout_fds else _ffi.NULL
        cfg.fanout_fds, cfg.fanout_count = self._fanout, len(fanout_fds)
        cfg.idle_poll_ms = idle_poll_ms
        cfg.pkt_buf, cfg.pkt_buf_size = self._pkt, pkt_size
        cfg.range_buf, cfg.range_buf_size = self._range, recv_section_size
        cfg.tap_fd, cfg.irq_fd = tap_fd, irq_fd
        cfg.monitor_page = _ffi.NULL if self._mon is None else self._mon
        cfg.monitor_id = 0 if monitor_id is None else monitor_id
        cfg.mtu, cfg.flags = mtu, flags
        cfg.tx_hash_value = 0 if tx_hash_value is None else tx_hash_value
        cfg.busy_poll_us = busy_poll_us
        # offloads: the stage holds one tap frame (up to a 64 KiB GSO frame), rsc one RSC frame
        # and, for a tap without vnet header, the one segment of it being cut (mtu + 18)
        self._stage: CData = _ffi.new("uint8_t[]", VNET_HDR_SIZE + GSO_MAX) if tap_offload else _ffi.NULL
        rsc_size = RSC_MAX_BYTES + (0 if vnet_hdr else min(max(mtu, 0), MTU_MAX) + L2_MAX)
        self._rsc = _ffi.new("uint8_t[]", rsc_size)
        cfg.tx_stage, cfg.tx_stage_size = self._stage, VNET_HDR_SIZE + GSO_MAX if tap_offload else 0
        cfg.rsc_buf, cfg.rsc_buf_size = self._rsc, rsc_size
        cfg.lso_max_size = offloads.lso_max_size
        agg = tx_aggregation or TxAggregation()
        self.tx_aggregation = agg
        cfg.tx_agg_packets, cfg.tx_agg_align, cfg.tx_agg_bytes = agg.max_packets, agg.alignment, agg.max_bytes
        cfg.flags = flags | offloads.dp_flags() | (_lib.HVU_DP_F_TAP_OFFLOAD if tap_offload else 0)
        self.gpa_pool = gpa_pool
        self._gpa: CData = _ffi.NULL
        self._gpa_pfns: CData = _ffi.NULL
        if gpa_pool is not None:
            self._gpa, self._gpa_pfns = gpa_buffers(gpa_pool)
            cfg.gpa_buf, cfg.gpa_buf_size = self._gpa, len(self._gpa)
            cfg.gpa_pfns, cfg.gpa_slot_size = self._gpa_pfns, GPA_SLOT_SIZE
        mode = tap_io_mode(tap_io)
        self._io_map: mmap.mmap | None = None
        if mode == "uring":
            tx_slot, rx_slot = tap_io_slots(vnet_hdr=vnet_hdr, tap_offload=tap_offload, mtu=mtu)
            self._io_map = mmap.mmap(-1, TAP_IO_TX_SLOTS * tx_slot + TAP_IO_RX_SLOTS * rx_slot)
            self._io = _ffi.from_buffer(self._io_map)
            cfg.io_buf, cfg.io_buf_size = self._io, len(self._io_map)
            cfg.io_tx_slots, cfg.io_tx_slot_size = TAP_IO_TX_SLOTS, tx_slot
            cfg.io_rx_slots, cfg.io_rx_slot_size = TAP_IO_RX_SLOTS, rx_slot
            cfg.flags |= _lib.HVU_DP_F_TAP_URING
        self._mem = _ffi.new("uint64_t[]", (_lib.hvu_dp_sizeof() + 7) // 8)
        self._dp: DpPtr = _ffi.cast("struct hvu_dp *", self._mem)
        rc = _lib.hvu_dp_init(self._dp, cfg)
        if rc == -errno.EMSGSIZE and gpa_pool is not None and tx_ring.data_size >= TX_RING_MIN:
            raise LocalProtocolError(
                f"data path configuration refused: the outbound ring's data area of {tx_ring.data_size} bytes "
                f"cannot hold one GPA-direct packet naming a {GPA_SLOT_SIZE}-byte slot",
                hint="Give the channel a larger outbound ring, or run without GPA-direct (--no-gpa).")
        if rc == -errno.EMSGSIZE:
            raise LocalProtocolError(
                f"data path configuration refused: the outbound ring's data area of {tx_ring.data_size} bytes "
                f"is below the minimum of {TX_RING_MIN} (one {NVS_MESSAGE_SIZE}-byte NVS message with its "
                f"descriptor and trailer, plus the 8 bytes a ring always keeps free)",
                hint=f"Give the channel an outbound ring with at least {TX_RING_MIN} bytes after its header.")
        if rc < 0:
            raise LocalProtocolError(
                f"data path configuration refused: sections {send_section_count} x {send_section_size} bytes "
                f"(each must hold the {RNDIS_PACKET_HEADER}-byte RNDIS header + {ETH_HLEN}), mtu {mtu} "
                f"({MTU_MIN}..{MTU_MAX}), fds tap {tap_fd} irq {irq_fd}, receive section {recv_section_size}"
                + (f"; with tap offloads a section must also hold two {PPI_SIZE}-byte pktinfo and "
                   f"{OFFLOAD_HDRS_MIN} bytes of headers" if tap_offload else "")
                + (f"; GPA pool of {len(self._gpa)} bytes (at least one {GPA_SLOT_SIZE}-byte slot)"
                   if gpa_pool is not None else ""))
        # the ring's reads write into the io memory: it closes first (close(), or at collection)
        self._closer = weakref.finalize(self, _close_dp, self._mem, self._io_map)
        self._thread: threading.Thread | None = None
        self._trace: TraceSink | None = None
        self._wake_r = self._wake_w = -1
        self._stopping = False
        self._calls: deque[Callable[[], None]] = deque()
        self.error: BaseException | None = None

    # ---- errors -------------------------------------------------------------------------------------

    def _check(self, rc: int, what: str) -> int:
        if rc >= 0:
            return rc
        fault = _ffi.new("struct hvu_dp_fault *")
        _lib.hvu_dp_fault(self._dp, fault)
        if rc == -errno.EIO and fault.ring:
            ring = self.rx_ring if fault.ring == 1 else self.tx_ring
            raise ring.corrupt_error()  # RingCorruptError naming field, value and rule
        if rc == -errno.EINVAL:
            raise LocalProtocolError(f"data path {what}: invalid argument")
        if rc == -errno.EPIPE and fault.fd == _lib.HVU_DP_FD_TAP:
            raise PlatformError(f"data path {what}: the tap fd reached end of file (a read returned 0 bytes); "
                                f"it is not read any more",
                                hint="The tap's other end went away; open a new tap and restart the data path.")
        where = _FD_NAMES.get(fault.fd, "an fd")
        msg = f"data path {what}: {where} failed with {errno.errorcode.get(-rc, str(-rc))} ({os.strerror(-rc)})"
        if fault.fd == _lib.HVU_DP_FD_IRQ and rc in (-errno.EIO, -errno.ENODEV):
            raise RescindedError(msg)
        raise PlatformError(msg, hint="Check that the tap and uio fds are open, non-blocking and still valid.")

    # ---- the pump -----------------------------------------------------------------------------------

    def rx(self, budget: int | None = None) -> Status:
        """One read batch: frames to the tap, completions to the host, TX sections freed."""
        return Status(self._check(_lib.hvu_dp_rx(self._dp, budget or self.budget), "rx"))

    def deliver_data(self, msg: bytes) -> bool:
        """One RNDIS data message the control path met in a transfer-page packet it read (a
        packet that also held control messages): checked and written to the tap like a range the
        pump reads, RSC fragments joining the pump's open sequence. True when the frame went out
        (or the fragment was taken), False when it was dropped (counted). The caller completes the
        packet. Threading rule as for the rings: on the pump's thread, between pump calls."""
        buf = _ffi.from_buffer(msg)
        return self._check(_lib.hvu_dp_rx_data(self._dp, buf, len(msg)), "rx_data") == 0

    def tx(self, budget: int | None = None) -> Status:
        """Up to `budget` frames from the tap to the host."""
        return Status(self._check(_lib.hvu_dp_tx(self._dp, budget or self.budget), "tx"))

    def run(self, stop_fd: int, timeout_ms: int = -1) -> RunResult:
        """Pumps until `stop_fd` is readable (it is not drained), a control packet is pending, or
        `timeout_ms` passes (< 0: never). Raises RingCorruptError / RescindedError / PlatformError."""
        rc = self._check(_lib.hvu_dp_run(self._dp, stop_fd, timeout_ms, self.budget), "run")
        if rc == _lib.HVU_DP_STOPPED:
            return RunResult.STOPPED
        if rc == _lib.HVU_DP_CONTROL:
            return RunResult.CONTROL_PENDING
        return RunResult.TIMEOUT

    def signal(self) -> None:
        """Signals the host once (monitor bit or irq-fd write)."""
        self._check(_lib.hvu_dp_signal(self._dp), "signal")

    def read_control(self) -> Packet:
        """Reads exactly the one packet the pump left for Python and signals if flow control asks."""
        batch = self.rx_ring.read_batch(1)
        if not batch.packets:
            # The pump saw it a moment ago: only a host that moved write_index back can take it away.
            raise HostProtocolError("inbound ring: the packet left for the control path is gone "
                                    "(the host moved write_index back)")
        if batch.need_signal:
            self.signal()
        return batch.packets[0]

    def send_control(self, payload: Buffer, *, trans_id: int, want_completion: bool = True,
                     type: int = PacketType.INBAND) -> None:
        """Writes one control packet to the outbound ring and signals if needed (3.11 a)."""
        if trans_id & TX_TAG or not 0 <= trans_id < 1 << 64:
            raise LocalProtocolError(f"control trans_id {trans_id:#x} must be below 2**63 (bit 63 is the data path's)")
        flags = FLAG_COMPLETION_REQUESTED if want_completion else 0
        if self.tx_ring.send(type, payload, flags=flags, trans_id=trans_id):
            self.signal()

    # ---- state ------------------------------------------------------------------------------------

    def set_trace(self, sink: TraceSink | None) -> None:
        """Record every frame read from or written to the tap in `sink` (None: stop). Call it
        before `start()` or on the pump's thread (the threading rule above)."""
        self._trace = sink  # keeps the C struct alive while the pump may use it
        _lib.hvu_dp_set_trace(self._dp, _ffi.NULL if sink is None else sink.cptr)

    def counters(self) -> dict[str, int]:
        return {name: int(_lib.hvu_dp_counter(self._dp, i)) for i, name in enumerate(COUNTER_NAMES)}

    def last_drop(self) -> tuple[str, int] | None:
        """(reason name, value) of the most recent counted drop, or None."""
        d = _ffi.new("struct hvu_dp_drop *")
        if _lib.hvu_dp_last_drop(self._dp, d) == 0:
            return None
        return _ffi.string(_lib.hvu_dp_reason_name(d.reason)).decode(), int(d.value)

    def drop_counts(self) -> dict[str, int]:
        """Drops so far per reason name (reasons never seen are left out): which check rises."""
        counts = ((r, int(_lib.hvu_dp_drop_count(self._dp, r))) for r in range(1, REASON_END))
        return {_ffi.string(_lib.hvu_dp_reason_name(r)).decode(): n for r, n in counts if n}

    @property
    def tap_io(self) -> str:
        """The tap I/O this pump runs: "uring" (batched) or "readv" (asked for, or the fallback)."""
        return "uring" if _lib.hvu_dp_tap_io(self._dp) else "readv"

    @property
    def tap_io_error(self) -> str | None:
        """Why "uring" fell back to "readv": io_uring_setup's error ("EPERM (...)"), or None."""
        e = int(_lib.hvu_dp_tap_io_error(self._dp))
        return None if e == 0 else errno_text(e)

    def close(self) -> None:
        """Stops the thread and closes the io_uring; the data path is unusable after (counters
        stay readable). Safe twice."""
        self.stop()
        self._closer()

    @property
    def sections_in_use(self) -> int:
        return int(_lib.hvu_dp_sections_in_use(self._dp))

    @property
    def gpa_slots(self) -> int:
        """GPA-direct slots (0 without a pool)."""
        return int(_lib.hvu_dp_gpa_slot_count(self._dp))

    @property
    def gpa_slots_in_use(self) -> int:
        """Slots in flight (sent, not completed) or holding a frame not sent yet."""
        return int(_lib.hvu_dp_gpa_slots_in_use(self._dp))

    @property
    def pending_completions(self) -> int:
        return int(_lib.hvu_dp_pending_completions(self._dp))

    # ---- background thread ----------------------------------------------------------------------------

    def start(self, on_control: Callable[[DataPath], None], *,
              on_exit: Callable[[RunResult, BaseException | None], None] | None = None,
              timeout_ms: int = 1000, name: str = "hvuio-datapath") -> None:
        """Runs `run` in a loop in a daemon thread called `name` (also its kernel name, as `top -H`
        and /proc/<pid>/task/<tid>/comm show it: at most 15 bytes kept). `on_control(self)` is
        called in that thread when a control packet is pending; it should call `read_control`
        (else it is called again). `on_exit(result, error)` is called once when the thread ends
        (STOPPED, or FAULT + error)."""
        if self._thread is not None:
            raise LocalProtocolError("data path thread already started")
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._stopping = False
        self.error = None
        self._thread = threading.Thread(target=self._loop, args=(on_control, on_exit, timeout_ms),
                                        name=name, daemon=True)
        self._thread.start()

    def call_soon(self, fn: Callable[[], None]) -> None:
        """Runs `fn()` in the pump thread between two runs (for control sends on the rings)."""
        if self._thread is None:
            raise LocalProtocolError("call_soon needs a started data path thread")
        self._calls.append(fn)
        os.write(self._wake_w, b"c")

    def stop(self, timeout: float | None = 5.0) -> None:
        """Asks the thread to end, waits for it, closes the wake pipe; re-raises nothing."""
        thread = self._thread
        if thread is None:
            return
        self._stopping = True
        os.write(self._wake_w, b"s")
        thread.join(timeout)
        if thread.is_alive():
            raise LocalProtocolError(f"data path thread did not stop within {timeout} s")
        os.close(self._wake_r)
        os.close(self._wake_w)
        self._wake_r = self._wake_w = -1
        self._thread = None

    def _loop(self, on_control: Callable[[DataPath], None],
              on_exit: Callable[[RunResult, BaseException | None], None] | None, timeout_ms: int) -> None:
        result = RunResult.STOPPED
        _name_kernel_thread(threading.current_thread().name)
        try:
            while True:
                res = self.run(self._wake_r, timeout_ms)
                if res is RunResult.CONTROL_PENDING:
                    on_control(self)
                elif res is RunResult.STOPPED:
                    try:
                        while os.read(self._wake_r, 4096):
                            pass
                    except BlockingIOError:
                        pass
                    while self._calls:
                        self._calls.popleft()()
                    if self._stopping:
                        break
        except Exception as exc:  # noqa: BLE001  (reported through on_exit, kept in .error)
            self.error = exc
            result = RunResult.FAULT
        if on_exit is not None:
            on_exit(result, self.error)


def _name_kernel_thread(name: str) -> None:
    """The calling thread's kernel name (comm), best effort: only a name to look at."""
    try:
        with open(f"/proc/self/task/{threading.get_native_id()}/comm", "w") as f:
            f.write(name[:15])
    except OSError:
        pass


def _close_dp(mem: CData, io_map: mmap.mmap | None) -> None:
    """A DataPath's finalizer: closes its io_uring while the io memory (held here) is mapped."""
    _lib.hvu_dp_close(_ffi.cast("struct hvu_dp *", mem))
    del io_map


__all__ = ["COUNTER_NAMES", "DEFAULT_BUDGET", "DataPath", "ETH_HLEN", "GPA_SLOT_SIZE", "GPA_TAG", "GpaPool",
           "MAX_SECTIONS", "Offloads", "RNDIS_PACKET_HEADER", "RunResult", "Status", "TAP_IO_ENV", "TAP_IO_MODES",
           "TAP_IO_RX_SLOTS", "TAP_IO_TX_SLOTS", "TX_RING_MIN", "TX_TAG", "TxAggregation"]
