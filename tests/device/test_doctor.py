"""hvuio doctor: CPUID parsing, sim tree, a machine without VMBus, runtime quirk detection, the
TX path a NIC will use (GPA-direct from guest memory or the send buffer only), the tap I/O its
pumps will run (batched through an io_uring, or one readv/writev per frame and why)."""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from hvuio.cli import cli
from hvuio.device import doctor, guestmem
from hvuio.device.bind import bind_device, resolve_device
from hvuio.device.guestmem import CHUNK_SIZE, CVM_HINT, RESERVE_HINT, GuestMemoryReport
from hvuio.device.platform import TreePlatform
from hvuio.device.uio import UioHandle
from hvuio.sim.kernel.bus import SimKernel


def test_cpuid_vendor_parsed_from_cpuid_device_layout(tmp_path: Path) -> None:
    fake = tmp_path / "cpuid"
    with open(fake, "wb") as f:
        f.seek(doctor.HV_CPUID_LEAF)
        f.write(struct.pack("<I", 0x4000000B) + b"Microsoft Hv")
    assert doctor.cpuid_vendor(fake) == "Microsoft Hv"
    assert doctor.cpuid_vendor(tmp_path / "missing") is None


def test_doctor_on_empty_root_says_use_emulator_and_exits_with_the_failure_code(tmp_path: Path) -> None:
    res = CliRunner().invoke(cli, ["--sysroot", str(tmp_path), "doctor", "--json"])
    assert res.exit_code == doctor.EXIT_FAILED == 9, res.output
    data = json.loads(res.output)
    assert "hvuio demo" in data["next"] and not data["ok"]
    assert any(f["check"] == "vmbus" and f["status"] == "fail" for f in data["findings"])
    text = CliRunner().invoke(cli, ["--sysroot", str(tmp_path), "doctor"])
    assert text.exit_code == 9 and "[FAIL]" in text.output and "Next:" in text.output


def test_doctor_on_an_empty_tree_names_the_facts_it_took_from_the_running_machine(tmp_path: Path) -> None:
    findings, _ = doctor.diagnose(tmp_path)
    checks = {f.check: f for f in findings}
    assert checks["kernel"].source == doctor.RUNNING_MACHINE
    assert "from the running machine: the tree has no proc/sys/kernel/osrelease" in checks["kernel"].message
    assert checks["hypervisor"].source == doctor.RUNNING_MACHINE
    assert checks["tx path"].source == doctor.RUNNING_MACHINE and "running machine" in checks["tx path"].message
    data = doctor.as_json(findings, "next")
    assert {"kernel", "hypervisor", "tx path"} <= set(data["from_running_machine"])


def test_doctor_takes_kernel_hypervisor_and_cpus_from_the_emulated_tree(tmp_path: Path) -> None:
    with SimKernel(tmp_path, "6.12", nics=2, ifnames=["eth0", "eth1"]):
        res = CliRunner().invoke(cli, ["--sysroot", str(tmp_path), "doctor", "--json"])
        assert res.exit_code == 0, res.output
        data = json.loads(res.output)
        checks = {f["check"]: f for f in data["findings"]}
        assert checks["kernel"]["message"].startswith("kernel 6.12.0-hvuio-sim")
        assert checks["kernel"]["source"] == "tree" and "tree's proc/sys/kernel/osrelease" in checks["kernel"]["message"]
        assert checks["hypervisor"]["source"] == "tree" and "Microsoft" in checks["hypervisor"]["message"]
        assert data["from_running_machine"] == []
        cpus = (tmp_path / "sys/devices/system/cpu/online").read_text().strip()
        n = int(cpus.split("-")[-1]) + 1 if "-" in cpus else 1
        for name in ("eth0", "eth1"):
            q = checks[f"{name} queues"]
            assert q["message"] == (f"{name}: 1 channel now, {n} CPUs online (from the tree's "
                                    f"sys/devices/system/cpu/online): up to {n} queues ({doctor.HOST_LIMIT_NOTE})")


