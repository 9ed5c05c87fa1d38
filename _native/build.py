"""cffi builder for hvuio._native (API mode, out of line).

The cdef comes from hvuio_api.h (declarations only, no preprocessor lines), and the C sources
include hvuio.h, which includes the same file: the compiler and cffi see one set of declarations.

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


def make_builder(sanitize: bool = SANITIZE) -> cffi.FFI:
    ffi = cffi.FFI()
    ffi.cdef((HERE / "hvuio_api.h").read_text())
    flags = list(CFLAGS)
    link: list[str] = []
    if sanitize:
        flags = [f for f in flags if not f.startswith("-O")]
        flags += ["-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined",
                  "-fno-sanitize-recover=undefined"]
        link = ["-fsanitize=address,undefined"]
    ffi.set_source(
        "hvuio._native_asan" if sanitize else "hvuio._native",
        '#include "hvuio.h"',
        sources=SOURCES,
        include_dirs=["_native"],
        extra_compile_args=flags,
        extra_link_args=link,
    )
    return ffi


ffibuilder = make_builder()

if __name__ == "__main__":
    os.chdir(HERE.parent)
    ffibuilder.compile(verbose=True)
