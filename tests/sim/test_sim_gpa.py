"""The emulated host's GPA-direct (type 9) path in Python: guest-memory readers and HostNvsp.

Readers (hvuio.sim.vsp.guestmem): strict bounds on every range (offset, count, page count, every
page inside guest memory). HostNvsp: data and control messages read from guest pages, the mixed
form (section + ranges), a page outside guest memory failing only that send, and OpenVMM's rule
that an RNDIS packet's header and per-packet info lie in one range. End to end over the
emulator's shared memory with RingGuest: a data send arrives byte-exact on the network, a send
with a page outside guest memory is completed FAILED, logged, and the channel keeps working, and
an RNDIS control message sent GPA-direct is answered and completed.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any

import pytest

from hvuio.proto.events import Inbound, InboundKind
from hvuio.sim.host.events import FrameFromGuest
from hvuio.sim.host.send import GuestPagesUnreadable
from hvuio.sim.vsp import guestmem
from hvuio.sim.vsp.guestmem import GUEST_PFN_BASE, GuestMemoryFile
from hvuio.sim.vsp.host import SimEnvironment
from hvuio.wire import nvsp as wn

from support.gpa import GPA, gpa_header, make_guest_memory, ppi, rndis_data, send_gpa
from support.ring_guest import RingGuest, eth_frame
from support.simhost import FAILED, FRAME, NO_SECTION, OK, Env, completions, nvs_rndis

PAGE = 4096


@pytest.fixture
def image(tmp_path: Path) -> Any:
    img = make_guest_memory(tmp_path, 1 << 20)
    yield img
    img.close()


@pytest.fixture
def reader(image: Any) -> Any:
    r = GuestMemoryFile(image.path)
    yield r
    r.close()


# --- readers --------------------------------------------------------------------------------------


def test_file_reader_gathers_listed_pages_in_order(image: Any, reader: GuestMemoryFile) -> None:
    image.write(7, 4000, b"A" * 96)
    image.write(2, 0, b"B" * 4)  # the next listed page need not be the next page of the file
    got = reader.read((image.pfn(7), image.pfn(2)), 4000, 100)
    assert got == b"A" * 96 + b"B" * 4
    assert guestmem.guest_memory_path(image.path.parents[2]) == image.path


@pytest.mark.parametrize(("pfns", "offset", "length", "field"), [
    ((GUEST_PFN_BASE - 1,), 0, 10, "pfn"),  # below guest memory
    ((GUEST_PFN_BASE + 256,), 0, 10, "pfn"),  # one past the last page of 1 MiB
    ((GUEST_PFN_BASE + 255, GUEST_PFN_BASE + 256), 4000, 200, "pfn"),  # the second page is outside
    ((GUEST_PFN_BASE,), 0x1000, 10, "byte_offset"),
    ((GUEST_PFN_BASE,), 0, 0, "byte_count"),
    ((GUEST_PFN_BASE,), 4000, 200, "pfn count"),  # two pages needed, one given
])
def test_file_reader_refuses_out_of_bounds(reader: GuestMemoryFile, pfns: tuple[int, ...], offset: int,
                                           length: int, field: str) -> None:
    with pytest.raises(GuestPagesUnreadable) as exc:
        reader.read(pfns, offset, length)
    assert exc.value.field == field


def test_file_reader_reads_the_last_byte_of_guest_memory(image: Any, reader: GuestMemoryFile) -> None:
    image.write(255, 4095, b"Z")
    assert reader.read((GUEST_PFN_BASE + 255,), 4095, 1) == b"Z"


def test_proc_reader_reads_this_process_and_refuses_unmapped_pages() -> None:
    import ctypes

    buf = ctypes.create_string_buffer(b"foreign guest bytes", 64)
    addr = ctypes.addressof(buf)
    r = guestmem.ProcMemReader(os.getpid())
    try:
        assert r.read((addr >> 12, (addr >> 12) + 1), addr & 0xFFF, 19) == b"foreign guest bytes"
        with pytest.raises(GuestPagesUnreadable) as exc:
            r.read((1,), 0, 8)  # page 1 (address 0x1000) is never mapped
        assert exc.value.field == "pfn"
        with pytest.raises(GuestPagesUnreadable):
            r.read((guestmem.PROC_PFN_LIMIT,), 0, 8)
    finally:
        r.close()
    gone = guestmem.ProcMemReader(0x7FFFFFFF)
    with pytest.raises(GuestPagesUnreadable) as exc:
        gone.read((1,), 0, 8)
    assert exc.value.field == "pid"


# --- HostNvsp with a reader -------------------------------------------------------------------------


def status(step: Any) -> int:
    return struct.unpack_from("<2I", completions(step)[0].payload)[1]


def host_with(reader: GuestMemoryFile) -> Env:
    env = Env(gpa_reader=reader.read)
    env.bring_up()
    return env


def test_data_across_pages_and_ranges_is_one_frame(image: Any, reader: GuestMemoryFile) -> None:
    frame = eth_frame(bytes(range(256)) * 20)  # 5134 bytes: over a page boundary
    msg = rndis_data(frame)
    first = image.write(3, 4000, msg[:3000])
    second = image.write(9, 100, msg[3000:])
    env = host_with(reader)
    extra = gpa_header([(3000, 4000, first), (len(msg) - 3000, 100, second)])
    step = env.send_nvsp(nvs_rndis(0, NO_SECTION, 0), ptype=GPA, extra=extra)
    assert status(step) == OK and FrameFromGuest(frame) in step.events


def test_mixed_section_and_ranges_are_appended(image: Any, reader: GuestMemoryFile) -> None:
    frame = eth_frame(b"mixed" * 50)
    msg = rndis_data(frame)
    env = host_with(reader)
    env.send[6144 * 2:6144 * 2 + 100] = msg[:100]  # [OV] parse_packet: section sub-range first
    pfns = image.write(0, 0, msg[100:])
    step = env.send_nvsp(nvs_rndis(0, 2, 100), ptype=GPA, extra=gpa_header([(len(msg) - 100, 0, pfns)]))
    assert status(step) == OK and FrameFromGuest(frame) in step.events


def test_page_outside_guest_memory_fails_the_send_only(image: Any, reader: GuestMemoryFile) -> None:
    env = host_with(reader)
    msg = rndis_data(eth_frame(b"x"))
    step = env.send_nvsp(nvs_rndis(0, NO_SECTION, 0), ptype=GPA,
                         extra=gpa_header([(len(msg), 0, [GUEST_PFN_BASE + 256])]))
    assert status(step) == FAILED
    assert env.host.rejections[-1].field == "pfn" and env.host.rejections[-1].action == "failure-status"
    assert env.host.state == "ready" and env.host.counters["tx_failed"] == 1
    pfns = image.write(1, 0, msg)
    step = env.send_nvsp(nvs_rndis(0, NO_SECTION, 0), ptype=GPA, extra=gpa_header([(len(msg), 0, pfns)]))
    assert status(step) == OK and FrameFromGuest(eth_frame(b"x")) in step.events


@pytest.mark.parametrize("split", [20, 43])
def test_packet_header_spilling_out_of_the_first_range_fails(image: Any, reader: GuestMemoryFile,
                                                             split: int) -> None:
    msg = rndis_data(eth_frame(b"spill"))
    env = host_with(reader)
    a = image.write(0, 0, msg[:split])
    b = image.write(1, 0, msg[split:])
    step = env.send_nvsp(nvs_rndis(0, NO_SECTION, 0), ptype=GPA,
                         extra=gpa_header([(split, 0, a), (len(msg) - split, 0, b)]))
    assert status(step) == FAILED and env.host.rejections[-1].field == "RNDIS packet header"
    assert not any(isinstance(e, FrameFromGuest) for e in step.events)


def test_per_packet_info_spilling_out_of_the_first_range_fails(image: Any, reader: GuestMemoryFile) -> None:
    info = ppi(0, struct.pack("<I", 0))  # checksum info, 16 bytes after the 44-byte head
    msg = rndis_data(eth_frame(b"ppi"), info)
    env = host_with(reader)
    for split, ok in ((44 + 8, False), (44 + 16, True)):
        a = image.write(0, 0, msg[:split])
        b = image.write(1, 0, msg[split:])
        step = env.send_nvsp(nvs_rndis(0, NO_SECTION, 0), ptype=GPA,
                             extra=gpa_header([(split, 0, a), (len(msg) - split, 0, b)]))
        assert status(step) == (OK if ok else FAILED), split


def test_malformed_ranges_stop_the_channel() -> None:
    for count, offset in ((0, 0), (8, 0x1000)):  # [OV] gparange.rs parse: channel error
        env = Env(gpa_reader=lambda *a: b"")
        env.bring_up()
        step = env.send_nvsp(nvs_rndis(0, NO_SECTION, 0), ptype=GPA,
                             extra=gpa_header([(count, offset, [GUEST_PFN_BASE])]))
        assert env.host.state == "stopped", (count, offset)
        assert not completions(step)


# --- end to end over the emulator's shared memory ------------------------------------------------------


class Net:
    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self._efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)

    def fileno(self) -> int:
        return self._efd

    def read_frames(self, max_frames: int = 64) -> list[bytes]:
        return []

    def write_frame(self, frame: bytes) -> bool:
        self.sent.append(bytes(frame))
        return True

    def close(self) -> None:
        os.close(self._efd)


def test_gpa_direct_end_to_end_through_the_python_host(tmp_path: Path) -> None:
    net = Net()
    try:
        with SimEnvironment(tmp_path, "6.17", nics=1, network=net) as env:
            image = make_guest_memory(tmp_path)
            nic = env.nics[0]
            g = RingGuest(tmp_path)
            try:
                g.bring_up()
                frame = eth_frame(bytes(range(251)) * 30)  # 7544 bytes: larger than a send section
                msg = rndis_data(frame)
                tid = send_gpa(g, [(len(msg), 0x800, image.write(10, 0x800, msg))])
                g.pump(lambda: tid in g.tx_done, "the GPA-direct send's completion")
                assert g.tx_done[tid] == wn.NvspStatus.SUCCESS and net.sent == [frame]

                bad = send_gpa(g, [(64, 0, [GUEST_PFN_BASE + image.size // PAGE])])
                g.pump(lambda: bad in g.tx_done, "the failed send's completion")
                assert g.tx_done[bad] == wn.NvspStatus.FAIL
                status_ = env.host.status()[nic.guid]
                assert any("outside guest memory" in r for r in status_["rejections"]), status_["rejections"]
                assert env.host.fault(nic) is None

                # an RNDIS control message GPA-direct (channel type 1): answered, then completed
                replies: list[bytes] = []
                feed = g._feed

                def capture(item: Inbound) -> None:
                    if item.kind == InboundKind.RNDIS and struct.unpack_from("<I", item.payload, 8)[0] == 0x77:
                        replies.append(item.payload)
                    else:
                        feed(item)

                g._feed = capture
                query = struct.pack("<IIIIIII", 4, 28, 0x77, 0x00010106, 0, 20, 0)  # OID_GEN_MAXIMUM_FRAME_SIZE
                ctl = send_gpa(g, [(len(query), 0, image.write(11, 0, query))], chan_type=1)
                g.pump(lambda: ctl in g.tx_done and bool(replies), "the control message's completion and reply")
                assert g.tx_done[ctl] == wn.NvspStatus.SUCCESS
                mtype, _len, rid, rstatus, blen, boff = struct.unpack_from("<6I", replies[0])
                assert (mtype, rid, rstatus, blen) == (0x80000004, 0x77, 0, 4)
                assert struct.unpack_from("<I", replies[0], 8 + boff)[0] == 1500

                again = send_gpa(g, [(len(msg), 0, image.write(20, 0, msg))])
                g.pump(lambda: again in g.tx_done, "a send after the failed one")
                assert g.tx_done[again] == wn.NvspStatus.SUCCESS and net.sent == [frame, frame]
            finally:
                g.close()
                image.close()
    finally:
        net.close()


def test_without_guest_memory_gpa_direct_is_refused(tmp_path: Path) -> None:
    net = Net()
    try:
        with SimEnvironment(tmp_path, "6.17", nics=1, network=net, guest_memory=0) as env:
            g = RingGuest(tmp_path)
            try:
                g.bring_up()
                tid = send_gpa(g, [(64, 0, [GUEST_PFN_BASE])])
                g.pump(lambda: tid in g.tx_done, "the refused send's completion")
                assert g.tx_done[tid] == wn.NvspStatus.FAIL
                rej = env.host.status()[env.nics[0].guid]["rejections"]
                assert any("no guest memory" in r for r in rej), rej
            finally:
                g.close()
    finally:
        net.close()


def _ptrace_scope() -> int:
    try:
        return int(Path("/proc/sys/kernel/yama/ptrace_scope").read_text())
    except (OSError, ValueError):
        return 0


@pytest.mark.skipif(os.geteuid() != 0 and _ptrace_scope() > 1,
                    reason="reading a child's memory needs root or kernel.yama.ptrace_scope <= 1")
def test_proc_mode_reads_a_foreign_guest_process_by_virtual_address(tmp_path: Path) -> None:
    """`sim start --guest-memory-mode proc`: a foreign guest (IOVA = VA) in its own process sends
    from its own memory; the host reads /proc/<pid>/mem of the process that opened /dev/uioN."""
    from support import foreign_guest

    net = Net()
    try:
        with SimEnvironment(tmp_path, "6.17", nics=1, network=net, guest_memory_mode="proc") as env:
            out = foreign_guest.run_checked(str(tmp_path))
            assert net.sent == [bytes.fromhex(out["frame"])]
            nic = env.nics[0]
            assert nic.opener_pid == out["pid"]  # SO_PEERCRED of its /dev/uioN connection
            assert env.host.counters(nic).rejections == 1  # the unmapped page, logged
    finally:
        net.close()


@pytest.mark.skipif(os.geteuid() != 0 and _ptrace_scope() > 0,
                    reason="the daemon reads a sibling process's memory: needs root or kernel.yama.ptrace_scope 0")
def test_cli_sim_start_guest_memory_mode_proc(tmp_path: Path) -> None:
    from hvuio.sim.pcap import PcapSource
    from support import foreign_guest
    from support.cli import hvuio_main as hvuio

    root = tmp_path / "sim"
    bad = hvuio("--sysroot", str(root), "sim", "start", "--guest-memory-mode", "iova")
    assert bad.returncode == 2 and "iova" in bad.stderr
    started = hvuio("--sysroot", str(root), "sim", "start", "--guest-memory-mode", "proc",
                    "--pcap-out", str(tmp_path / "out.pcap"))
    assert started.returncode == 0, started.stderr
    try:
        out = foreign_guest.run_checked(str(root))
    finally:
        stopped = hvuio("--sysroot", str(root), "sim", "stop")
        assert stopped.returncode == 0, stopped.stderr
    assert [r.data for r in PcapSource(tmp_path / "out.pcap")] == [bytes.fromhex(out["frame"])]
