"""hvuio doctor: CPUID parsing, sim tree, a machine without VMBus, runtime quirk detection."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from click.testing import CliRunner

from hvuio.cli import cli
from hvuio.device import doctor
from hvuio.device.bind import bind_device, resolve_device
from hvuio.device.uio import UioHandle
from hvuio.sim.kernel.bus import SimKernel


def test_cpuid_vendor_parsed_from_cpuid_device_layout(tmp_path: Path) -> None:
    fake = tmp_path / "cpuid"
    with open(fake, "wb") as f:
        f.seek(doctor.HV_CPUID_LEAF)
        f.write(struct.pack("<I", 0x4000000B) + b"Microsoft Hv")
    assert doctor.cpuid_vendor(fake) == "Microsoft Hv"
    assert doctor.cpuid_vendor(tmp_path / "missing") is None


def test_doctor_on_empty_root_says_use_emulator(tmp_path: Path) -> None:
    res = CliRunner().invoke(cli, ["--sysroot", str(tmp_path), "doctor", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert "hvuio demo" in data["next"] and not data["ok"]
    assert any(f["check"] == "vmbus" and f["status"] == "fail" for f in data["findings"])


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
