"""The ring tests again, against the ASan/UBSan build of the C core (hvuio._native_asan).

The sanitizer module is built with HVUIO_SANITIZE=1 into a temporary directory, then a child
Python with libasan preloaded (ASAN_OPTIONS=detect_leaks=0: CPython itself leaks by design) runs
test_ring*.py and test_native.py with HVUIO_NATIVE=asan. Any out-of-bounds access or undefined
behaviour aborts the child. A last check proves the sanitizer is really armed.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _libasan() -> str | None:
    if shutil.which("gcc") is None:
        return None
    out = subprocess.run(["gcc", "-print-file-name=libasan.so"], capture_output=True, text=True)
    path = out.stdout.strip()
    return path if out.returncode == 0 and os.path.isabs(path) and os.path.exists(path) else None


LIBASAN = _libasan()
pytestmark = pytest.mark.skipif(LIBASAN is None, reason="needs gcc with libasan (apt-get install gcc)")


@pytest.fixture(scope="module")
def asan_dir(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("asan")
    env = dict(os.environ, HVUIO_SANITIZE="1")
    build = subprocess.run([sys.executable, str(ROOT / "_native" / "build.py"), str(out)], cwd=ROOT, env=env,
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-3000:]
    assert list((out / "hvuio").glob("_native_asan*.so")), "build produced no hvuio/_native_asan*.so"
    return out / "hvuio"


def run_child(asan_dir: pathlib.Path, code: str) -> subprocess.CompletedProcess[str]:
    prelude = f"import hvuio, sys; hvuio.__path__.append({str(asan_dir)!r})\n"
    env = dict(os.environ, HVUIO_NATIVE="asan", LD_PRELOAD=str(LIBASAN), PYTHONMALLOC="malloc",
               ASAN_OPTIONS="detect_leaks=0:abort_on_error=1",
               UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1")
    return subprocess.run([sys.executable, "-c", prelude + code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900)


def test_ring_suite_under_asan(asan_dir: pathlib.Path) -> None:
    code = (
        "import hvuio.native as n\n"
        "assert n.MODULE_NAME == 'hvuio._native_asan', n.MODULE_NAME\n"
        "import pytest\n"
        "sys.exit(pytest.main(['-q', '--capture=sys', '-p', 'no:cacheprovider', 'tests/test_ring.py', 'tests/test_ring_props.py',\n"
        "                      'tests/test_ring_signal.py', 'tests/test_native.py', 'tests/test_wire_vmbus.py']))\n"
    )
    child = run_child(asan_dir, code)
    tail = (child.stdout[-3000:] + child.stderr[-3000:])
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
