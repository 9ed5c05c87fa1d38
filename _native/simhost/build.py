"""cffi builder for hvuio.sim._simhost, the emulated host's data path in C (API mode, out of line).

Independent of _native/build.py on purpose: no source or header of the guest's C core is
compiled or included here (the emulator must not share ring code with the guest it checks).
The cdef comes from simhost_api.h; every .c here is compiled (simhost.c, simhost_rx.c,
simhost_tx.c, offload.c, irq.c) and includes simhost.h, which includes the same file.
"""

from __future__ import annotations

import pathlib

import cffi

HERE = pathlib.Path(__file__).resolve().parent
CFLAGS = ["-std=c11", "-O2", "-Wall", "-Wextra", "-Wvla", "-Werror=implicit-function-declaration"]


def make_builder(absolute: bool = False) -> cffi.FFI:
    """absolute=True names sources by absolute path (ffi.compile() runs in its tmpdir)."""
    ffi = cffi.FFI()
    ffi.cdef((HERE / "simhost_api.h").read_text())
    ffi.set_source(
        "hvuio.sim._simhost",
        '#include "simhost.h"',
        sources=[str(f) if absolute else f"_native/simhost/{f.name}" for f in sorted(HERE.glob("*.c"))],
        include_dirs=[str(HERE)] if absolute else ["_native/simhost"],
        extra_compile_args=CFLAGS,
    )
    return ffi


ffibuilder = make_builder()
