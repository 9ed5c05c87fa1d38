"""The transition tables of hvuio/proto/states.py and their rendering by scripts/state_diagram.py."""

from __future__ import annotations

import pathlib
import subprocess
import sys
from enum import Enum
from typing import Any

import pytest

from hvuio.errors import LocalProtocolError
from hvuio.proto.states import (
    FINAL_STATES, NVSP_TRANSITIONS, RNDIS_TRANSITIONS, NvspInput, NvspState, RndisInput,
    RndisState, advance,
)

from support.paths import ROOT

SCRIPT = ROOT / "scripts" / "state_diagram.py"
TABLES: list[tuple[Any, type[Enum], type[Enum]]] = [(NVSP_TRANSITIONS, NvspState, NvspInput), (RNDIS_TRANSITIONS, RndisState, RndisInput)]


@pytest.mark.parametrize("table,states,inputs", TABLES, ids=["nvsp", "rndis"])
def test_every_state_reachable_and_every_input_used(table: dict[tuple[Enum, Enum], Enum],
                                                    states: type[Enum],
                                                    inputs: type[Enum]) -> None:
    reached = {states["IDLE"]}
    frontier = [states["IDLE"]]
    while frontier:
        here = frontier.pop()
        for (src, _), dst in table.items():
            if src is here and dst not in reached:
                reached.add(dst)
                frontier.append(dst)
    assert reached | {states["ERROR"]} == set(states)  # ERROR is entered by the rule in code
    assert {inp for _, inp in table} == set(inputs)
    assert not any(src in FINAL_STATES for src, _ in table), "final states accept nothing"


@pytest.mark.parametrize("table,states,inputs", TABLES, ids=["nvsp", "rndis"])
def test_moves_not_in_the_table_raise(table: dict[tuple[Enum, Enum], Enum], states: type[Enum],
                                      inputs: type[Enum]) -> None:
    for state in states:
        for inp in inputs:
            if (state, inp) in table:
                assert advance(table, state, inp) is table[(state, inp)]
            else:
                with pytest.raises(LocalProtocolError, match=f"'{inp.value}' is not allowed"):
                    advance(table, state, inp)


@pytest.mark.parametrize("fmt", ["mermaid", "dot"])
def test_state_diagram_renders_every_edge(fmt: str) -> None:
    out = subprocess.run([sys.executable, str(SCRIPT), "--format", fmt], check=True,
                         capture_output=True, text=True).stdout
    arrow = "-->" if fmt == "mermaid" else "->"
    for table, _, _ in TABLES:
        for (src, inp), dst in table.items():
            if fmt == "mermaid":
                assert f"{src.name} {arrow} {dst.name}: {inp.value}" in out
            else:
                assert f'{src.name} {arrow} {dst.name} [label="{inp.value}"' in out
    assert out.count("any error") == sum(
        1 for _, states, _ in TABLES for s in states if s not in FINAL_STATES)


ALLOWED_IMPORTS = {"__future__", "ctypes", "struct", "collections", "collections.abc",
                   "dataclasses", "enum", "typing", "hvuio.errors", "hvuio.proto",
                   "hvuio.wire"}


@pytest.mark.parametrize("path", sorted((SCRIPT.parent.parent / "hvuio" / "proto").glob("*.py"))
                         + [SCRIPT.parent.parent / "hvuio" / "wire" / n
                            for n in ("nvsp.py", "rndis.py")], ids=lambda p: p.name)
def test_proto_and_wire_are_sans_io(path: pathlib.Path) -> None:
    """No clock, fd, ring or tap: proto/ and wire/ import only the stdlib data modules above."""
    import ast

    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        else:
            continue
        for name in names:
            assert any(name == ok or name.startswith(ok + ".") for ok in ALLOWED_IMPORTS), \
                f"{path.name} imports {name}"