def test_doctor_reads_a_tree_that_says_it_is_not_hyperv(tmp_path: Path) -> None:
    (tmp_path / "proc/sys/kernel").mkdir(parents=True)
    (tmp_path / "proc/sys/kernel/osrelease").write_text("6.1.0-kvm\n")
    (tmp_path / "proc/cpuinfo").write_text("processor\t: 0\nflags\t\t: fpu hypervisor\n")
    (tmp_path / "sys/class/dmi/id").mkdir(parents=True)
    (tmp_path / "sys/class/dmi/id/sys_vendor").write_text("QEMU\n")
    (tmp_path / "sys/devices/system/cpu").mkdir(parents=True)
    (tmp_path / "sys/devices/system/cpu/online").write_text("0-3,6\n")
    assert doctor.online_cpus(tmp_path) == (5, "tree")
    hyp = doctor.detect_hyperv(tmp_path)
    assert hyp.status == "fail" and "not Hyper-V (QEMU)" in hyp.message and hyp.source == "tree"
    (tmp_path / "proc/cpuinfo").write_text("processor\t: 0\nflags\t\t: fpu\n")
    assert "not running under a hypervisor (from the tree's proc/cpuinfo)" in doctor.detect_hyperv(tmp_path).message
    assert doctor.kernel_finding(tmp_path).message == "kernel 6.1.0-kvm (from the tree's proc/sys/kernel/osrelease)"


@pytest.mark.parametrize("profile,mask_word", [("6.16", "auto-masks"), ("6.17", "userspace owns")])
def test_doctor_quirks_on_bound_opened_nic(tmp_path: Path, profile: str, mask_word: str) -> None:
    with SimKernel(tmp_path, profile, nics=1):
        findings, step = doctor.diagnose(tmp_path)
        assert "Bind a secondary NIC" in step
        bind_device(tmp_path, "hveth0")
        with UioHandle.open(resolve_device(tmp_path, "hveth0")):
            findings, step = doctor.diagnose(tmp_path)
            text = "\n".join(f.message for f in findings)
            assert "5 maps" in text and "monitored (monitor_id" in text and mask_word in text
            assert "hvuio up" in step
        res = CliRunner().invoke(cli, ["--sysroot", str(tmp_path), "doctor"])
        assert res.exit_code == 0 and "Next:" in res.output and "[ok  ] " in res.output


def test_doctor_reports_missing_module(tmp_path: Path) -> None:
    with SimKernel(tmp_path, "6.17", nics=1, uio_module=False):
        findings, step = doctor.diagnose(tmp_path)
        uio = next(f for f in findings if f.check == "uio_hv_generic")
        assert uio.status == "fail" and "Install" in step


def test_doctor_reports_the_emulated_guest_memory_and_its_free_chunks(tmp_path: Path) -> None:
    with SimKernel(tmp_path, "6.17", nics=1, guest_memory=8 * 1024 * 1024):
        findings, _ = doctor.diagnose(tmp_path)
        tx = next(f for f in findings if f.check == "tx path")
        assert tx.status == "ok"
        assert tx.message == "NIC TX path: GPA-direct (emulated guest memory, 8 MiB, 4 of 4 2 MiB chunks free)"
        with TreePlatform(tmp_path).guest_memory(CHUNK_SIZE):
            res = CliRunner().invoke(cli, ["--sysroot", str(tmp_path), "doctor", "--json"])
            assert res.exit_code == 0, res.output
            data = json.loads(res.output)["tx_path"]
            assert data["gpa_direct"] and data["kind"] == "emulated" and (data["total"], data["free"]) == (4, 3)
            assert data["summary"] == "GPA-direct (emulated guest memory, 8 MiB, 3 of 4 2 MiB chunks free)"


def test_doctor_on_an_emulated_vm_without_guest_memory_says_send_buffer_only(tmp_path: Path) -> None:
    with SimKernel(tmp_path, "6.17", nics=1, guest_memory=0):
        res = CliRunner().invoke(cli, ["--sysroot", str(tmp_path), "doctor"])
        assert res.exit_code == 0, res.output
        lines = res.output.splitlines()
        at = next(i for i, line in enumerate(lines) if "NIC TX path" in line)
        assert lines[at] == ("[WARN] NIC TX path: send buffer only: the emulated VM has no guest memory "
                             "(started with --guest-memory 0)")
        assert lines[at + 1].strip().startswith("hint:") and "--guest-memory 64" in lines[at + 1]


