"""Fixtures of the C-core tests: a fake host around the data path, a stop pipe for data-path
runs, the ASan/UBSan build."""

from __future__ import annotations

import os
import pathlib
from collections.abc import Iterator

import pytest

from support.fakehost import FakeHost
from support.sanitizers import build_asan


@pytest.fixture
def host() -> Iterator[FakeHost]:
    """A FakeHost with the default geometry (tests/support/fakehost.py), closed afterwards."""
    h = FakeHost()
    yield h
    h.close()


@pytest.fixture
def stop_pipe() -> Iterator[tuple[int, int]]:
    """A pipe whose read end a data-path run polls as its stop fd."""
    r, w = os.pipe()
    yield r, w
    os.close(r)
    os.close(w)


@pytest.fixture(scope="module")
def asan_dir(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """hvuio/_native_asan*.so built for the requesting module (see support.sanitizers)."""
    return build_asan(tmp_path_factory.mktemp("asan"))
