"""Dependency direction between the layers (STYLE: wire <- proto <- nic <- engine; native <- channel
<- nic; netdev (the Linux side) <- engine, knowing nothing of the protocol; the emulator
independent of the guest; the compiled C core behind the hvuio.native package alone; the CLI's
command modules added to the group by hvuio/cli/__init__.py, never importing it or each other, and
click nowhere but in hvuio/cli), checked on the source with `ast`.
The test tree keeps a direction too: test modules import helpers from tests/support (helpers only,
no tests, no fixtures) and fixtures come from conftest.py files, never from another test module.

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


def _within(mod: str, package: str) -> bool:
    return mod == package or mod.startswith(package + ".")


def test_modules_found() -> None:
    assert {"hvuio.native", "hvuio.native.ring", "hvuio.native.datapath", "hvuio.proto.nvsp", "hvuio.sim.vsp.host",
            "hvuio.sim.host.nvsp", "hvuio.sim.kernel.bus",
            "hvuio.proto.netvsc", "hvuio.proto.machine", "hvuio.proto.sections", "hvuio.nic", "hvuio.nicinfo",
            "hvuio.niclink", "hvuio.nicnotices", "hvuio.nicvf", "hvuio.linkwatch", "hvuio.engine",
            "hvuio.offloads", "hvuio.netdev.tap", "hvuio.netdev.netns", "hvuio.netdev.signals"} <= MODULES.keys()


@pytest.mark.parametrize("layer", ["hvuio.proto", "hvuio.wire"])
def test_sans_io_layers_do_no_io(layer: str) -> None:
    for mod, imps in MODULES.items():
        if mod.startswith(layer):
            bad = {i.split(".")[0] for i in imps} & IO_MODULES
            assert not bad, f"{mod} imports {sorted(bad)}; {layer} must stay sans-IO"


def test_health_watch_is_pure() -> None:
    """hvuio.health judges samples the engine hands it: no I/O, no clock, no hvuio module."""
    imps = MODULES["hvuio.health"]
    assert not {i.split(".")[0] for i in imps} & IO_MODULES and not {i for i in imps if i.startswith("hvuio")}


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
    guest = ("hvuio.proto", "hvuio.wire", "hvuio.native", "hvuio._native", "hvuio.channel", "hvuio.nic",
             "hvuio.nicinfo", "hvuio.engine", "hvuio.health", "hvuio.offloads", "hvuio.device", "hvuio.cli",
             "hvuio.trace")
    # The network behind the host owns a real tap: it may use the tap/netns plumbing; the daemon
    # removes the namespace a killed daemon left. errors and safefs are foundations of both sides.
    extra = {"hvuio.sim.net": ("hvuio.netdev.tap", "hvuio.netdev.netns"),
             "hvuio.sim.daemon": ("hvuio.netdev.netns",)}
    for mod, imps in MODULES.items():
        if not mod.startswith("hvuio.sim"):
            continue
        bad = {i for i in imps if i.startswith(guest)}
        assert not bad, f"{mod} imports guest code {sorted(bad)}"
        allowed_extra = extra.get(mod, ())
        other = {i for i in imps if i.startswith("hvuio.") and not i.startswith(("hvuio.sim", "hvuio.errors", "hvuio.safefs"))
                 and not i.startswith(allowed_extra) and not (allowed_extra and i == "hvuio.netdev")}
        assert not other, f"{mod} imports {sorted(other)}"


def test_netdev_knows_no_protocol() -> None:
    """hvuio.netdev (tap, namespaces, signals) is the Linux side: it imports nothing of the protocol,
    the rings, the device layer or the modules that drive the NIC (the emulator uses it too)."""
    above = ("hvuio.wire", "hvuio.proto", "hvuio.native", "hvuio._native", "hvuio.device",
             "hvuio.channel", "hvuio.nic", "hvuio.nicinfo", "hvuio.niclink", "hvuio.nicnotices", "hvuio.nicvf",
             "hvuio.linkwatch", "hvuio.vfwatch", "hvuio.engine", "hvuio.health", "hvuio.offloads", "hvuio.up", "hvuio.cli", "hvuio.sim", "hvuio.demo", "hvuio.trace")
    mods = [m for m in MODULES if _within(m, "hvuio.netdev")]
    assert {"hvuio.netdev.tap", "hvuio.netdev.netns", "hvuio.netdev.signals"} <= set(mods)
    for mod in mods:
        bad = {i for i in MODULES[mod] if any(_within(i, a) for a in above)}
        assert not bad, f"{mod} imports {sorted(bad)}"


def test_trace_room_stands_on_wire_and_native() -> None:
    """hvuio.trace (pcapng writer/reader, decoder) takes hvuio.wire's layouts and names, the C
    writer's wrapper and the errors; the channel, NIC, engine and CLI call it, never the reverse.
    Its format and decoder (pcapng, decode) stay sans-IO."""
    mods = [m for m in MODULES if _within(m, "hvuio.trace")]
    assert {"hvuio.trace.pcapng", "hvuio.trace.writer", "hvuio.trace.decode"} <= set(mods)
    for mod in mods:
        own = {i for i in MODULES[mod] if _within(i, "hvuio")}
        bad = {i for i in own if not any(_within(i, ok) for ok in ("hvuio.trace", "hvuio.wire", "hvuio.errors",
                                                                    "hvuio.native.trace"))}
        assert not bad, f"{mod} imports {sorted(bad)}"
    for mod in ("hvuio.trace.pcapng", "hvuio.trace.decode"):
        bad = {i.split(".")[0] for i in MODULES[mod]} & IO_MODULES
        assert not bad, f"{mod} imports {sorted(bad)}; it must stay sans-IO"


def test_lifecycle_sits_above_the_engine() -> None:
    """hvuio.lifecycle (re-initialisation on a kept tap) drives the engine and the Nic; only the
    `up` bring-up (and the CLI) drive it, and it knows nothing of the emulator or the CLI."""
    users = {m for m, imps in _importers("hvuio.lifecycle").items() if imps}
    assert users <= {"hvuio.up"}, users
    bad = {i for i in MODULES["hvuio.lifecycle"] if _within(i, "hvuio.cli") or _within(i, "hvuio.sim")}
    assert not bad, bad


#: The control plane: the Nic and the rooms it owns and feeds (negotiated values, link side,
#: notices, VF side).
CONTROL_PLANE = ("hvuio.nic", "hvuio.nicinfo", "hvuio.niclink", "hvuio.nicnotices", "hvuio.nicvf")


@pytest.mark.parametrize("mod", CONTROL_PLANE)
def test_control_plane_below_the_engine(mod: str) -> None:
    """The control plane never imports the engine (tap + data path), what stops a run or the
    lifecycle above it; the protocol composition (proto/netvsc.py) is the only way the Nic reaches
    the machines, and its rooms reach none."""
    bad = {i for i in MODULES[mod] if any(_within(i, m) for m in ("hvuio.engine", "hvuio.netdev.signals",
                                                                   "hvuio.lifecycle", "hvuio.up",
                                                                   "hvuio.proto.nvsp.NvspGuest", "hvuio.proto.rndis"))}
    assert not bad, f"{mod} imports {sorted(bad)}"
    if mod != "hvuio.nic":
        bad = {i for i in MODULES[mod] if _within(i, "hvuio.proto.netvsc") or _within(i, "hvuio.channel")}
        assert not bad, f"{mod} imports {sorted(bad)}: only hvuio.nic drives the machines and the channel"
    assert "hvuio.proto.netvsc" in MODULES["hvuio.nic"]


def test_the_nics_rooms_hold_no_nic() -> None:
    """The Nic owns its rooms and feeds them; none imports hvuio.nic (a Nic in a reference cycle is
    freed by the garbage collector with its mapped buffers in an order that crashes)."""
    for mod in CONTROL_PLANE[1:]:
        assert not {i for i in MODULES[mod] if _within(i, "hvuio.nic")}, mod


def test_emulated_host_protocols_do_no_io() -> None:
    """hvuio.sim.host is the host's sans-IO half: bytes in, packets and events out."""
    mods = [m for m in MODULES if _within(m, "hvuio.sim.host")]
    assert "hvuio.sim.host.nvsp" in mods
    for mod in mods:
        bad = {i.split(".")[0] for i in MODULES[mod]} & IO_MODULES
        assert not bad, f"{mod} imports {sorted(bad)}; hvuio.sim.host must stay sans-IO"


