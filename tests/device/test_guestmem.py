"""Guest memory through the platform seam: the pagemap parser, the confidential-VM check, hugetlb
memory on this machine, and chunks of the emulated VM's guest memory file (TreePlatform)."""

from __future__ import annotations

import mmap
import os
import signal
import struct
from pathlib import Path

import pytest

from hvuio.device import guestmem as gm
from hvuio.device.guestmem import CHUNK_SIZE, GUEST_PFN_BASE, HV_PAGE, GuestMemoryUnavailable
from hvuio.device.platform import RealPlatform, TreePlatform
from hvuio.errors import LocalProtocolError

from support.guest_memory import emulated_guest_memory, free_huge_pages, huge_pages, pagemap_entry

# -- /proc/self/pagemap ------------------------------------------------------------------------------


def test_pagemap_of_present_pages_gives_their_frames() -> None:
    data = pagemap_entry(0x1234) + pagemap_entry(0x1235) + pagemap_entry(0x99)
    assert list(gm.parse_pagemap(data, 4096)) == [0x1234, 0x1235, 0x99]
    # soft-dirty (55), exclusive (56) and file (61) bits are not part of the frame
    flags = struct.unpack("=Q", pagemap_entry(0x42))[0] | 1 << 55 | 1 << 56 | 1 << 61
    assert list(gm.parse_pagemap(struct.pack("=Q", flags), 4096)) == [0x42]


def test_pagemap_of_a_larger_system_page_lists_every_hyperv_page_inside() -> None:
    assert list(gm.parse_pagemap(pagemap_entry(3) + pagemap_entry(10), 16384)) == [12, 13, 14, 15, 40, 41, 42, 43]


def test_pagemap_page_not_present_is_refused_by_its_index() -> None:
    with pytest.raises(GuestMemoryUnavailable, match="page 1 .* not in memory") as err:
        gm.parse_pagemap(pagemap_entry(7) + pagemap_entry(8, present=False), 4096)
    assert "nr_hugepages" in err.value.hint


def test_pagemap_frame_zero_means_no_cap_sys_admin() -> None:
    with pytest.raises(GuestMemoryUnavailable, match="CAP_SYS_ADMIN") as err:
        gm.parse_pagemap(pagemap_entry(5) + pagemap_entry(0), 4096)
    assert "root" in err.value.hint


def test_pagemap_torn_or_out_of_range_is_refused() -> None:
    with pytest.raises(GuestMemoryUnavailable, match="not whole 8-byte entries"):
        gm.parse_pagemap(pagemap_entry(5)[:7], 4096)
    with pytest.raises(GuestMemoryUnavailable, match="beyond"):
        gm.parse_pagemap(pagemap_entry(gm.MAX_PFN + 1), 4096)
    with pytest.raises(LocalProtocolError):
        gm.parse_pagemap(pagemap_entry(5), 2048)


def test_pagemap_of_this_process_as_root_and_as_nobody() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: only root reads frame numbers from pagemap")
    assert gm.pagemap_readable()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: drop to nobody, whose pagemap reads frame 0
        try:
            os.close(r)
            os.setgid(65534)
            os.setuid(65534)
            os.write(w, b"1" if gm.pagemap_readable() else b"0")
        finally:
            os._exit(0)
    os.close(w)
    try:
        assert os.read(r, 1) == b"0"
    finally:
        os.close(r)
        os.waitpid(pid, 0)


# -- a confidential VM ---------------------------------------------------------------------------------


def _no_cpuid(leaf: int) -> None:
    return None


def test_confidential_vm_from_hyperv_cpuid() -> None:
    sig = struct.unpack("<3I", b"Microsoft Hv")
    snp = {0x40000000: (0x4000000C, *sig), 0x40000003: (0, 1 << 22, 0, 0), 0x4000000C: (0, 2, 0, 0)}
    tdx = {**snp, 0x4000000C: (0, 3, 0, 0)}
    plain = {0x40000000: (0x4000000C, *sig), 0x40000003: (0, 0, 0, 0), 0x4000000C: (0, 2, 0, 0)}
    kvm = {0x40000000: (0x40000001, *struct.unpack("<3I", b"KVMKVMKVM\0\0\0")), 0x40000003: (0, 1 << 22, 0, 0)}
    assert "SEV-SNP" in (gm.confidential_vm("flags\t: fpu hypervisor", snp.get, ()) or "")
    assert "TDX" in (gm.confidential_vm("flags\t: fpu hypervisor", tdx.get, ()) or "")
    assert gm.confidential_vm("flags\t: fpu hypervisor", plain.get, ()) is None
    assert gm.confidential_vm("flags\t: fpu hypervisor", kvm.get, ()) is None


