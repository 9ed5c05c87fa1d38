"""The sysfs parsers on values the kernel never writes: each is refused with SysfsError (naming the
file), never accepted as something else and never a bare ValueError.

Kernel formats (VMBUS.md §1.2, §2): integers are %u / %d of non-negative values or 0x%llx, map names
are `recv:%u` / `send:%u`, monitor ids are 0..127.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hvuio.device.sysfs import MAX_GPADL, UioMap, VmbusDevice, _Node
from hvuio.device.uio import MAX_MAP_SIZE, PAGE_SIZE, check_maps
from hvuio.errors import SysfsError


@pytest.mark.parametrize("text, value", [("0", 0), ("12", 12), ("012", 12), ("0x1F", 31), ("0X10", 16),
                                         (" 7 \n", 7), ("4294967295", 0xFFFFFFFF)])
def test_attr_int_reads_kernel_formats(tmp_path: Path, text: str, value: int) -> None:
    (tmp_path / "a").write_text(text)
    assert _Node(tmp_path).attr_int("a") == value


@pytest.mark.parametrize("text", ["-1", "+1", "1_000", "\u0663", "0x", "", "1e3", "12 13", "0b101", "0o17"])
def test_attr_int_refuses_anything_else(tmp_path: Path, text: str) -> None:
    (tmp_path / "a").write_text(text)
    with pytest.raises(SysfsError, match="not an unsigned integer") as info:
        _Node(tmp_path).attr_int("a")
    assert str(tmp_path / "a") in info.value.message and info.value.hint


def test_attr_int_limit(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("128")
    with pytest.raises(SysfsError, match="exceeds 127"):
        _Node(tmp_path).attr_int("a", 127)


@pytest.mark.parametrize("mid", ["128", "255", "-1"])
def test_monitor_id_out_of_range_is_a_sysfs_error(tmp_path: Path, mid: str) -> None:
    guid = "f8615163-df3e-46c5-913f-f2d2f965ed0e"
    d = tmp_path / "sys" / "bus" / "vmbus" / "devices" / guid
    (d / "channels" / "5").mkdir(parents=True)
    (d / "monitor_id").write_text(mid + "\n")
    (d / "channels" / "5" / "monitor_id").write_text(mid + "\n")
    dev = VmbusDevice.from_uuid(tmp_path, guid)
    with pytest.raises(SysfsError):
        _ = dev.monitor_id
    with pytest.raises(SysfsError):
        _ = dev.channel(5).monitor_id


@pytest.mark.parametrize("name, gpadl", [("recv:924176", 924176), ("send:0xE1E11", 0xE1E11),
                                         ("recv:0123", None), ("recv:0", None), ("recv:0x0", None),
                                         (f"send:{MAX_GPADL + 1}", None), ("send:-1", None), ("recv:", None),
                                         ("recv:12 ", None), ("recv:\u0663", None), ("txrx_rings", None)])
def test_gpadl_from_map_name(name: str, gpadl: int | None) -> None:
    assert UioMap(3, name, 0x1000, 0, 0).gpadl == gpadl


def _maps(**over: tuple[str, int]) -> list[UioMap]:
    base = {0: ("txrx_rings", 0x400000), 1: ("int_page", 0x1000), 2: ("monitor_page", 0x1000),
            3: ("recv:924176", 0x1F00000), 4: ("send:924177", 0x1000000)}
    for k, v in over.items():
        base[int(k[1:])] = v
    return [UioMap(i, n, s, 0, 0) for i, (n, s) in sorted(base.items())]


def test_well_formed_maps_pass() -> None:
    check_maps(_maps(), need_nic=True)


@pytest.mark.parametrize("over", [
    {"m0": ("txrx_rings", 3 * PAGE_SIZE)},  # odd number of pages
    {"m0": ("txrx_rings", 2 * PAGE_SIZE)},  # two header pages, no data
    {"m0": ("txrx_rings", 0)},
    {"m0": ("txrx_rings", -2 * PAGE_SIZE)},
    {"m3": ("recv:924176", MAX_MAP_SIZE + 0x1000)},
    {"m4": ("send:924177", 1 << 70)},
    {"m1": ("int_page", 100)},
    {"m3": ("recv:0", 0x1000)},
    {"m4": ("send:x", 0x1000)},
    {"m2": ("monitor", 0x1000)},
    {"m5": ("extra", 0x1000)},
])
def test_bad_maps_are_refused(over: dict[str, tuple[str, int]]) -> None:
    with pytest.raises(SysfsError) as info:
        check_maps(_maps(**over), need_nic=True)
    assert info.value.hint