def test_emulated_host_protocols_stand_alone() -> None:
    """The host's protocols know neither the emulated kernel nor the runtime that drives them (nor
    the network, the daemon or the compiled core): only hvuio.errors and each other."""
    for mod, imps in MODULES.items():
        if not _within(mod, "hvuio.sim.host"):
            continue
        own = {i for i in imps if _within(i, "hvuio")}
        bad = {i for i in own if not (_within(i, "hvuio.errors") or _within(i, "hvuio.sim.host"))}
        assert not bad, f"{mod} imports {sorted(bad)}"


def test_emulated_kernel_knows_no_host() -> None:
    """The emulated kernel reaches the host only through its hooks: nothing of hvuio.sim.host,
    hvuio.sim.vsp or the network behind the host."""
    host_side = ("hvuio.sim.host", "hvuio.sim.vsp", "hvuio.sim.net", "hvuio.sim.pcap", "hvuio.sim.daemon")
    for mod, imps in MODULES.items():
        if not _within(mod, "hvuio.sim.kernel"):
            continue
        bad = {i for i in imps if any(_within(i, side) for side in host_side)}
        assert not bad, f"{mod} imports {sorted(bad)}"


def test_only_the_irq_and_the_pump_touch_the_emulators_compiled_module() -> None:
    users = {m for m, imps in _importers("hvuio.sim._simhost").items() if imps}
    assert users <= {"hvuio.sim.kernel.uio", "hvuio.sim.vsp.fastpath"}, users


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