@pytest.mark.parametrize("report,status,text", [
    (GuestMemoryReport("hugetlb", True, 4, 3, 0, True), "ok",
     "NIC TX path: GPA-direct (hugetlb, 3 of 4 2 MiB huge pages free)"),
    (GuestMemoryReport("hugetlb", False, 0, 0, 0, True, "no free 2 MiB huge pages (0 of 0 free)", RESERVE_HINT),
     "warn", "NIC TX path: send buffer only: no free 2 MiB huge pages (0 of 0 free)"),
    (GuestMemoryReport("hugetlb", False, 4, 4, 0, True, "a confidential VM (tdx_guest): the host cannot read "
                       "guest memory", CVM_HINT), "info", "NIC TX path: send buffer only: a confidential VM"),
])
def test_doctor_tx_path_on_a_real_vm(tmp_path: Path, report: GuestMemoryReport, status: str, text: str) -> None:
    findings, _ = doctor.diagnose(tmp_path, report)
    tx = next(f for f in findings if f.check == "tx path")
    assert tx.status == status and tx.message.startswith(text) and tx.hint == report.hint
    data = doctor.as_json(findings, "next", report)["tx_path"]
    assert data["gpa_direct"] == report.usable and data["summary"] == report.tx_path


def test_probe_hugetlb_reads_meminfo_and_pagemap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(guestmem, "confidential_vm", lambda: None)
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal: 100 kB\nHugePages_Total:       4\nHugePages_Free:        3\n"
                       "HugePages_Rsvd:        1\nHugepagesize:       2048 kB\n")
    unreadable = tmp_path / "no-pagemap"
    report = guestmem.probe_hugetlb(meminfo, unreadable)
    assert (report.total, report.free, report.pagemap_readable) == (4, 2, False)
    assert not report.usable and "CAP_SYS_ADMIN" in report.reason and "root" in report.hint
    meminfo.write_text("HugePages_Total: 0\nHugePages_Free: 0\nHugePages_Rsvd: 0\nHugepagesize: 2048 kB\n")
    report = guestmem.probe_hugetlb(meminfo, unreadable)
    assert report.tx_path == "send buffer only: no free 2 MiB huge pages (0 of 0 free)"
    assert "echo 4 > /proc/sys/vm/nr_hugepages" in report.hint
    if guestmem.pagemap_readable():          # root: the real pagemap shows frames
        meminfo.write_text("HugePages_Total: 2\nHugePages_Free: 2\nHugePages_Rsvd: 0\nHugepagesize: 2048 kB\n")
        assert guestmem.probe_hugetlb(meminfo).tx_path == "GPA-direct (hugetlb, 2 of 2 2 MiB huge pages free)"


def test_huge_pages_of_another_default_size_come_from_sysfs(tmp_path: Path) -> None:
    meminfo = "HugePages_Total: 1\nHugePages_Free: 1\nHugePages_Rsvd: 0\nHugepagesize: 1048576 kB\n"
    assert guestmem.huge_pages_2mib(meminfo, tmp_path / "missing") is None
    for name, value in (("nr_hugepages", "8"), ("free_hugepages", "6"), ("resv_hugepages", "1")):
        (tmp_path / name).write_text(value + "\n")
    assert guestmem.huge_pages_2mib(meminfo, tmp_path) == (8, 5)


def _no_probe() -> str | None:
    raise AssertionError("the trial ring is not needed when HVUIO_TAP_IO=readv")


@pytest.mark.parametrize("error,disabled,words,hint", [  # disabled "": no such sysctl
    ("EPERM (Operation not permitted)", "2", "kernel.io_uring_disabled = 2 (io_uring off for every process)",
     "kernel.io_uring_disabled=0"),
    ("EPERM (Operation not permitted)", "1", "kernel.io_uring_disabled = 1 (io_uring for root and "
     "kernel.io_uring_group only)", "kernel.io_uring_group"),
    ("EPERM (Operation not permitted)", "0", "a seccomp filter or security module refuses it "
     "(kernel.io_uring_disabled allows it)", "seccomp"),
    ("ENOSYS (Function not implemented)", "", "this kernel has no io_uring (CONFIG_IO_URING off, or older than 5.4)", ""),
    ("EMFILE (Too many open files)", "0", "", ""),
])
def test_doctor_tap_io_says_per_frame_and_why_when_the_kernel_refuses_a_ring(
        error: str, disabled: str, words: str, hint: str) -> None:
    report = doctor.tap_io_report(lambda: error, env="", disabled_text=disabled)
    assert report.mode == "readv" and report.io_uring_error == error
    assert report.io_uring_disabled == (int(disabled) if disabled else None)
    f = doctor.tap_io_finding(report)
    assert f.check == "tap io" and f.status == "warn"
    assert f.message == (f"tap I/O: one readv/writev per frame: io_uring_setup failed with {error}"
                         + (f": {words}" if words else ""))
    assert (hint in f.hint) if hint else f.hint == ""


