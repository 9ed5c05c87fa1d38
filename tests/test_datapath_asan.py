"""The data-path tests again, against the ASan/UBSan build of the C core (HVUIO_NATIVE=asan),
with the build and child-process mechanism of tests/test_sanitized.py. Any out-of-bounds access
or undefined behaviour in rx.c / tx.c / datapath.c on hostile host input aborts the child."""

from __future__ import annotations

import pathlib

import pytest

from test_sanitized import LIBASAN, asan_dir, run_child  # noqa: F401  (asan_dir is a fixture)

pytestmark = pytest.mark.skipif(LIBASAN is None, reason="needs gcc with libasan (apt-get install gcc)")


def test_datapath_suite_under_asan(asan_dir: pathlib.Path) -> None:  # noqa: F811
    code = (
        "import hvuio.native as n\n"
        "assert n.MODULE_NAME == 'hvuio._native_asan', n.MODULE_NAME\n"
        "import pytest\n"
        "sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', 'tests/test_datapath_rx.py',\n"
        "                      'tests/test_datapath_tx.py', 'tests/test_datapath_run.py',\n"
        "                      'tests/test_datapath_tap.py', 'tests/test_datapath_fuzz.py',\n"
        "                      'tests/test_datapath_tx_agg.py']))\n"
    )
    child = run_child(asan_dir, code)
    tail = child.stdout[-3000:] + child.stderr[-3000:]
    assert child.returncode == 0, tail
    assert "passed" in child.stdout and "failed" not in child.stdout
    assert "AddressSanitizer" not in child.stderr and "runtime error" not in child.stderr