def test_only_the_tap_modules_and_vfpath_import_pyroute2() -> None:
    users = {m for m, imps in _importers("pyroute2").items() if imps}
    assert users <= {"hvuio.netdev.tap", "hvuio.netdev.netlink", "hvuio.netdev.vfpath"}, users


@pytest.mark.parametrize("mod", ["hvuio.vfwatch", "hvuio.linkwatch"])
def test_vf_and_link_policies_are_pure(mod: str) -> None:
    """hvuio.vfwatch decides when the data path moves to the VF, hvuio.linkwatch what the carrier
    and the neighbours need: no I/O, no clock, no hvuio module."""
    imps = MODULES[mod]
    assert not {i.split(".")[0] for i in imps} & IO_MODULES and not {i for i in imps if i.startswith("hvuio")}


def test_the_guest_never_imports_the_emulator() -> None:
    """Only the emulator itself, the CLI and the demo may import hvuio.sim: the guest's half of the
    seam (hvuio.device.platform) stands on its own."""
    allowed = ("hvuio.sim", "hvuio.cli", "hvuio.demo")
    for mod, imps in _importers("hvuio.sim").items():
        if imps and not mod.startswith(allowed):
            raise AssertionError(f"{mod} imports {sorted(imps)}")


def test_both_halves_of_the_seam_agree_on_names(tmp_path: pathlib.Path) -> None:
    from hvuio.device import guestmem
    from hvuio.device import platform as guest
    from hvuio.sim import daemon
    from hvuio.sim.kernel import memory
    from hvuio.sim.kernel import shm as emulator

    assert (guest.MARKER, guest.STATE_DIR) == (emulator.MARKER, emulator.STATE_DIR)
    assert guest.PID_FILE == daemon.PID_NAME and guest.pid_file(tmp_path) == daemon.pid_path(tmp_path)
    assert guest.map_file(tmp_path, "uio3", 4) == emulator.map_backing(tmp_path, "uio3", 4)
    assert guest.GUEST_MEMORY == memory.GUEST_MEMORY
    assert guest.guest_memory_file(tmp_path) == memory.guest_memory_path(tmp_path)
    assert (guestmem.GUEST_PFN_BASE, guestmem.CHUNK_SIZE, guestmem.HV_PAGE) == \
        (memory.GUEST_PFN_BASE, memory.CHUNK_SIZE, memory.HV_PAGE)
    assert guestmem.NIC_POOL_SIZE == guestmem.CHUNK_SIZE and guestmem.CONTROL_PAGES * guestmem.HV_PAGE == 65536


# ---- the command line: a package of thin commands ------------------------------------------------

CLI = "hvuio.cli"
#: what the command modules share: the App handed to every command, terminal text of NIC data
CLI_SHARED = ("hvuio.cli.app", "hvuio.cli.render")


