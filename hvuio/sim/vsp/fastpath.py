"""The emulated host's data path in C (hvuio.sim._simhost), typed and checked: `HostPump`.

What lives here: the host's importer of hvuio.sim._simhost (the kernel's is hvuio.sim.kernel.uio,
whose `GuestIrq`, a device's emulated uio interrupt, a pump raises from C); `HostPump` wraps one `struct hvu_sim_pump`
(the host side of a NIC's channels: NVSP 107 data sends -> tap with their completions, tap -> receive
sections -> transfer-page packets, the guest's completions of those, the monitor trigger bit,
the poll loop without the GIL), `enabled()` (module built and HVUIO_SIM_FASTPATH != "0"), and
`PumpResult`. Memory (rings, buffers, monitor page) is the caller's: writable buffers kept
exported until `close()`.

The control plane stays in Python: `run()` returns `CONTROL` with the next outbound packet left
unread, and the caller reads exactly that packet with HostRingReader (after `_reload()`, which
takes read_index from the header, where the pump published it). The pump takes both host-owned
indices from the header at every `run()`: one thread alternates between the two, and each
side publishes before handing over (see _native/simhost/simhost.c).

Offloads: with `PumpConfig.vnet_hdr` the tap fd carries virtio_net_hdr; the pump applies the
guest's checksum/LSO per-packet info (offload.c, the rules of hvuio.sim.host.offload), writes LSO frames
whole as GSO (`tap_gso`) or segments them, and turns tap GSO frames into vRSC fragments or MSS
segments; a request it refuses is handed to Python (Reason.OFFLOAD), which logs and fails it.
802.1Q: with `PumpConfig.vlan_oob` a tagged network frame reaches the guest untagged, its tag in
the 802.1Q per-packet info; a send carrying that info is handed to Python (Reason.VLAN), which
puts the tag onto the wire frame (hvuio.sim.host.vlan).

Channels: one pump serves every channel of a NIC it is given, the primary and each subchannel
added by `add_channel` (its rings and monitor bit), one thread looping over them; receive sections
are one pool, so a completion on any channel frees its batch. `last_channel` names the channel a
CONTROL (or FAULT) concerns, `signal_channels` those to interrupt (pumps without an irq),
`channel_counters` what moved on each.

vRSS: `set_rss` gives the pump the guest's key, table and hash types (hvuio.sim.host.rss); the
pump hashes every frame from the tap as rss.py does (_native/simhost/rss.c) and delivers it on
its channel; a frame for a channel the pump does not serve (its ring not added yet) waits in its
steer buffer and `run()` returns STEER: `take_steered()` gives those to the caller, which
delivers them, with sections taken back by `take_sections()`.

What must not live here: protocol decisions (hvuio.sim.host.nvsp), the session's threads and locks
(session.py), the device interrupt itself (hvuio.sim.kernel.uio), any guest module (the emulator
shares no ring code with the guest).
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from hvuio.errors import LocalProtocolError, UsageError
from hvuio.sim.host import profile as hp
from hvuio.sim.host.rss import RssState
from hvuio.sim.kernel.uio import GuestIrq

try:
    from hvuio.sim import _simhost  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - the build without a C compiler; the Python host serves
    _simhost = None

ENV = "HVUIO_SIM_FASTPATH"
MAX_BATCH = 64  # frames per transfer-page packet (MAX_BATCH in simhost.c)
MAX_NVSP_PAD = 64

COUNTER_NAMES = (
    "tx_frames", "tx_bytes", "tx_net_errors", "tx_completions", "tx_wait_ring_full", "rx_frames", "rx_bytes",
    "rx_packets", "rx_dropped_no_section", "rx_dropped_too_big", "rx_dropped_ring_full", "rx_completions",
    "rx_completion_failed", "completions_unknown", "handoffs", "monitor_wakeups", "signals", "passes",
    "tx_csum", "tx_gso", "tx_segments", "tx_offload_ignored", "tx_offload_race", "rx_gso", "rx_segments",
    "rx_rsc_fragments", "rx_csum_completed", "rx_dropped_bad_gso", "tx_gpa", "tx_gpa_rejected", "rx_vlan",
    "rx_steered",
)
VNET_HDR_LEN = 12
GSO_BUF_LEN = VNET_HDR_LEN + 65535 + 14 + 4 + 64  # a tap's largest GSO frame with its header
LSO_MAX = 0xF53C  # hvuio.sim.host.profile.LSO_MAX_OFFLOAD: what the host advertises
# One GPA-direct send gathered (simhost_gpa.c): the largest LSO frame with its RNDIS header and
# per-packet info; a larger send goes to Python.
GPA_BUF_LEN = 65535 + 14 + 4 + 4096
STEER_BUF_LEN = 4 * (GSO_BUF_LEN + 16)  # frames for other channels (vRSS) until Python takes them
RSS_TABLE_MAX = 256  # rss_table entries in struct hvu_sim_pump


def available() -> bool:
    """The C module was built."""
    return _simhost is not None


def enabled() -> bool:
    """Built, and not switched off with HVUIO_SIM_FASTPATH=0."""
    return available() and os.environ.get(ENV, "1") != "0"


class PumpResult(enum.IntEnum):
    TIMEOUT = 0  # the timeout elapsed
    WAKE = 1  # the wake fd is readable (not read by the pump)
    CONTROL = 2  # the next outbound packet is Python's
    FAULT = 3  # ring violation; `fault_message()` says which; the pump stays dead
    SIGNAL = 4  # interrupt the guest (pumps without an irq; also see `signal` after CONTROL)
    STEER = 5  # frames the guest's RSS table puts on other channels wait: `take_steered()`


class Reason(enum.IntEnum):
    NONE = 0
    BAD_WRITE_INDEX = 1
    BAD_READ_INDEX = 2
    SHORT_AVAIL = 3
    BAD_LEN8 = 4
    BAD_OFFSET8 = 5
    BAD_TYPE = 6
    BAD_FLAGS = 7
    CONTROL = 16
    NO_COMPLETION_FLAG = 17
    NVSP_SHORT = 18
    BAD_SECTION = 19
    RNDIS_LEN = 21
    RNDIS_TYPE = 22
    RNDIS_DATA = 23
    RNDIS_OOB = 24
    RNDIS_PPI = 25
    TOO_MANY_MSGS = 26
    OFFLOAD = 27
    AGGREGATION = 28
    RNDIS_HDR_RANGE = 29
    GPA_HEADER = 30
    GPA_PYTHON = 31
    UNKNOWN_TID = 32
    COMPLETION_TYPE = 33
    GPA_PAGE = 34
    VLAN = 35


_FIELDS = {Reason.BAD_WRITE_INDEX: "write_index", Reason.BAD_READ_INDEX: "read_index",
           Reason.SHORT_AVAIL: "bytes_to_read", Reason.BAD_LEN8: "len8", Reason.BAD_OFFSET8: "offset8",
           Reason.BAD_TYPE: "type", Reason.BAD_FLAGS: "flags"}


@dataclass(frozen=True, slots=True)
class PumpConfig:
    ring_size: int  # each ring, header page included
    header_size: int
    recv_section: int
    recv_count: int
    send_section: int
    max_frame: int  # NDIS MTU, Ethernet header included
    nvsp_pad: int  # completion payload size (28 before NVSP 6.1, 40 from it)
    tap_fd: int = -1
    monitor_id: int | None = None
    strict: bool = False
    rx_batch: int = MAX_BATCH
    # How frames sit in receive sections (HostProfile.rx_layout, hvuio.sim.host.receive).
    rx_layout: hp.RxLayout = "openvmm"
    # How often the pump looks at the monitor bit: the emulator's stand-in for the hypervisor's
    # monitor-page scan. Without sleeping for spin_us after traffic (a timer wake-up costs ~20 us
    # on a VM, more than the work), then every 5 us, then after idle_after seconds every 100 us:
    # about 1-2% of a core while the emulator idles.
    spin_us: int = 20000  # look again at once for this long after the last frame
    poll_us: int = 5  # sleep between ring polls while traffic flows
    idle_poll_us: int = 100  # ... after idle_after seconds without traffic
    idle_after: float = 1.0
    # Offloads (offload.c): the tap carries a virtio_net_hdr (IFF_VNET_HDR) / takes and gives GSO
    # frames (TUNSETOFFLOAD CSUM|TSO4|TSO6); `offloads` returns the current (off_tx, off_rx) bits
    # (hvuio.sim.host.offload.OFF_*; OffloadState.pump_bits) and is read before every run, so a guest's later
    # OID_TCP_OFFLOAD_PARAMETERS reaches the pump without a restart.
    vnet_hdr: bool = False
    tap_gso: bool = False
    vlan_oob: bool = False  # HostProfile.vlan_oob: network frames' 802.1Q tags go out of band
    offloads: Callable[[], tuple[int, int]] | None = None
    lso_max: int = LSO_MAX
    # The RNDIS initialize completion's aggregation limits: with `strict`, a send past them goes to
    # Python, which logs it (HostNvsp._split_rndis).
    rndis_max_packets: int = hp.RNDIS_MAX_PACKETS
    rndis_align: int = 1 << hp.RNDIS_ALIGN_SHIFT
    # GPA-direct: the emulated VM's guest memory (guestmem.GuestMemoryFile: `mapping`, `size`,
    # `first_pfn`), read by the pump for type-9 data sends; None: they go to Python (proc mode).
    guest_memory: Any = None


class HostPump:
    """One channel's host data path in C. `ring` = the channel's ring file mapping (outbound ring
    at 0, inbound at ring_size); `monitor_page` = map 2 when the channel is monitored."""

    def __init__(self, cfg: PumpConfig, ring: Any, recv_buf: Any, send_buf: Any,
                 monitor_page: Any | None = None, irq: GuestIrq | None = None,
                 auto_mask: bool = False) -> None:
        if _simhost is None:
            raise UsageError("the emulator's C data path (hvuio.sim._simhost) is not built",
                             "Reinstall with a C compiler (pip install -e .) or set HVUIO_SIM_FASTPATH=0.")
        if not 1 <= cfg.rx_batch <= MAX_BATCH or not 8 <= cfg.nvsp_pad <= MAX_NVSP_PAD:
            raise LocalProtocolError(f"pump config rx_batch {cfg.rx_batch} / nvsp_pad {cfg.nvsp_pad} out of range")
        ffi, lib = _simhost.ffi, _simhost.lib
        self._ffi, self._lib = ffi, lib
        self._views: list[Any] = []

        def buf(obj: Any) -> Any:
            view = ffi.from_buffer("uint8_t[]", obj, require_writable=True)
            self._views.append(view)
            return view

        ring_view = buf(ring)
        if len(ring_view) < 2 * cfg.ring_size:
            raise LocalProtocolError(f"ring mapping of {len(ring_view)} bytes is smaller than 2 x {cfg.ring_size}")
        p = ffi.new("struct hvu_sim_pump *")
        p.out_ring = ring_view
        p.in_ring = ring_view + cfg.ring_size
        p.ring_size = cfg.ring_size
        p.header_size = cfg.header_size
        recv_view, send_view = buf(recv_buf), buf(send_buf)
        p.recv_buf, p.recv_size = recv_view, len(recv_view)
        p.recv_section, p.recv_count = cfg.recv_section, cfg.recv_count
        p.send_buf, p.send_size, p.send_section = send_view, len(send_view), cfg.send_section
        if monitor_page is not None and cfg.monitor_id is not None and 0 <= cfg.monitor_id < 128:
            mon = buf(monitor_page)
            p.monitor_word = ffi.cast("uint32_t *", mon + 8 + 8 * (cfg.monitor_id // 32))
            p.monitor_bit = cfg.monitor_id % 32
        p.tap_fd = cfg.tap_fd
        p.max_frame = cfg.max_frame
        p.nvsp_pad = cfg.nvsp_pad
        p.strict = int(cfg.strict)
        p.rndis_max_pkts, p.rndis_align = cfg.rndis_max_packets, cfg.rndis_align
        p.rx_enabled = 0
        p.rx_batch = cfg.rx_batch
        p.rx_layout = int(cfg.rx_layout == "openvmm")
        p.spin_ns = cfg.spin_us * 1000
        p.poll_ns = cfg.poll_us * 1000
        p.idle_poll_ns = cfg.idle_poll_us * 1000
        p.idle_after_ns = int(cfg.idle_after * 1e9)
        self._irq = irq  # kept alive as long as the pump may raise it
        p.irq = self._ffi.NULL if irq is None else irq.cptr
        p.auto_mask = int(auto_mask)
        n = cfg.recv_count
        self._arrays = [ffi.new("uint8_t[]", n), ffi.new("uint32_t[]", n), ffi.new("uint32_t[]", n),
                        ffi.new("uint8_t[]", cfg.max_frame + 64), ffi.new("uint8_t[]", GSO_BUF_LEN)]
        (p.sec_state, p.free_stack, p.sec_next, p.scratch, p.gso_buf) = self._arrays
        p.scratch_len = cfg.max_frame + 64
        p.gso_buf_len = GSO_BUF_LEN
        p.vnet_hdr = int(cfg.vnet_hdr)
        p.tap_gso = int(cfg.tap_gso and cfg.vnet_hdr)
        p.vlan_oob = int(cfg.vlan_oob)
        p.lso_max = cfg.lso_max
        p.off_tx = p.off_rx = 0
        self._steer = ffi.new("uint8_t[]", STEER_BUF_LEN)
        p.steer_buf, p.steer_buf_len, p.steer_used = self._steer, STEER_BUF_LEN, 0
        p.rss_on = 0
        self._rss: tuple[object, int] | None = None
        gm = cfg.guest_memory
        if gm is not None:
            gview = ffi.from_buffer("uint8_t[]", gm.mapping)  # read-only: the host never writes it
            if len(gview) != gm.size or gm.size % 4096:
                raise LocalProtocolError(f"guest memory mapping of {len(gview)} bytes is not {gm.size}")
            self._views.append(gview)
            self._gpa_buf = ffi.new("uint8_t[]", GPA_BUF_LEN)
            p.gmem, p.gmem_size, p.gmem_first_pfn = gview, gm.size, gm.first_pfn
            p.gpa_buf, p.gpa_buf_len = self._gpa_buf, GPA_BUF_LEN
        rc = lib.hvu_sim_pump_init(p)
        if rc != 0:
            self.close()
            raise LocalProtocolError(f"hvu_sim_pump_init refused the configuration {cfg} (errno {-rc})")
        self._p = p
        self.cfg = cfg

    # -- sections and switches -------------------------------------------------------------------

    def add_sections(self, indexes: Iterable[int]) -> int:
        """Hand receive sections to the pump (they must be free in HostNvsp's books)."""
        idx = list(indexes)
        if not idx:
            return 0
        arr = self._ffi.new("uint32_t[]", idx)
        rc = int(self._lib.hvu_sim_pump_add_sections(self._p, arr, len(idx)))
        if rc < 0:
            raise LocalProtocolError(f"receive sections {idx[:8]}... are out of range or already the pump's")
        return rc

    def take_sections(self) -> list[int]:
        """Take back every free section (Python delivers with them; the free ones go back by
        `add_sections`)."""
        n = int(self._p.nfree)
        if n == 0:
            return []
        arr = self._ffi.new("uint32_t[]", n)
        got = int(self._lib.hvu_sim_pump_take_sections(self._p, arr, n))
        return [int(arr[i]) for i in range(got)]

    def set_rss(self, state: RssState | None, queues: int) -> None:
        """The guest's RSS (hvuio.sim.host.rss) and the granted queue count: with RSS on and more
        than one queue the pump steers each frame by the same hash, and hands those for another
        channel over (STEER). Applied only when it changed."""
        if self._rss is not None and self._rss[0] is state and self._rss[1] == queues:
            return
        self._rss = (state, queues)
        p = self._p
        if state is None or queues < 2 or not 1 <= len(state.table) <= RSS_TABLE_MAX:
            p.rss_on = 0
            return
        p.rss_key = list(state.key)
        for i, q in enumerate(state.table):
            p.rss_table[i] = q
        p.rss_table_len = len(state.table)
        p.rss_hash_info = state.hash_info
        p.rss_queues = queues
        p.rss_on = 1

    def add_channel(self, index: int, ring: Any, monitor_page: Any | None = None,
                    monitor_id: int | None = None) -> None:
        """Serve subchannel `index` too (its ring file mapping, laid out as the primary's, and its
        monitor bit): its data sends and completions, and the frames the guest's RSS table puts
        on it. Receive sections stay one pool. A channel is added once."""
        view = self._ffi.from_buffer("uint8_t[]", ring, require_writable=True)
        if len(view) != 2 * self.cfg.ring_size:  # the pump's rings are all of one size
            self._ffi.release(view)
            raise LocalProtocolError(f"ring mapping of {len(view)} bytes is not 2 x {self.cfg.ring_size}, "
                                     "the primary's ring size")
        word, bit = self._ffi.NULL, 0
        if monitor_page is not None and monitor_id is not None and 0 <= monitor_id < 128:
            mon = self._ffi.from_buffer("uint8_t[]", monitor_page, require_writable=True)
            self._views.append(mon)
            word, bit = self._ffi.cast("uint32_t *", mon + 8 + 8 * (monitor_id // 32)), monitor_id % 32
        rc = int(self._lib.hvu_sim_pump_add_chan(self._p, index, view, view + self.cfg.ring_size, word, bit))
        if rc != 0:
            self._ffi.release(view)
            raise LocalProtocolError(f"channel {index} cannot join the pump (index 1..63, added once)")
        self._views.append(view)

    @property
    def channels(self) -> list[int]:
        """The channels the pump serves (0, the primary, and those added)."""
        return [i for i in range(int(self._p.nchans)) if self._p.chans[i].out_ring != self._ffi.NULL]

    def channel_counters(self, index: int) -> dict[str, int]:
        """What the pump moved on one channel: rx_frames, rx_packets, tx_frames, signals."""
        c = self._p.chans[index]
        return {"rx_frames": int(c.rx_frames), "rx_packets": int(c.rx_packets), "tx_frames": int(c.tx_frames),
                "signals": int(c.signals)}

    def take_steered(self) -> list[tuple[int, bytes]]:
        """(queue, tap bytes: the virtio_net_hdr included when `vnet_hdr`) of every frame the pump
        steered to another channel since the last call."""
        used = int(self._p.steer_used)
        raw = bytes(self._ffi.buffer(self._steer, used))
        self._p.steer_used = 0
        out: list[tuple[int, bytes]] = []
        pos = 0
        while pos + 8 <= used:
            length, queue = int.from_bytes(raw[pos:pos + 4], "little"), int.from_bytes(raw[pos + 4:pos + 8], "little")
            out.append((queue, raw[pos + 8:pos + 8 + length]))
            pos += (8 + length + 7) & ~7
        return out

    @property
    def rx_enabled(self) -> bool:
        return bool(self._p.rx_enabled)

    @rx_enabled.setter
    def rx_enabled(self, on: bool) -> None:
        self._p.rx_enabled = int(on)

    def set_offloads(self, off_tx: int, off_rx: int) -> None:
        """Transmit offloads the guest enabled and receive marks/RSC (hvuio.sim.host.offload.OFF_* bits)."""
        self._p.off_tx = off_tx & 0x1FF
        self._p.off_rx = off_rx & 0x1FF

    @property
    def offloads(self) -> tuple[int, int]:
        return int(self._p.off_tx), int(self._p.off_rx)

    @property
    def sections_owned(self) -> int:
        return int(self._p.owned)

    @property
    def sections_free(self) -> int:
        return int(self._p.nfree)

    @property
    def in_flight(self) -> int:
        return int(self._lib.hvu_sim_in_flight(self._p))

    # -- running -----------------------------------------------------------------------------------

    def run(self, wake_fd: int = -1, timeout: float = 0.0) -> PumpResult:
        """Serve until something needs Python (GIL released meanwhile). timeout in seconds; 0 = one pass."""
        if self.cfg.offloads is not None:
            self.set_offloads(*self.cfg.offloads())
        rc = int(self._lib.hvu_sim_pump_run(self._p, wake_fd, max(0, int(timeout * 1e6))))
        if rc < 0:
            raise OSError(-rc, f"simhost pump poll failed: {os.strerror(-rc)}")
        return PumpResult(rc)

    @property
    def signal(self) -> bool:
        """The last run asked for an interrupt to the guest (pumps without an irq)."""
        return bool(self._p.signal)

    @property
    def signal_channels(self) -> list[int]:
        """The channels the last run asked an interrupt for (pumps without an irq)."""
        mask = int(self._p.signal_mask)
        return [i for i in range(64) if mask >> i & 1]

    @property
    def last_channel(self) -> int:
        """The channel whose packet the last CONTROL left unread (or whose ring faulted)."""
        return int(self._p.last_chan)

    @property
    def reason(self) -> Reason:
        try:
            return Reason(int(self._p.reason))
        except ValueError:  # pragma: no cover - C and Python lists out of step
            return Reason.NONE

    @property
    def value(self) -> int:
        return int(self._p.value)

    def reason_text(self) -> str:
        return str(self._ffi.string(self._lib.hvu_sim_reason_text(self._p.reason)).decode())

    def fault_message(self) -> str:
        """One sentence naming field, value and rule (the pump's last fault or hand-off reason)."""
        reason = self.reason
        name = _FIELDS.get(reason, reason.name.lower())
        return f"{name} = {self.value:#x}: {self.reason_text()}"

    def counters(self) -> dict[str, int]:
        c = self._p.c
        return {name: int(getattr(c, name)) for name in COUNTER_NAMES}

    def close(self) -> None:
        """Release the exported buffers (the owner may unmap after this)."""
        for view in self._views:
            self._ffi.release(view)
        self._views.clear()
