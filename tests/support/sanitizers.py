"""The ASan/UBSan build of the C core and a child Python that runs under it.

`build_asan(out)` compiles the sanitizer variant (HVUIO_SANITIZE=1, module hvuio._native_asan)
into a temporary directory; `run_child(asan_dir, code)` runs `code` in a child Python with libasan
preloaded (ASAN_OPTIONS=detect_leaks=0: CPython itself leaks by design) and HVUIO_NATIVE=asan, so
any out-of-bounds access or undefined behaviour aborts the child. LIBASAN is None where gcc or
its libasan is missing; the tests using these skip then. The `asan_dir` fixture is in
tests/native/conftest.py.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

from support.paths import ROOT


def _libasan() -> str | None:
    if shutil.which("gcc") is None:
        return None
    out = subprocess.run(["gcc", "-print-file-name=libasan.so"], capture_output=True, text=True)
    path = out.stdout.strip()
    return path if out.returncode == 0 and os.path.isabs(path) and os.path.exists(path) else None


LIBASAN = _libasan()
SKIP_REASON = "needs gcc with libasan (apt-get install gcc)"


def build_asan(out: pathlib.Path) -> pathlib.Path:
    """Build hvuio._native_asan into `out`; the directory holding it (to append to hvuio.__path__)."""
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
