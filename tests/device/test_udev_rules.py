"""udev/*.rules parse: `udevadm verify` when available, plus our own strict line parser.

The parser accepts only the keys and operators udev documents (udev(7)): match keys take
== / !=, assignment keys = / += / -= / :=, values are double-quoted, tokens comma-separated.
Commented-out rules (a '#' directly followed by a key) are parsed too, so the optional binding
rule stays valid when someone uncomments it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from support.paths import ROOT

RULES = sorted((ROOT / "udev").glob("*.rules"))
MATCH_ONLY = {"ACTION", "DEVPATH", "KERNEL", "KERNELS", "SUBSYSTEM", "SUBSYSTEMS", "DRIVER", "DRIVERS",
              "TAGS", "TEST", "PROGRAM", "RESULT", "CONST", "SYSCTL"}
ASSIGN_ONLY = {"OWNER", "GROUP", "MODE", "RUN", "LABEL", "GOTO", "IMPORT", "OPTIONS", "SECLABEL",
               "SYMLINK", "NAME", "WAIT_FOR"}
BOTH = {"ATTR", "ATTRS", "ENV", "TAG", "SYSCTL", "NAME", "SYMLINK"}
TOKEN = re.compile(r'\s*([A-Z_]+)(\{[^}]+\})?\s*(==|!=|\+=|-=|:=|=)\s*"((?:[^"\\]|\\.)*)"\s*(,|$)')


def parse_rule(line: str) -> list[tuple[str, str | None, str, str]]:
    """Tokens of one rule line; ValueError naming the column and the rule broken."""
    out: list[tuple[str, str | None, str, str]] = []
    pos = 0
    while pos < len(line):
        m = TOKEN.match(line, pos)
        if not m:
            raise ValueError(f"cannot parse token at column {pos}: {line[pos:pos + 30]!r}")
        key, attr, op, value, _ = m.groups()
        if attr and key not in {"ATTR", "ATTRS", "ENV", "TEST", "SYSCTL", "IMPORT", "RUN"}:
            raise ValueError(f"{key} takes no {{}} argument")
        if key in ("ATTR", "ATTRS", "ENV", "SYSCTL") and not attr:
            raise ValueError(f"{key} needs an {{attribute}}")
        is_match = op in ("==", "!=")
        if key in MATCH_ONLY and not is_match and key not in BOTH:
            raise ValueError(f"{key} is a match key; {op} is an assignment")
        if key in ASSIGN_ONLY and is_match and key not in BOTH:
            raise ValueError(f"{key} is an assignment key; {op} is a match")
        if key not in MATCH_ONLY | ASSIGN_ONLY | BOTH:
            raise ValueError(f"unknown key {key}")
        if key == "MODE" and not re.fullmatch(r"0?[0-7]{3,4}", value):
            raise ValueError(f"MODE {value!r} is not octal")
        if key == "ATTRS" and not is_match:
            raise ValueError("ATTRS can only be matched")
        out.append((key, attr, op, value))
        pos = m.end()
    if not any(op in ("==", "!=") for _, _, op, _ in out):
        raise ValueError("rule has no match key")
    return out


def rule_lines(path: Path) -> list[str]:
    lines: list[str] = []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            body = line[1:]
            if re.match(r"[A-Z_]+(\{[^}]*\})?(==|!=|\+=|:=|=)", body):  # commented-out rule
                lines.append(body)
            continue
        lines.append(line)
    return lines


def test_rules_exist() -> None:
    assert RULES, "udev/*.rules missing"


@pytest.mark.parametrize("path", RULES, ids=lambda p: p.name)
def test_rules_parse_strictly(path: Path) -> None:
    lines = rule_lines(path)
    assert len(lines) >= 3
    parsed = [parse_rule(line) for line in lines]
    perms = [p for p in parsed if ("SUBSYSTEM", None, "==", "uio") in p]
    assert perms and ("GROUP", None, "=", "hvuio") in perms[0] and ("MODE", None, "=", "0660") in perms[0]
    override = [p for p in parsed if ("ATTR", "{driver_override}", "=", "uio_hv_generic") in p]
    assert override, "the commented persistent-binding rule must set driver_override"
    assert any(k == "ATTR" and a == "{class_id}" and op == "==" for k, a, op, _ in override[0])


def test_parser_rejects_bad_rules() -> None:
    for bad in ('SUBSYSTEM="uio", MODE="0660"',  # assignment to a match key, no match
                'SUBSYSTEM=="uio", GROUP=="hvuio"',  # match on an assignment key
                'SUBSYSTEM=="uio", MODE="rw"',
                'SUBSYSTEM=="uio" GROUP="x"',  # missing comma
                'SUBSYSTEM=="uio", ATTR="x"',
                'SUBSYSTEM=="uio", BOGUS="x"',
                "SUBSYSTEM=='uio'"):
        with pytest.raises(ValueError):
            parse_rule(bad)


def _udevadm_verify_reason() -> str | None:
    exe = shutil.which("udevadm")
    if exe is None:
        return "udevadm not installed"
    out = subprocess.run([exe, "verify", "--help"], capture_output=True, text=True)
    return None if out.returncode == 0 else "this udevadm has no 'verify' (systemd < 254)"


@pytest.mark.skipif(_udevadm_verify_reason() is not None, reason=str(_udevadm_verify_reason()))
@pytest.mark.parametrize("path", RULES, ids=lambda p: p.name)
def test_udevadm_verify(path: Path, tmp_path: Path) -> None:
    out = subprocess.run(["udevadm", "verify", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    uncommented = tmp_path / path.name
    uncommented.write_text("\n".join(rule_lines(path)) + "\n")
    out = subprocess.run(["udevadm", "verify", str(uncommented)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
