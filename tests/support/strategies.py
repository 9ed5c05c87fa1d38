"""Hypothesis strategies for the bytes a hostile host sends the guest.

`nvsp_payload()` draws NVSP messages, `rndis_message()` RNDIS control messages: mostly a known
type followed by words that sit on the machines' boundaries (sizes, offsets, counts, statuses,
versions), sometimes cut short, sometimes plain random bytes. Used by the machines' fuzz tests
(tests/proto/test_proto_fuzz.py) and the hostile-host channel tests (tests/nic).
"""

from __future__ import annotations

import struct
from typing import Any

from hypothesis import strategies as st

U32 = st.integers(0, 0xFFFFFFFF)
# Values that sit on the machines' boundaries: sizes, offsets, counts, statuses, versions.
INTERESTING = st.sampled_from([0, 1, 2, 3, 4, 5, 6, 7, 8, 11, 12, 13, 16, 17, 20, 23, 24, 28, 36,
                               40, 0x40, 64, 68, 104, 112, 144, 155, 156, 157, 1500, 1728, 6144,
                               0xCAFE, 0x60000, 0x60001, 0x80000002, 0xC0000001, 0xFFFFFFFF])
SMALL = st.sampled_from([0, 1, 2, 4, 12, 16, 40, 60, 64, 100])
WORD = st.one_of(INTERESTING, INTERESTING, INTERESTING, U32)
FIELDS = st.lists(WORD, max_size=40)
NVSP_TYPES = st.one_of(st.sampled_from([1, 2, 100, 101, 102, 103, 104, 105, 106, 107, 108, 125,
                                        128, 129, 130, 133, 134]),
                       st.sampled_from([2, 102, 105, 108, 128, 133, 134]), U32)
RNDIS_TYPES = st.one_of(st.sampled_from([1, 2, 3, 4, 5, 6, 7, 8, 0x80000002, 0x80000004,
                                         0x80000005, 0x80000006, 0x80000008]),
                        st.sampled_from([0x80000002, 0x80000004, 0x80000005, 7, 8]), U32)


@st.composite
def nvsp_payload(draw: Any) -> bytes:
    if draw(st.integers(0, 5)) == 0:
        return bytes(draw(st.binary(max_size=300)))
    raw = struct.pack("<I", draw(NVSP_TYPES))
    # small head words make counts, sections and offsets plausible (e.g. the table's count 16)
    raw += b"".join(struct.pack("<I", f) for f in draw(st.lists(SMALL, max_size=3)))
    raw += b"".join(struct.pack("<I", f) for f in draw(FIELDS))
    return raw[:draw(st.integers(0, len(raw)))] if draw(st.booleans()) else raw


@st.composite
def rndis_message(draw: Any) -> bytes:
    if draw(st.integers(0, 5)) == 0:
        return bytes(draw(st.binary(max_size=200)))
    body = b"".join(struct.pack("<I", f) for f in draw(FIELDS))
    rid = draw(st.one_of(st.integers(0, 16), U32))
    full = 12 + len(body)
    length = draw(st.one_of(st.just(full), st.just(full), st.integers(0, full), WORD))
    raw = struct.pack("<III", draw(RNDIS_TYPES), length, rid) + body
    return raw[:draw(st.integers(0, len(raw)))] if draw(st.integers(0, 5)) == 0 else raw
