"""Kernel-version profiles of the emulated guest kernel (VMBUS.md §1.5, §1.10, §1.12, §5.4).

A `KernelProfile` is a frozen bag of switches; `PROFILES` names the variants the emulator
offers ("4.17", "4.19", "6.9", "6.12", "6.15", "6.16", "6.17"). Ring-size and map-size rules live
here as small pure functions so tests can compare them with the tables of docs/VMBUS.md. Also the few class
GUIDs the emulator offers (the sim must not import `hvuio.device`; a test checks these agree with
`hvuio.device.classes`).

No I/O here.
"""

from __future__ import annotations

import dataclasses
import mmap
from dataclasses import dataclass
from typing import Final

PAGE_SIZE: Final = mmap.PAGESIZE
HV_PAGE: Final = 4096
SZ_2M: Final = 2 * 1024 * 1024
RECV_BUFFER_SIZE: Final = 0x1F00000  # 31 MiB, VMBUS.md §1.2 map 3
SEND_BUFFER_SIZE: Final = 0x1000000  # 16 MiB, VMBUS.md §1.2 map 4
FIRST_GPADL: Final = 0xE1E10  # VMBUS.md §1.2.5: next_gpadl_handle starts here
UIO_NAME: Final = "uio_hv_generic"
UIO_VERSION: Final = "0.02.1"

NIC_CLASS: Final = "f8615163-df3e-46c5-913f-f2d2f965ed0e"
FCOPY_CLASS: Final = "34d14be3-dee4-41c8-9ae7-6b174977c192"
KEYBOARD_CLASS: Final = "f912ad6d-2b17-48ea-bd65-f927a61c7684"
SCSI_CLASS: Final = "ba6163d9-04a1-4d29-b605-72e2ffb1dc7f"
HEARTBEAT_CLASS: Final = "57164f39-9115-4e78-ab55-382f3bd5422d"
SHUTDOWN_CLASS: Final = "0e0b6031-5213-4934-818b-38d90ced39db"
VPCI_CLASS: Final = "44c4f61d-4444-4400-9d52-802e27ede19f"  # PCI pass-through: an Azure VF's bus
# Classes in the kernel's vmbus_devs[] table (VMBUS.md §1.5: everything known except FCOPY uses the
# driver default ring size); a class outside it is HV_UNKNOWN.
KERNEL_TABLE: Final = frozenset(
    {NIC_CLASS, FCOPY_CLASS, KEYBOARD_CLASS, SCSI_CLASS, HEARTBEAT_CLASS, SHUTDOWN_CLASS, VPCI_CLASS}
)
# Static id tables of the in-kernel drivers the emulator provides: driver -> classes it matches.
STATIC_DRIVERS: Final[dict[str, frozenset[str]]] = {
    "hv_netvsc": frozenset({NIC_CLASS}),
    "hyperv_keyboard": frozenset({KEYBOARD_CLASS}),
    "hv_storvsc": frozenset({SCSI_CLASS}),
    "hv_utils": frozenset({HEARTBEAT_CLASS, SHUTDOWN_CLASS}),
    "hv_pci": frozenset({VPCI_CLASS}),
}


