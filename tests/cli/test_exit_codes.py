"""The exit-code table: every code an HvuioError returns is in hvuio.errors.EXIT_CODES, the README
shows the same table, and `hvuio doctor --help` names the code it exits with when a check fails."""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner

from hvuio import errors
from hvuio.cli import cli
from hvuio.device import doctor

README = Path(__file__).resolve().parents[2] / "README.md"


def _subclasses(cls: type) -> list[type]:
    out = []
    for sub in cls.__subclasses__():
        out += [sub, *_subclasses(sub)]
    return out


def test_every_error_class_returns_a_listed_code() -> None:
    listed = {code for code, _ in errors.EXIT_CODES}
    for cls in [errors.HvuioError, *_subclasses(errors.HvuioError)]:
        assert cls.exit_code in listed, cls.__name__
    assert doctor.EXIT_FAILED in listed
    codes = [code for code, _ in errors.EXIT_CODES]
    assert codes == sorted(set(codes))


def test_the_readme_shows_the_same_table() -> None:
    rows = re.findall(r"^\| (\d+) \| (.+) \|$", README.read_text(), re.MULTILINE)
    assert [(int(c), m) for c, m in rows] == list(errors.EXIT_CODES)


def test_doctor_help_names_its_exit_codes() -> None:
    res = CliRunner().invoke(cli, ["doctor", "--help"])
    assert res.exit_code == 0
    text = " ".join(res.output.split())
    assert "Exit status: 0 when no check failed" in text and f"{doctor.EXIT_FAILED} when a check failed" in text
