#!/usr/bin/env python3
"""Render the NVSP and RNDIS transition tables of hvuio/proto/states.py as a diagram.

    python scripts/state_diagram.py                 # mermaid (paste into the README)
    python scripts/state_diagram.py --format dot    # Graphviz: ... | dot -Tsvg > states.svg
    python scripts/state_diagram.py --machine nvsp

Reads the tables only; the diagram is exactly what advance() allows, plus the one rule kept in
code: every live state may fall into ERROR.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from enum import Enum
from typing import Any

from hvuio.proto.states import (
    FINAL_STATES, NVSP_TRANSITIONS, RNDIS_TRANSITIONS, NvspState, RndisState,
)

MACHINES: dict[str, tuple[Mapping[Any, Any], type[Enum]]] = {
    "nvsp": (NVSP_TRANSITIONS, NvspState),
    "rndis": (RNDIS_TRANSITIONS, RndisState),
}


def _edges(table: Mapping[Any, Any],
           states: type[Enum]) -> list[tuple[str, str, str]]:
    edges = [(src.name, dst.name, inp.value) for (src, inp), dst in table.items()]
    error = states["ERROR"]
    edges += [(s.name, error.name, "any error") for s in states
              if s not in FINAL_STATES]
    return edges


def mermaid(name: str) -> str:
    table, states = MACHINES[name]
    lines = ["stateDiagram-v2", f"    %% {name.upper()} guest machine (hvuio/proto/states.py)",
             f"    [*] --> {states['IDLE'].name}"]
    lines += [f"    {a} --> {b}: {label}" for a, b, label in _edges(table, states)]
    lines += [f"    {s.name} --> [*]" for s in states if s in FINAL_STATES]
    return "\n".join(lines) + "\n"


def dot(name: str) -> str:
    table, states = MACHINES[name]
    lines = [f"digraph {name} {{", "    rankdir=LR;", "    node [shape=box, style=rounded];"]
    lines += [f"    {s.name} [peripheries=2];" for s in states if s in FINAL_STATES]
    lines += [f'    {a} -> {b} [label="{label}"{", style=dashed" if label == "any error" else ""}];'
              for a, b, label in _edges(table, states)]
    return "\n".join(lines + ["}"]) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--format", choices=["mermaid", "dot"], default="mermaid")
    parser.add_argument("--machine", choices=[*MACHINES, "all"], default="all")
    args = parser.parse_args(argv)
    render = mermaid if args.format == "mermaid" else dot
    names = list(MACHINES) if args.machine == "all" else [args.machine]
    sys.stdout.write("\n".join(render(n) for n in names))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