@dataclass(frozen=True)
class KernelProfile:
    """Switches of one emulated kernel version; the comment names the docs/VMBUS.md row for each."""

    name: str
    driver_override: bool  # 4.18+ (§1.12)
    per_class_ring_size: bool  # 6.10+: pref_ring_size for FCOPY/unknown (§1.5)
    vmbus_ring_size_macro: bool  # 6.16+: VMBUS_RING_SIZE() rounding (§1.5.16)
    nic_only_buffers: bool  # 6.14+: maps 3/4 only for HV_NIC (§1.2)
    ring_st_size_dynamic: bool  # 6.15+: ring st_size = real allocation (§1.8.34)
    ring_after_dev: bool  # 6.15+: primary ring shows up a little after /dev/uioN (§1.8.35)
    refuse_unmonitored: bool  # <=6.9: probe refuses non-monitored channels (§1.6.20)
    auto_mask: bool  # <=6.16: host interrupt sets the channel's inbound mask (§1.10)
    mask_at_open: int  # inbound mask right after open: 1 up to 6.16, 0 on 6.17+ (§1.10)
    irqcontrol_all_channels: bool  # 6.16+: write() covers subchannels (§1.10)
    signal_unmonitored: bool  # 6.10+: write(v != 0) signals a non-monitored primary (§1.10)
    map12_hv_page: bool  # 6.16+: maps 1/2 are 4096 bytes instead of PAGE_SIZE (§1.2)
    rescind_fixed: bool  # 6.12+/stable Aug 2024: rescind of an open primary works (§1.11.47)
    header_full_clear: bool  # newer kernels clear the first HV page of each header (§6.7)

    def with_changes(self, **changes: object) -> KernelProfile:
        """A copy with some switches changed (tests force e.g. driver_override=False)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


_BASE = KernelProfile(
    name="6.17",
    driver_override=True,
    per_class_ring_size=True,
    vmbus_ring_size_macro=True,
    nic_only_buffers=True,
    ring_st_size_dynamic=True,
    ring_after_dev=True,
    refuse_unmonitored=False,
    auto_mask=False,
    mask_at_open=0,
    irqcontrol_all_channels=True,
    signal_unmonitored=True,
    map12_hv_page=True,
    rescind_fixed=True,
    header_full_clear=True,
)

_OLD = dict(
    per_class_ring_size=False, vmbus_ring_size_macro=False, nic_only_buffers=False,
    ring_st_size_dynamic=False, ring_after_dev=False, refuse_unmonitored=True, auto_mask=True,
    mask_at_open=1, irqcontrol_all_channels=False, signal_unmonitored=False, map12_hv_page=False,
    rescind_fixed=False, header_full_clear=False,
)

PROFILES: Final[dict[str, KernelProfile]] = {
    "4.17": _BASE.with_changes(name="4.17", driver_override=False, **_OLD),
    "4.19": _BASE.with_changes(name="4.19", **_OLD),
    "6.9": _BASE.with_changes(name="6.9", **dict(_OLD, rescind_fixed=True)),
    "6.12": _BASE.with_changes(
        name="6.12", vmbus_ring_size_macro=False, nic_only_buffers=False, ring_st_size_dynamic=False,
        ring_after_dev=False, auto_mask=True, mask_at_open=1, irqcontrol_all_channels=False,
        map12_hv_page=False, header_full_clear=False,
    ),
    "6.15": _BASE.with_changes(
        name="6.15", vmbus_ring_size_macro=False, auto_mask=True, mask_at_open=1,
        irqcontrol_all_channels=False, map12_hv_page=False,
    ),
    "6.16": _BASE.with_changes(name="6.16", auto_mask=True, mask_at_open=1),
    "6.17": _BASE,
}


def get_profile(name: str) -> KernelProfile:
    """The profile called `name`; ValueError listing the known names otherwise."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown kernel profile {name!r}; known: {', '.join(PROFILES)}") from None


def vmbus_ring_size(payload: int, page_size: int = PAGE_SIZE) -> int:
    """VMBUS_RING_SIZE(payload): add a header page only when payload < 8 pages (VMBUS.md §1.5.16)."""
    header = page_size if payload < 8 * page_size else 0
    return (payload + header + page_size - 1) // page_size * page_size


def primary_ring_size(profile: KernelProfile, class_id: str, page_size: int = PAGE_SIZE) -> int:
    """Per-direction ring size S of a primary channel (VMBUS.md §1.5 table)."""
    if not profile.per_class_ring_size:
        return 512 * page_size
    if class_id == FCOPY_CLASS:
        pref = 0x4000
    elif class_id not in KERNEL_TABLE:
        pref = 0x11000
    else:
        pref = SZ_2M
    return vmbus_ring_size(pref, page_size) if profile.vmbus_ring_size_macro else pref


def subchannel_ring_size(profile: KernelProfile, page_size: int = PAGE_SIZE) -> int:
    """Per-direction ring size of a subchannel: 512 pages before 6.10, SZ_2M after (§1.7.28)."""
    return SZ_2M if profile.per_class_ring_size else 512 * page_size


def ring_file_size(profile: KernelProfile, allocation: int, page_size: int = PAGE_SIZE) -> int:
    """st_size of channels/<relid>/ring: fixed 2 x 2 MiB-ish until 6.15, then the allocation (§1.8.34)."""
    if profile.ring_st_size_dynamic:
        return allocation
    return 2 * (SZ_2M if profile.per_class_ring_size else 512 * page_size)


def map12_size(profile: KernelProfile, page_size: int = PAGE_SIZE) -> int:
    """Size of maps 1 and 2 (int_page, monitor_page): PAGE_SIZE before 6.16, 4096 after (§1.2)."""
    return HV_PAGE if profile.map12_hv_page else page_size


def has_buffers(profile: KernelProfile, class_id: str) -> bool:
    """Whether the device gets maps 3/4 (recv/send buffers): every device before 6.14 (§1.2)."""
    return class_id == NIC_CLASS or not profile.nic_only_buffers
