"""What the C data path (_native/datapath_api.h) exports and takes, apart from the pump itself:
the values a `hvuio.native.datapath.DataPath` is built from and reports in.

What lives here: the sizes and limits the C data path exports (RNDIS packet header, NVS message,
vnet header, GSO and MTU bounds, send-section and GPA-direct limits; read from `lib`, never
retyped), the trans_id tags of data-path sends, the counter names (`COUNTER_NAMES`, in the C
order), the configuration values (`Offloads`, `TxAggregation`, the `GpaPool` protocol and its
check `gpa_buffers`), the tap I/O modes (`TAP_IO_MODES`, `tap_io_mode`, the io memory's slot
sizes `tap_io_slots`, and `tap_io_probe`: whether this kernel gives a pump its io_uring, as
`hvuio doctor` asks), and what one pump call ends on (`Status`, `RunResult`). What must not: the
pump (``DataPath``, its thread, return code -> exception conversion: ``hvuio.native.datapath``),
ring logic (``hvuio.native.ring``), protocol logic (``hvuio.proto``), I/O on fds other than the
trial ring of `tap_io_probe`. ``hvuio.native.datapath`` re-exports the names its callers import
from it.
"""

from __future__ import annotations

import enum
import errno
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from hvuio.errors import LocalProtocolError
from hvuio.native import ffi as _ffi
from hvuio.native import lib as _lib

if TYPE_CHECKING:
    import array

    from hvuio._native import CData

TX_TAG = 1 << int(_lib.HVU_DP_TX_TAG_SHIFT)
"""Bit set in the trans_id of every data-path send; control requests must leave it clear."""
GPA_TAG = 1 << int(_lib.HVU_DP_TX_GPA_SHIFT)
"""Also set (with TX_TAG) in the trans_id of a GPA-direct send: ``TX_TAG | GPA_TAG | slot``."""
RNDIS_PACKET_HEADER = int(_lib.HVU_DP_RNDIS_PKT_SIZE)
NVS_MESSAGE_SIZE = int(_lib.HVU_DP_NVS_MSG_SIZE)
VNET_HDR_SIZE = int(_lib.HVU_DP_VNET_HDR_SIZE)
PPI_SIZE = int(_lib.HVU_DP_PPI_SIZE)
"""Bytes of a checksum, LSO or hash per-packet info."""
ETH_HLEN = int(_lib.HVU_DP_ETH_HLEN)
VLAN_HLEN = int(_lib.HVU_DP_VLAN_HLEN)
MAX_SECTIONS = int(_lib.HVU_DP_MAX_SECTIONS)
MTU_MIN = int(_lib.HVU_DP_MTU_MIN)
MTU_MAX = int(_lib.HVU_DP_MTU_MAX)
OFFLOAD_HDRS_MIN = int(_lib.HVU_DP_OFFLOAD_HDRS_MIN)
"""With tap offloads a send section holds at least this much header room after RNDIS + 2 pktinfo."""
TX_AGG_ALIGN_MAX = int(_lib.HVU_DP_TX_AGG_ALIGN_MAX)
DEFAULT_BUDGET = 64  # packets per rx/tx batch, NAPI's weight (Linux NAPI_POLL_WEIGHT)

COUNTER_NAMES: tuple[str, ...] = tuple(
    _ffi.string(_lib.hvu_dp_counter_name(i)).decode() for i in range(_lib.hvu_dp_counter_count()))


TAP_IO_MODES = ("readv", "uring")  # one readv/writev per frame, or batched (_native/tapio.c)
TAP_IO_ENV = "HVUIO_TAP_IO"         # the mode when DataPath's `tap_io` is None (default "uring")
TAP_IO_TX_SLOTS = 32                # most tap reads of one burst (one io_uring_enter)
TAP_IO_RX_SLOTS = 64                # tap writes a receive batch queues before one submission
GSO_MAX = int(_lib.HVU_DP_GSO_MAX)
RSC_MAX_BYTES = int(_lib.HVU_DP_RSC_MAX_BYTES)
TX_RING_MIN = int(_lib.HVU_DP_TX_RING_MIN)
"""Smallest outbound data area: the largest message the pump writes plus what the ring keeps free."""
REASON_END = int(_lib.HVU_DP_REASON_END)
HV_PAGE = int(_lib.HVU_HV_PAGE_SIZE)
GPA_MAX_SLOTS = int(_lib.HVU_DP_GPA_MAX_SLOTS)
GPA_PFN_MAX = (1 << int(_lib.HVU_DP_GPA_PFN_BITS)) - 1
GPA_SLOT_SIZE = 17 * HV_PAGE
"""Bytes of one GPA-direct slot: the largest RNDIS message the data path builds is the 44-byte
header, the hash and one checksum/LSO pktinfo (16 bytes each) and a 64 KiB GSO frame (GSO_MAX =
65553 bytes), 65629 bytes: 17 pages (16 would be 60 bytes short). A 2 MiB pool less its 64 KiB
of control pages holds 29 slots."""
GPA_SLOT_MIN = RNDIS_PACKET_HEADER + 2 * PPI_SIZE + GSO_MAX
L2_MAX = ETH_HLEN + VLAN_HLEN
"""Most bytes of L2 header a frame has beyond its MTU: Ethernet header and one VLAN tag."""


