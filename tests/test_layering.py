"""Dependency direction between the layers (STYLE: wire <- proto <- engine; native <- channel <-
engine; the emulator independent of the guest; the compiled C core behind the hvuio.native
package alone), checked on the source with `ast`.

Why it matters: the emulator is our only test peer; if it imported the guest's protocol or ring
code, one bug could hide on both sides. And proto/ must stay sans-IO so its tests need no clock,
fd or ring.
"""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import pytest

PKG = pathlib.Path(__file__).resolve().parent.parent / "hvuio"

# Modules that do I/O or keep time: forbidden in the sans-IO layers.
IO_MODULES = {"os", "socket", "select", "selectors", "mmap", "time", "threading", "subprocess",
              "fcntl", "signal", "asyncio"}


def _modules() -> dict[str, set[str]]:
    """Every hvuio module -> the absolute module names it imports (top level and in functions)."""
    found: dict[str, set[str]] = {}
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG.parent).with_suffix("")
        name = ".".join(rel.parts).removesuffix(".__init__")
        imports: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                imports.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imports.add(node.module)
                imports.update(f"{node.module}.{alias.name}" for alias in node.names)
        found[name] = imports
    return found


MODULES = _modules()


def _importers(prefix: str) -> dict[str, set[str]]:
    return {m: {i for i in imps if i == prefix or i.startswith(prefix + ".")}
            for m, imps in MODULES.items()}


def test_modules_found() -> None:
    assert {"hvuio.native", "hvuio.native.ring", "hvuio.native.datapath", "hvuio.proto.nvsp", "hvuio.sim.vsp",
            "hvuio.engine"} <= MODULES.keys()


@pytest.mark.parametrize("layer", ["hvuio.proto", "hvuio.wire"])
def test_sans_io_layers_do_no_io(layer: str) -> None:
    for mod, imps in MODULES.items():
        if mod.startswith(layer):
            bad = {i.split(".")[0] for i in imps} & IO_MODULES
            assert not bad, f"{mod} imports {sorted(bad)}; {layer} must stay sans-IO"


def test_wire_and_proto_import_downwards_only() -> None:
    allowed = {"hvuio.wire": ("hvuio.errors", "hvuio.wire"),
               "hvuio.proto": ("hvuio.errors", "hvuio.wire", "hvuio.proto")}
    for mod, imps in MODULES.items():
        for layer, ok in allowed.items():
            if mod.startswith(layer):
                own = {i for i in imps if i.startswith("hvuio")}
                bad = {i for i in own if not i.startswith(ok)}
                assert not bad, f"{mod} imports {sorted(bad)}"


def test_emulator_is_independent_of_the_guest() -> None:
    guest = ("hvuio.proto", "hvuio.wire", "hvuio.native", "hvuio._native",
             "hvuio.channel", "hvuio.engine", "hvuio.device", "hvuio.sections", "hvuio.cli")
    # The network behind the host owns a real tap: it may use the tap/netns plumbing; the daemon
    # removes the namespace a killed daemon left. errors and safefs are foundations of both sides.
    extra = {"hvuio.sim.net": ("hvuio.tap", "hvuio.netns"), "hvuio.sim.daemon": ("hvuio.netns",)}
    for mod, imps in MODULES.items():
        if not mod.startswith("hvuio.sim"):
            continue
        bad = {i for i in imps if i.startswith(guest)}
        assert not bad, f"{mod} imports guest code {sorted(bad)}"
        allowed_extra = extra.get(mod, ())
        other = {i for i in imps if i.startswith("hvuio.") and not i.startswith(("hvuio.sim", "hvuio.errors", "hvuio.safefs"))
                 and not i.startswith(allowed_extra)}
        assert not other, f"{mod} imports {sorted(other)}"


def _in_native_package(mod: str) -> bool:
    return mod == "hvuio.native" or mod.startswith("hvuio.native.")


def test_only_native_wrappers_touch_the_compiled_module() -> None:
    """Only the package hvuio.native (its loader and its submodules) imports hvuio._native."""
    users = {m for m, imps in _importers("hvuio._native").items() if imps}
    assert all(_in_native_package(m) for m in users), users



def test_emulator_never_loads_the_guest_c_core() -> None:
    """Importing every emulator module, directly or through the tap/netns plumbing it may use,
    leaves the guest's C core and its wrappers unloaded (the emulator has its own C)."""
    code = ("import importlib, pkgutil, sys, hvuio.sim\n"
            "for m in pkgutil.walk_packages(hvuio.sim.__path__, 'hvuio.sim.'):\n"
            "    importlib.import_module(m.name)\n"
            "print(sorted(k for k in sys.modules if k.startswith(('hvuio.native', 'hvuio._native'))))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout

def test_guest_code_calls_c_through_the_wrappers_only() -> None:
    """Outside hvuio.native no module takes `ffi`/`lib` from it, by import or as ``native.lib``:
    the C core is called through the typed wrappers (tests may use the raw handles)."""
    raw = {"hvuio.native.ffi", "hvuio.native.lib"}
    for mod, imps in MODULES.items():
        if not _in_native_package(mod):
            assert not imps & raw, f"{mod} imports {sorted(imps & raw)}"
    for path in PKG.rglob("*.py"):
        rel = ".".join(path.relative_to(PKG.parent).with_suffix("").parts).removesuffix(".__init__")
        if _in_native_package(rel):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (isinstance(node, ast.Attribute) and node.attr in ("ffi", "lib")
                    and isinstance(node.value, ast.Name) and node.value.id == "native"):
                raise AssertionError(f"{rel} line {node.lineno} uses native.{node.attr}")


def test_only_tap_imports_pyroute2() -> None:
    users = {m for m, imps in _importers("pyroute2").items() if imps}
    assert users <= {"hvuio.tap"}, users


def test_the_guest_never_imports_the_emulator() -> None:
    """Only the emulator itself, the CLI and the demo may import hvuio.sim: the guest's half of the
    seam (hvuio.device.platform) stands on its own."""
    allowed = ("hvuio.sim", "hvuio.cli", "hvuio.demo")
    for mod, imps in _importers("hvuio.sim").items():
        if imps and not mod.startswith(allowed):
            raise AssertionError(f"{mod} imports {sorted(imps)}")


def test_both_halves_of_the_seam_agree_on_names(tmp_path: pathlib.Path) -> None:
    from hvuio.device import platform as guest
    from hvuio.sim import platform as emulator

    assert (guest.MARKER, guest.STATE_DIR) == (emulator.MARKER, emulator.STATE_DIR)
    assert guest.map_file(tmp_path, "uio3", 4) == emulator.map_backing(tmp_path, "uio3", 4)
