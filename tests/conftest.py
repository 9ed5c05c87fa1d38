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
GOLDEN = ROOT / "tests" / "golden" / "wire-layouts.json"


@pytest.fixture(scope="session")
def golden() -> dict[str, Any]:
    """Sizes, offsets and constants compiled from DPDK's and Linux's public netvsc/VMBus headers."""
    return json.loads(GOLDEN.read_text())  # type: ignore[no-any-return]


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