class GpaPool(Protocol):
    """Pinned memory the host reads by guest-physical page number (hvuio.device.guestmem's
    GuestRegion is one): `view`, writable, a whole number of 4 KiB pages; `pfns`, array('Q') with
    the page number of each 4 KiB page of `view`, each 1 .. 2**40 - 1."""

    @property
    def view(self) -> memoryview: ...

    @property
    def pfns(self) -> array.array[int]: ...


@dataclass(frozen=True, slots=True)
class Offloads:
    """What the data path may use: the host side as RNDIS negotiated it, the tap side as set with
    TUNSETOFFLOAD (hvuio.offloads.tun_offload). Default: nothing (frames as before, vnet headers ignored on TX).

    `tx_csum_*`: the host finishes that checksum from the checksum pktinfo (else software does);
    `lso4`/`lso6`: the host segments TCP (LSOv2 pktinfo) up to `lso_max_size` bytes (else GSO
    frames are cut into single segments here); `rx_csum`: the host's receive checksum results
    mark frames for the tap; `rsc`: the host may coalesce (fragments are assembled either way,
    as Linux does; the flag is informational).
    """

    tx_csum_tcp4: bool = False
    tx_csum_udp4: bool = False
    tx_csum_tcp6: bool = False
    tx_csum_udp6: bool = False
    lso4: bool = False
    lso6: bool = False
    lso_max_size: int = 0
    rx_csum: bool = False
    rsc: bool = False

    @property
    def any_tx(self) -> bool:
        return (self.tx_csum_tcp4 or self.tx_csum_udp4 or self.tx_csum_tcp6 or self.tx_csum_udp6
                or self.lso4 or self.lso6)

    def dp_flags(self) -> int:
        f = 0
        for on, flag in ((self.tx_csum_tcp4, _lib.HVU_DP_F_TX_CSUM_TCP4),
                         (self.tx_csum_udp4, _lib.HVU_DP_F_TX_CSUM_UDP4),
                         (self.tx_csum_tcp6, _lib.HVU_DP_F_TX_CSUM_TCP6),
                         (self.tx_csum_udp6, _lib.HVU_DP_F_TX_CSUM_UDP6),
                         (self.lso4, _lib.HVU_DP_F_TX_LSO4), (self.lso6, _lib.HVU_DP_F_TX_LSO6),
                         (self.rx_csum, _lib.HVU_DP_F_RX_CSUM)):
            if on:
                f |= int(flag)
        return f

    def as_dict(self) -> dict[str, Any]:
        return {"tx_csum_tcp4": self.tx_csum_tcp4, "tx_csum_udp4": self.tx_csum_udp4,
                "tx_csum_tcp6": self.tx_csum_tcp6, "tx_csum_udp6": self.tx_csum_udp6,
                "lso4": self.lso4, "lso6": self.lso6, "lso_max_size": self.lso_max_size,
                "rx_csum": self.rx_csum, "rsc": self.rsc}


@dataclass(frozen=True, slots=True)
class TxAggregation:
    """How many RNDIS packets one send may carry, from the host's RNDIS initialize completion
    (max_packets_per_message, 1 << packet_alignment_factor, max_transfer_size). Linux netvsc and
    DPDK batch small frames into one send section within these limits; every packet but the last
    of a send is padded to `alignment`. Default: one packet per send."""

    max_packets: int = 1
    alignment: int = 1
    max_bytes: int = 0  # 0: a whole send section

    def __post_init__(self) -> None:
        for name in ("max_packets", "alignment", "max_bytes"):
            v = getattr(self, name)
            if not 0 <= v <= 0xFFFFFFFF:
                raise LocalProtocolError(f"TX aggregation {name} {v} is not a u32")
        if not 1 <= self.alignment <= TX_AGG_ALIGN_MAX or self.alignment & (self.alignment - 1):
            raise LocalProtocolError(f"TX aggregation alignment {self.alignment} is not a power of two "
                                     f"within [1, {TX_AGG_ALIGN_MAX}]")


