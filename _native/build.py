"""cffi builder for hvuio._native (API mode, out of line).

The cdef comes from hvuio_api.h, datapath_api.h and trace_api.h (declarations only, no
preprocessor lines), and the C sources include hvuio.h, datapath.h and trace.h, which include the
same files: the compiler and cffi see one set of declarations.

HVUIO_SANITIZE=1 builds the ASan/UBSan variant as hvuio._native_asan (see tests/test_sanitized.py).
"""

from __future__ import annotations

import os
import pathlib

import cffi

HERE = pathlib.Path(__file__).resolve().parent
# setuptools refuses absolute source paths: name them relative to the project root (setup.py's cwd).
SOURCES = sorted(f"_native/{p.name}" for p in HERE.glob("*.c"))
CFLAGS = ["-std=c11", "-O2", "-Wall", "-Wextra", "-Wvla", "-Werror=implicit-function-declaration"]
SANITIZE = os.environ.get("HVUIO_SANITIZE") == "1"


def make_builder(sanitize: bool = SANITIZE, absolute: bool = False) -> cffi.FFI:
    """absolute=True names sources by absolute path: ffi.compile() runs the compiler in its tmpdir."""
    ffi = cffi.FFI()
    ffi.cdef((HERE / "hvuio_api.h").read_text() + (HERE / "datapath_api.h").read_text()
             + (HERE / "trace_api.h").read_text())
    flags = list(CFLAGS)
    link: list[str] = []
    if sanitize:
        flags = [f for f in flags if not f.startswith("-O")]
        flags += ["-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined",
                  "-fno-sanitize-recover=undefined"]
        link = ["-fsanitize=address,undefined"]
    ffi.set_source(
        "hvuio._native_asan" if sanitize else "hvuio._native",
        '#include "hvuio.h"\n#include "datapath.h"',
        sources=[str(HERE.parent / s) for s in SOURCES] if absolute else SOURCES,
        include_dirs=[str(HERE)] if absolute else ["_native"],
        extra_compile_args=flags,
        extra_link_args=link,
    )
    return ffi


ffibuilder = make_builder()

if __name__ == "__main__":
    # python _native/build.py [OUTDIR]: build into OUTDIR/hvuio/ (default _native/_out) without
    # pip; tests/test_sanitized.py uses this with HVUIO_SANITIZE=1 and a temporary OUTDIR, then
    # appends OUTDIR/hvuio to hvuio.__path__ and sets HVUIO_NATIVE=asan.
    import sys

    out = pathlib.Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else HERE / "_out"
    os.chdir(HERE.parent)
    print(make_builder(absolute=True).compile(tmpdir=str(out), verbose=False))
