"""Hints name commands that can be pasted as they are: the command line's --sysroot (option,
--sysroot=, or HVUIO_SYSROOT; relative made absolute) is put into every 'hvuio …' a hint names."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hvuio.cli import _sysroot_of, with_sysroot


@pytest.mark.parametrize("argv, env, root", [
    (["list"], None, "/"),
    (["--sysroot", "/run/hvsim", "bind", "--sysroot", "x"], None, "/run/hvsim"),   # after the command: its own
    (["-v", "--sysroot=/run/hv sim", "up", "hveth0"], None, "/run/hv sim"),
    (["--debug", "status"], "/srv/tree", "/srv/tree"),
    (["--sysroot", "rel", "list"], None, os.path.abspath("rel")),
])
def test_sysroot_of_a_command_line(monkeypatch: pytest.MonkeyPatch, argv: list[str], env: str | None,
                                   root: str) -> None:
    monkeypatch.delenv("HVUIO_SYSROOT", raising=False)
    if env is not None:
        monkeypatch.setenv("HVUIO_SYSROOT", env)
    assert _sysroot_of(argv) == root


def test_hints_get_the_sysroot() -> None:
    hint = "Run 'hvuio list', then 'hvuio bind eth1'; or hvuio --sysroot DIR sim stop."
    assert with_sysroot(hint, "/") == hint
    assert with_sysroot(hint, "/run/hv sim") == ("Run 'hvuio --sysroot '/run/hv sim' list', then 'hvuio --sysroot "
                                                 "'/run/hv sim' bind eth1'; or hvuio --sysroot '/run/hv sim' sim stop.")
    named = "Start it with 'hvuio --sysroot /run/hvsim sim start'."
    assert with_sysroot(named, "/run/hvsim") == named       # already there: not twice


def test_relative_sysroot_in_a_hint_is_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert with_sysroot("'hvuio list'", _sysroot_of(["--sysroot", "tree", "list"])) == f"'hvuio --sysroot {tmp_path}/tree list'"