class Status(enum.IntEnum):
    """What one `rx` or `tx` call ended on."""

    IDLE = _lib.HVU_DP_IDLE          # nothing left: ring empty / tap empty
    BUDGET = _lib.HVU_DP_BUDGET      # budget used up, call again
    CONTROL = _lib.HVU_DP_CONTROL    # a control packet is next in the inbound ring (unread)
    BLOCKED = _lib.HVU_DP_BLOCKED    # no send section free or no room in the outbound ring


class RunResult(enum.Enum):
    """Why `run` returned; FAULT is what the background thread reports when run raised."""

    STOPPED = "stopped"
    CONTROL_PENDING = "control_pending"
    TIMEOUT = "timeout"
    FAULT = "fault"


def tap_io_mode(tap_io: str | None) -> str:
    """The tap I/O mode a DataPath asks for: `tap_io`, else $HVUIO_TAP_IO, else "uring"."""
    mode = tap_io if tap_io is not None else os.environ.get(TAP_IO_ENV) or "uring"
    if mode not in TAP_IO_MODES:
        raise LocalProtocolError(f"tap I/O mode {mode!r} is not one of {', '.join(TAP_IO_MODES)}",
                                 hint=f"Set {TAP_IO_ENV} (or tap_io) to one of {', '.join(TAP_IO_MODES)}.")
    return mode


def tap_io_slots(*, vnet_hdr: bool, tap_offload: bool, mtu: int) -> tuple[int, int]:
    """(tx, rx) slot sizes of the io memory, 64-byte aligned: the largest tap read of tx.c (+ its
    probe byte), the largest plain tap write."""
    vnet = VNET_HDR_SIZE if vnet_hdr else 0
    tx_slot = (vnet + (GSO_MAX if tap_offload else mtu + L2_MAX) + 1 + 63) & ~63
    rx_slot = (vnet + mtu + L2_MAX + 63) & ~63
    return tx_slot, rx_slot


def tap_io_probe() -> str | None:
    """Whether this kernel gives a pump its io_uring: a trial io_uring_setup of the pump's size
    (_native/tapio.c hvu_dp_tap_io_probe, the call a pump's setup makes), closed at once. None
    when it worked, else its error as `DataPath.tap_io_error` words it ("EPERM (...)"): then a
    pump asking for "uring" runs "readv"."""
    e = int(_lib.hvu_dp_tap_io_probe(TAP_IO_TX_SLOTS + TAP_IO_RX_SLOTS))
    return None if e == 0 else errno_text(e)


def errno_text(e: int) -> str:
    """An errno as the data path words it: "EPERM (Operation not permitted)"."""
    return f"{errno.errorcode.get(e, str(e))} ({os.strerror(e)})"


def gpa_buffers(pool: GpaPool) -> tuple[CData, CData]:
    """The pool's memory and page numbers as C pointers, checked (C checks them again)."""
    view, pfns = pool.view, pool.pfns
    size = len(view) * view.itemsize
    if size % HV_PAGE or size < GPA_SLOT_SIZE:
        raise LocalProtocolError(f"GPA pool of {size} bytes: must be a multiple of {HV_PAGE} and hold "
                                 f"at least one {GPA_SLOT_SIZE}-byte slot")
    if getattr(pfns, "typecode", None) != "Q" or len(pfns) != size // HV_PAGE:
        raise LocalProtocolError(f"GPA pool of {size} bytes needs {size // HV_PAGE} page numbers "
                                 f"as array('Q'), got {len(pfns)}")
    bad = next((i for i, p in enumerate(pfns) if not 0 < p <= GPA_PFN_MAX), None)
    if bad is not None:
        raise LocalProtocolError(f"GPA pool page {bad} has page number {pfns[bad]:#x} "
                                 f"(must be 1..{GPA_PFN_MAX:#x})")
    buf = _ffi.from_buffer(view, require_writable=True)
    return buf, _ffi.cast("const uint64_t *", _ffi.from_buffer(pfns))


__all__ = ["COUNTER_NAMES", "DEFAULT_BUDGET", "ETH_HLEN", "GPA_SLOT_SIZE", "GPA_TAG", "GSO_MAX", "GpaPool",
           "MAX_SECTIONS", "MTU_MAX", "MTU_MIN", "NVS_MESSAGE_SIZE", "Offloads", "PPI_SIZE", "RNDIS_PACKET_HEADER",
           "RunResult", "Status", "TAP_IO_ENV", "TAP_IO_MODES", "TAP_IO_RX_SLOTS", "TAP_IO_TX_SLOTS", "TX_RING_MIN",
           "TX_TAG", "TxAggregation", "VNET_HDR_SIZE", "errno_text", "gpa_buffers", "tap_io_mode", "tap_io_probe",
           "tap_io_slots"]
