"""Fixtures of the wire-layout tests: the golden layouts as a fresh dict per session."""

from __future__ import annotations

import json
from typing import Any

import pytest

from support.paths import GOLDEN_PATH


@pytest.fixture(scope="session")
def golden() -> dict[str, Any]:
    """Sizes, offsets and constants compiled from DPDK's and Linux's public netvsc/VMBus headers."""
    return json.loads(GOLDEN_PATH.read_text())  # type: ignore[no-any-return]
