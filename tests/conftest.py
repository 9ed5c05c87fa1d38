"""Fixtures of more than one folder: per-test network namespaces, and the guest engine running
against the emulator between two of them.

Fixtures used by one folder only live in that folder's conftest.py; helpers (not fixtures) live
in tests/support/, which pytest makes importable (``pythonpath`` in pyproject.toml).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from support.engine_stack import Running, running_engine
from support.namespaces import NetnsFactory, require_netns


@pytest.fixture
def netns_factory() -> Iterator[NetnsFactory]:
    """Namespaces for one test, all undone afterwards and checked for leaks (skips without root,
    /dev/net/tun or iproute2)."""
    require_netns()
    factory = NetnsFactory()
    try:
        yield factory
    finally:
        factory.finish()


@pytest.fixture
def running(netns_factory: NetnsFactory, tmp_path: Path) -> Iterator[Running]:
    """The guest engine (tap in one namespace) running against the emulator, whose HostNetwork
    tap is in another namespace; see support.engine_stack."""
    with running_engine(netns_factory, tmp_path) as r:
        yield r
