"""Shared fixtures: the golden wire layouts, capability checks for root-only tests, a stop pipe."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
GOLDEN_CANDIDATES = [
    ROOT / "tests" / "golden" / "wire-layouts.json",
    ROOT.parent / "shared" / "spec" / "golden" / "wire-layouts.json",
]


@pytest.fixture(scope="session")
def golden() -> dict[str, Any]:
    """The compiled DPDK/Linux layouts (shared/spec/golden), vendored under tests/golden for CI."""
    for path in GOLDEN_CANDIDATES:
        if path.exists():
            return json.loads(path.read_text())  # type: ignore[no-any-return]
    raise FileNotFoundError("wire-layouts.json not found in tests/golden or ../shared/spec/golden")


def have_netns() -> str | None:
    """None when this process can make network namespaces and taps, else the reason it cannot."""
    if os.geteuid() != 0:
        return "needs root"
    if not os.path.exists("/dev/net/tun"):
        return "needs /dev/net/tun"
    if shutil.which("ip") is None:
        return "needs iproute2 ('ip')"
    return None


@pytest.fixture
def stop_pipe() -> Iterator[tuple[int, int]]:
    """A pipe whose read end a data-path run polls as its stop fd."""
    r, w = os.pipe()
    yield r, w
    os.close(r)
    os.close(w)
