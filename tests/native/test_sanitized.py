"""The C core's tests again, against its ASan/UBSan build (hvuio._native_asan).

The sanitizer module is built with HVUIO_SANITIZE=1 into a temporary directory, then a child
Python with libasan preloaded (ASAN_OPTIONS=detect_leaks=0: CPython itself leaks by design) runs
a suite with HVUIO_NATIVE=asan: the ring tests (test_ring*.py, test_native.py and
wire/test_wire_vmbus.py), the data-path tests (rx.c / tx.c / tx_gpa.c / datapath.c on hostile
host input, GPA-direct sends included)
and the offload tests (offload.c / tx.c / rx.c on vnet headers, GSO frames and RSC fragments).
Any out-of-bounds access or undefined behaviour aborts the child. A last check proves the
sanitizer is really armed. The build and the child: tests/support/sanitizers.py; the `asan_dir`
fixture: tests/native/conftest.py.
"""

from __future__ import annotations

import pathlib

import pytest

from support.sanitizers import LIBASAN, SKIP_REASON, run_child

pytestmark = pytest.mark.skipif(LIBASAN is None, reason=SKIP_REASON)

#: pytest arguments of each suite the child runs (paths from the repository root)
SUITES = {
    "ring": ["--capture=sys", "tests/native/test_ring.py", "tests/native/test_ring_props.py",
             "tests/native/test_ring_signal.py", "tests/native/test_native.py", "tests/wire/test_wire_vmbus.py"],
    "datapath": ["tests/native/test_datapath_rx.py", "tests/native/test_datapath_tx.py",
                 "tests/native/test_datapath_run.py", "tests/native/test_datapath_tap.py",
                 "tests/native/test_datapath_fuzz.py", "tests/native/test_datapath_tx_agg.py",
                 "tests/native/test_datapath_gpa.py", "tests/native/test_trace_capture.py",
                 "tests/native/test_datapath_tapio.py"],
    "offload": ["tests/native/test_offload_guest_tx.py", "tests/native/test_offload_guest_rx.py"],
}


@pytest.mark.parametrize("suite", list(SUITES))
def test_suite_under_asan(asan_dir: pathlib.Path, suite: str) -> None:
    code = (
        "import hvuio.native as n\n"
        "assert n.MODULE_NAME == 'hvuio._native_asan', n.MODULE_NAME\n"
        "import pytest\n"
        f"sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', *{SUITES[suite]!r}]))\n"
    )
    child = run_child(asan_dir, code)
    tail = child.stdout[-3000:] + child.stderr[-3000:]
    assert child.returncode == 0, tail
    assert "passed" in child.stdout and "failed" not in child.stdout
    assert "AddressSanitizer" not in child.stderr and "runtime error" not in child.stderr


def test_bench_loop_under_asan(asan_dir: pathlib.Path) -> None:
    code = (
        "import hvuio.native.ring as n\n"
        "for size in (0, 64, 1514, 65536):\n"
        "    assert n.bench(size, 2000, ring_size=4096 + 262144) == 2000\n"
        "    assert n.bench(size, 2000, ring_size=4096 + 262144, baseline=True) == 2000\n"
        "print('ok')\n"
    )
    child = run_child(asan_dir, code)
    assert child.returncode == 0 and "ok" in child.stdout, child.stderr[-3000:]


def test_sanitizer_is_armed(asan_dir: pathlib.Path) -> None:
    """A segment that claims more bytes than its buffer holds must abort the child under ASan."""
    code = (
        "import hvuio.native as n\n"
        "from hvuio.native.ring import Direction, Ring\n"
        "mem = bytearray(4096 + 4096)\n"
        "r = Ring(mem, direction=Direction.TX)\n"
        "src = n.ffi.new('uint8_t[]', 8)\n"
        "seg = n.ffi.new('struct hvu_seg *', {'ptr': src, 'len': 64})\n"
        "n.lib.hvu_ring_write(r.cptr, seg, 1, n.ffi.NULL)\n"
        "print('not caught')\n"
    )
    child = run_child(asan_dir, code)
    assert child.returncode != 0 and "not caught" not in child.stdout
    assert "AddressSanitizer" in child.stderr and "heap-buffer-overflow" in child.stderr