def _within_any(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_cli_command_modules_never_import_the_group_or_each_other() -> None:
    """hvuio/cli/__init__.py imports the command modules and adds their commands to the group; a
    command module takes only the shared modules (App, text rendering), never the group or
    another command module, at import time or inside a function."""
    for mod, imps in MODULES.items():
        if not mod.startswith(CLI + "."):
            continue
        own = {i for i in imps if _within_any(i, (CLI,))}
        allowed = () if mod in CLI_SHARED else CLI_SHARED
        bad = {i for i in own if not _within_any(i, allowed)}
        assert not bad, f"{mod} imports {sorted(bad)}"


def test_no_import_cycle_among_cli_modules() -> None:
    cli_mods = sorted((m for m in MODULES if _within_any(m, (CLI,))), key=len, reverse=True)
    assert {CLI, "hvuio.cli.app", "hvuio.cli.device", "hvuio.cli.net", "hvuio.cli.sim",
            "hvuio.cli.demo"} <= set(cli_mods)

    def target(name: str) -> str | None:
        return next((m for m in cli_mods if _within_any(name, (m,))), None)

    edges = {m: {t for i in MODULES[m] if (t := target(i)) is not None and t != m} for m in cli_mods}
    done: set[str] = set()

    def visit(mod: str, path: list[str]) -> None:
        assert mod not in path, f"import cycle: {' -> '.join(path + [mod])}"
        if mod in done:
            return
        for nxt in sorted(edges[mod]):
            visit(nxt, path + [mod])
        done.add(mod)

    for mod in cli_mods:
        visit(mod, [])


def test_every_command_is_added_to_the_group() -> None:
    """Commands are added explicitly in hvuio/cli/__init__.py: each one a command module defines
    is reachable from the group."""
    import importlib

    import click

    from hvuio.cli import cli

    reachable: set[int] = set()
    todo: list[click.Command] = [cli]
    while todo:
        cmd = todo.pop()
        reachable.add(id(cmd))
        if isinstance(cmd, click.Group):
            todo += cmd.commands.values()
    for mod in ("hvuio.cli.device", "hvuio.cli.net", "hvuio.cli.stats", "hvuio.cli.sim", "hvuio.cli.demo",
                "hvuio.cli.trace"):
        defined = [v for v in vars(importlib.import_module(mod)).values() if isinstance(v, click.Command)]
        assert defined, mod
        missing = [c.name for c in defined if id(c) not in reachable]
        assert not missing, f"{mod} defines commands the group does not have: {missing}"


@pytest.mark.parametrize("mod", ["hvuio.status", "hvuio.stats", "hvuio.up", "hvuio.sim.daemon"])
def test_library_behind_the_commands_does_not_import_click(mod: str) -> None:
    assert mod in MODULES
    bad = {i for i in MODULES[mod] if i.split(".")[0] == "click"}
    assert not bad, f"{mod} imports {sorted(bad)}; click stays in hvuio/cli"


def test_only_the_cli_imports_click() -> None:
    users = {m for m, imps in _importers("click").items() if imps}
    assert users and all(_within_any(m, (CLI,)) for m in users), users


# ---- the test tree: helpers in tests/support, fixtures in conftest.py, no test imports another ---

TESTS = pathlib.Path(__file__).resolve().parent


def _test_tree_imports(path: pathlib.Path) -> list[tuple[int, str]]:
    """(line, module) of every import in `path`: statements, and __import__ / import_module calls
    with a literal name."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and ((isinstance(node.func, ast.Name) and node.func.id == "__import__")
                   or (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module"))):
            found.append((node.lineno, node.args[0].value))
    return found


def test_no_test_module_imports_another_or_a_conftest() -> None:
    """Helpers live in tests/support and fixtures in conftest.py: nothing under tests/ imports a
    module whose name starts with test_, nor a conftest."""
    bad = [f"{path.relative_to(TESTS)}:{line} imports {mod}"
           for path in sorted(TESTS.rglob("*.py"))
           for line, mod in _test_tree_imports(path)
           if any(part.startswith("test_") or part == "conftest" for part in mod.split("."))]
    assert not bad, bad


def test_support_holds_helpers_only() -> None:
    """No test function, test class or fixture in tests/support: pytest would not collect the
    tests there, and a fixture imported into a test module hides where it comes from."""
    support = TESTS / "support"
    assert (support / "__init__.py").exists()
    for path in sorted(support.rglob("*.py")):
        assert not path.name.startswith("test_"), path
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                assert not node.name.startswith(("test_", "Test")), f"{path.name}: {node.name}"
                decorators = [ast.unparse(d) for d in getattr(node, "decorator_list", [])]
                assert not any("fixture" in d for d in decorators), f"{path.name}: {node.name} is a fixture"


def test_test_module_names_are_unique() -> None:
    """The test folders are not packages, so pytest imports each test module by its file name
    (rootdir-relative import with the folder on sys.path): two with one name would clash."""
    names: dict[str, list[str]] = {}
    for path in TESTS.rglob("test_*.py"):
        names.setdefault(path.name, []).append(str(path.relative_to(TESTS)))
    clashes = {n: p for n, p in names.items() if len(p) > 1}
    assert not clashes, clashes