@pytest.mark.parametrize("flags,found", [("fpu tdx_guest", "tdx_guest"), ("fpu hypervisor sev sev_es", "sev_es"),
                                         ("fpu sev", None), ("fpu hypervisor vmx", None)])
def test_confidential_vm_from_cpuinfo_flags(tmp_path: Path, flags: str, found: str | None) -> None:
    text = f"processor\t: 0\nflags\t\t: {flags}\n"
    got = gm.confidential_vm(text, _no_cpuid, ())
    assert (found is None and got is None) or (found is not None and found in (got or ""))


def test_confidential_vm_from_an_attestation_device(tmp_path: Path) -> None:
    (tmp_path / "sev-guest").touch()
    assert "sev-guest" in (gm.confidential_vm("", _no_cpuid, (str(tmp_path / "sev-guest"),)) or "")
    assert gm.confidential_vm("", _no_cpuid, (str(tmp_path / "tdx_guest"),)) is None


def test_a_confidential_vm_gets_no_hugetlb_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gm, "confidential_vm", lambda: "/proc/cpuinfo flag tdx_guest")
    with pytest.raises(GuestMemoryUnavailable, match="confidential VM"):
        gm.hugetlb_memory(CHUNK_SIZE)
    report = gm.probe_hugetlb()
    assert not report.usable and report.tx_path.startswith("send buffer only: a confidential VM")


# -- hugetlb memory on this machine --------------------------------------------------------------------


def test_hugetlb_pool_has_distinct_pfns_of_whole_huge_pages() -> None:
    if gm.confidential_vm() is not None or not gm.pagemap_readable():
        pytest.skip("needs root on a VM that is not confidential")
    with huge_pages(free_huge_pages()[0] + 2, need_free=2):
        report = gm.probe_hugetlb()
        assert report.usable and report.free >= 2 and report.pagemap_readable, report
        with RealPlatform().guest_memory(2 * CHUNK_SIZE) as mem:
            assert mem.kind.startswith("hugetlb") and mem.size == 2 * CHUNK_SIZE
            pfns = list(mem.whole.pfns)
            assert len(pfns) == 1024 and len(set(pfns)) == 1024 and 0 not in pfns
            per_page = CHUNK_SIZE // HV_PAGE
            for first in (pfns[0], pfns[per_page]):   # each huge page: 512 frames, aligned, in a row
                assert first % per_page == 0
            assert pfns[:per_page] == list(range(pfns[0], pfns[0] + per_page))
            mem.whole.view[:5] = b"hello"
            assert bytes(mem.whole.view[:5]) == b"hello"
            assert gm.probe_hugetlb().free == report.free - 2
        assert gm.probe_hugetlb().free == report.free


def test_hugetlb_without_free_huge_pages_says_how_to_reserve() -> None:
    with huge_pages(0, need_free=0):
        if free_huge_pages()[1]:
            pytest.skip("another process keeps 2 MiB huge pages free")
        with pytest.raises(GuestMemoryUnavailable, match="no free 2 MiB huge pages") as err:
            RealPlatform().guest_memory(CHUNK_SIZE)
        assert "echo 4 > /proc/sys/vm/nr_hugepages" in err.value.hint
        assert gm.probe_hugetlb().tx_path.startswith("send buffer only: no free 2 MiB huge pages")


def test_pool_sizes_are_whole_huge_pages(tmp_path: Path) -> None:
    for size in (0, 4096, CHUNK_SIZE + 4096):
        with pytest.raises(LocalProtocolError):
            gm.hugetlb_memory(size)
        with pytest.raises(LocalProtocolError):
            TreePlatform(tmp_path).guest_memory(size)


# -- the emulator's guest memory file ------------------------------------------------------------------


