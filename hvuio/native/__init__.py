"""The C boundary: the only package that imports the compiled core hvuio._native.

What lives here: loading the compiled module (``HVUIO_NATIVE=asan`` selects the ASan/UBSan build
``hvuio._native_asan``), the ABI check, and what the wrappers share: `ffi` and `lib`, the sizes
the C core exports (read from `lib`, never retyped here), and the `Buffer` type the wrappers take.
The wrappers are the submodules: `hvuio.native.ring` (one VMBus ring direction, the pure signal
decisions, the monitor-page signal, the transfer-page check), `hvuio.native.datapath` (the C
packet pump of one channel, with `hvuio.native.datapath_config`: the values it is built from and
reports in) and `hvuio.native.trace` (the C writer of trace files).

What must not: protocol logic (NVSP/RNDIS live in ``hvuio.proto``), wire layouts (``hvuio.wire``
stays independent of the C core and is checked against the golden JSON instead), I/O on fds,
sleeping. Nothing outside this package imports ``hvuio._native`` (tests/test_layering.py); tests
that need raw C access for white-box checks use `ffi`/`lib` from here. The emulator (``hvuio.sim``)
never imports this package: it has its own C in _native/simhost.

Errors: a compiled module that is missing, of the wrong ABI version, or an unknown
``HVUIO_NATIVE`` value -> `PlatformError` at import, with a hint.
"""

from __future__ import annotations

import importlib
import mmap
import os
from typing import TYPE_CHECKING, Final, TypeAlias

from hvuio.errors import PlatformError

if TYPE_CHECKING:
    from hvuio._native import FFI, Lib

ABI_VERSION: Final = 6
"""The hvu_abi_version() this Python code needs (_native/version.c)."""

Buffer: TypeAlias = bytes | bytearray | memoryview | mmap.mmap
"""What the ring and its segments accept (collections.abc.Buffer needs Python 3.12)."""

_MODULES = {"": "hvuio._native", "default": "hvuio._native", "asan": "hvuio._native_asan"}


def _load() -> tuple[FFI, Lib, str]:
    which = os.environ.get("HVUIO_NATIVE", "")
    name = _MODULES.get(which)
    if name is None:
        raise PlatformError(f"HVUIO_NATIVE={which!r} is not one of {sorted(_MODULES)}",
                            hint="Unset HVUIO_NATIVE, or set it to 'asan' for the sanitizer build.")
    try:
        mod = importlib.import_module(name)
    except ImportError as exc:
        raise PlatformError(f"the C core {name} is not built or cannot load: {exc}",
                            hint="Run 'pip install -e .' (needs gcc and python3-dev).") from exc
    have = int(mod.lib.hvu_abi_version())
    if have != ABI_VERSION:
        raise PlatformError(f"the C core {name} has ABI version {have}, this hvuio needs {ABI_VERSION}",
                            hint="Rebuild it with 'pip install -e .'.")
    return mod.ffi, mod.lib, name


ffi, lib, MODULE_NAME = _load()

PAGE_SIZE: Final = mmap.PAGESIZE
"""The guest page size: a ring's header size (at least HV_PAGE_SIZE, a multiple of it)."""
HV_PAGE_SIZE: Final = int(lib.HVU_HV_PAGE_SIZE)
DESC_SIZE: Final = int(lib.HVU_DESC_SIZE)
"""Bytes of a VMBus packet descriptor (VMBUS.md §3.3)."""
TRAILER_SIZE: Final = int(lib.HVU_TRAILER_SIZE)
"""Bytes of the trailer after every packet in a ring (VMBUS.md §3.3)."""
MAX_LEN8: Final = int(lib.HVU_MAX_LEN8)
"""Largest len8: len8 is a u16 (VMBUS.md §3.3), a packet is at most MAX_LEN8 * 8 bytes."""
MONITOR_MAX_ID: Final = int(lib.HVU_MONITOR_MAX_ID)
"""Monitor ids 0..MONITOR_MAX_ID - 1 have a trigger bit (VMBUS.md §3.12)."""


__all__ = ["ABI_VERSION", "Buffer", "DESC_SIZE", "HV_PAGE_SIZE", "MAX_LEN8", "MODULE_NAME",
           "MONITOR_MAX_ID", "PAGE_SIZE", "TRAILER_SIZE", "ffi", "lib"]
