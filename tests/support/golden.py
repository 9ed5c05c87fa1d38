"""The golden wire layouts (tests/golden/wire-layouts.json), loaded once, and their accessors.

The golden file holds sizes, offsets and constants compiled from DPDK's and Linux's public
netvsc/VMBus headers. Tests pack and read messages with `struct` from these numbers, never with
hvuio.wire, so a layout misread in the code cannot be mirrored by the tests. Nothing here knows a
message type: the builders live in the modules that use them (nvsp_host, rndis_host, simhost).
"""

from __future__ import annotations

import json
import struct
from typing import Any

from support.paths import GOLDEN_PATH

GOLDEN: dict[str, Any] = json.loads(GOLDEN_PATH.read_text())


def size(struct_name: str) -> int:
    return int(GOLDEN["structs"][struct_name]["size"])


def off(struct_name: str, field: str) -> int:
    for f in GOLDEN["structs"][struct_name]["fields"]:
        if f["name"] == field:
            return int(f["offset"])
    raise KeyError(field)


def pack(struct_name: str, **fields: int) -> bytes:
    """A message laid out by the golden struct (u32 fields, rest zero)."""
    raw = bytearray(size(struct_name))
    for name, value in fields.items():
        struct.pack_into("<I", raw, off(struct_name, name), value)
    return bytes(raw)