def test_two_pools_get_different_chunks_seen_by_the_host_at_their_pfns(tmp_path: Path) -> None:
    path = emulated_guest_memory(tmp_path, 8)
    plat = TreePlatform(tmp_path)
    with plat.guest_memory(CHUNK_SIZE) as a, plat.guest_memory(CHUNK_SIZE) as b:
        assert a.kind == "emulated guest memory"
        assert set(a.whole.pfns).isdisjoint(b.whole.pfns)
        for pool in (a, b):
            first = pool.whole.pfns[0]
            assert first >= GUEST_PFN_BASE and (first - GUEST_PFN_BASE) % (CHUNK_SIZE // HV_PAGE) == 0
            assert list(pool.whole.pfns) == list(range(first, first + CHUNK_SIZE // HV_PAGE))
        a.whole.view[3 * HV_PAGE + 7: 3 * HV_PAGE + 12] = b"AAAAA"
        b.whole.region(65536, CHUNK_SIZE - 65536).view[:5] = b"BBBBB"
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as host:
            pa = a.whole.pfn(3 * HV_PAGE)
            pb = b.whole.pfn(65536)
            assert host[(pa - GUEST_PFN_BASE) * HV_PAGE + 7:][:5] == b"AAAAA"
            assert host[(pb - GUEST_PFN_BASE) * HV_PAGE:][:5] == b"BBBBB"
        report = gm.probe_emulated(path)
        assert (report.total, report.free, report.size) == (4, 2, 8 * 1024 * 1024)


def test_exhausted_chunks_then_a_closed_pool_frees_its_chunk(tmp_path: Path) -> None:
    emulated_guest_memory(tmp_path, 4)
    plat = TreePlatform(tmp_path)
    a = plat.guest_memory(CHUNK_SIZE)
    b = plat.guest_memory(CHUNK_SIZE)
    with pytest.raises(GuestMemoryUnavailable, match="all 2 chunks .* are taken") as err:
        plat.guest_memory(CHUNK_SIZE)
    assert "--guest-memory" in err.value.hint
    first = a.whole.pfns[0]
    a.close()
    assert a.closed
    with plat.guest_memory(CHUNK_SIZE) as c:
        assert c.whole.pfns[0] == first
    b.close()
    with plat.guest_memory(2 * CHUNK_SIZE) as both:
        assert both.whole.pfns[0] == GUEST_PFN_BASE and both.whole.pages == 1024


def test_a_larger_pool_needs_adjacent_chunks(tmp_path: Path) -> None:
    emulated_guest_memory(tmp_path, 6)
    plat = TreePlatform(tmp_path)
    a, b, c = (plat.guest_memory(CHUNK_SIZE) for _ in range(3))
    a.close()
    c.close()                                  # chunks 0 and 2 free, 1 taken
    with pytest.raises(GuestMemoryUnavailable, match="no 2 adjacent chunks"):
        plat.guest_memory(2 * CHUNK_SIZE)
    b.close()
    with plat.guest_memory(2 * CHUNK_SIZE) as pool:
        assert pool.whole.pfns[0] == GUEST_PFN_BASE


def test_a_dead_processs_chunk_is_free_again(tmp_path: Path) -> None:
    emulated_guest_memory(tmp_path, 2)
    plat = TreePlatform(tmp_path)
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: take the only chunk and hold it until killed
        try:
            os.close(ready_r)
            pool = plat.guest_memory(CHUNK_SIZE)
            os.write(ready_w, b"1" if pool.whole.pfns[0] == GUEST_PFN_BASE else b"0")
            signal.pause()
        finally:
            os._exit(1)
    os.close(ready_w)
    try:
        assert os.read(ready_r, 1) == b"1"
        with pytest.raises(GuestMemoryUnavailable, match="taken"):
            plat.guest_memory(CHUNK_SIZE)
        assert gm.probe_emulated(tmp_path / "run/hvuio-sim/guest-memory").free == 0
    finally:
        os.close(ready_r)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    with plat.guest_memory(CHUNK_SIZE) as pool:
        assert pool.whole.pfns[0] == GUEST_PFN_BASE


def test_a_view_still_in_use_keeps_the_chunk(tmp_path: Path) -> None:
    emulated_guest_memory(tmp_path, 2)
    plat = TreePlatform(tmp_path)
    pool = plat.guest_memory(CHUNK_SIZE)
    control = pool.whole.region(0, 16 * HV_PAGE)   # e.g. held by the control path
    pool.close()
    with pytest.raises(GuestMemoryUnavailable, match="taken"):
        plat.guest_memory(CHUNK_SIZE)
    control.view[:1] = b"x"                       # still mapped, still ours
    del control
    with plat.guest_memory(CHUNK_SIZE):
        pass


def test_no_guest_memory_file_is_a_vm_without_huge_pages(tmp_path: Path) -> None:
    with pytest.raises(GuestMemoryUnavailable, match=r"no guest memory \(started with --guest-memory 0\)") as err:
        TreePlatform(tmp_path).guest_memory(CHUNK_SIZE)
    assert "sim start --guest-memory" in err.value.hint and err.value.exit_code == 9
    report = gm.probe_emulated(tmp_path / "run/hvuio-sim/guest-memory")
    assert not report.usable and "no guest memory" in report.tx_path


def test_a_guest_memory_file_of_partial_chunks_is_refused(tmp_path: Path) -> None:
    path = emulated_guest_memory(tmp_path, 2)
    os.truncate(path, CHUNK_SIZE + 4096)
    with pytest.raises(GuestMemoryUnavailable, match="whole 2 MiB chunks"):
        TreePlatform(tmp_path).guest_memory(CHUNK_SIZE)