def test_doctor_tap_io_is_ok_when_the_trial_ring_works_and_warns_when_the_environment_asks_for_readv() -> None:
    ok = doctor.tap_io_report(lambda: None, env="", disabled_text="0")
    assert (ok.mode, ok.reason, ok.hint) == ("uring", "", "")
    assert doctor.tap_io_finding(ok) == doctor.Finding("tap io", "ok", "tap I/O: batched through an io_uring")
    forced = doctor.tap_io_report(_no_probe, env="readv", disabled_text="0")
    f = doctor.tap_io_finding(forced)
    assert forced.mode == "readv" and f.status == "warn"
    assert f.message == "tap I/O: one readv/writev per frame: HVUIO_TAP_IO=readv in this environment asks for it"
    assert "Unset HVUIO_TAP_IO" in f.hint


def test_doctor_tap_io_follows_the_pumps_probe_in_text_and_json(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from hvuio.native.datapath_config import TAP_IO_ENV, tap_io_probe

    assert doctor.TAP_IO_ENV == TAP_IO_ENV
    monkeypatch.delenv(TAP_IO_ENV, raising=False)
    error = tap_io_probe()
    with SimKernel(tmp_path, "6.17", nics=1):
        res = CliRunner().invoke(cli, ["--sysroot", str(tmp_path), "doctor", "--json"])
        assert res.exit_code == 0, res.output
        data = json.loads(res.output)
        tap = data["tap_io"]
        assert tap["batched"] == (error is None) and tap["io_uring_error"] == error
        assert tap["mode"] == ("uring" if error is None else "readv")
        finding = next(f for f in data["findings"] if f["check"] == "tap io")
        assert finding["status"] == ("ok" if error is None else "warn") and finding["source"] == ""
        monkeypatch.setenv(TAP_IO_ENV, "readv")
        text = CliRunner().invoke(cli, ["--sysroot", str(tmp_path), "doctor"])
        assert text.exit_code == 0, text.output
        lines = text.output.splitlines()
        at = lines.index("[WARN] tap I/O: one readv/writev per frame: HVUIO_TAP_IO=readv in this environment "
                         "asks for it")
        assert lines[at + 1].strip() == "hint: Unset HVUIO_TAP_IO to batch tap I/O through an io_uring."


def test_doctor_tap_io_on_a_tree_of_another_machine_says_it_is_the_running_machines(tmp_path: Path) -> None:
    findings, _ = doctor.diagnose(tmp_path, tap=doctor.tap_io_report(lambda: None, env="", disabled_text="0"))
    f = next(f for f in findings if f.check == "tap io")
    assert f.source == doctor.RUNNING_MACHINE and f.message.endswith("(the running machine's kernel)")
    assert "tap io" in doctor.as_json(findings, "next")["from_running_machine"]


def test_doctor_tap_io_without_the_c_core_says_per_frame_and_how_to_build_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    from hvuio.errors import PlatformError

    missing = types.ModuleType("hvuio.native.datapath_config")

    def refuse(name: str) -> object:
        raise PlatformError("the C core hvuio._native is not built or cannot load: no such file",
                            hint="Run 'pip install -e .' (needs gcc and python3-dev).")

    missing.__getattr__ = refuse  # type: ignore[method-assign]
    monkeypatch.setitem(sys.modules, "hvuio.native.datapath_config", missing)
    report = doctor.tap_io_report(env="", disabled_text="0")
    f = doctor.tap_io_finding(report)
    assert report.mode == "readv" and report.io_uring_error is None and f.status == "warn"
    assert f.message == ("tap I/O: one readv/writev per frame: the C core cannot load (the C core hvuio._native "
                         "is not built or cannot load: no such file)")
    assert f.hint == "Run 'pip install -e .' (needs gcc and python3-dev)."
