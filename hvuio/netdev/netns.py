"""Named network namespaces for the demo and the tests, through iproute2's `ip` command.

What lives here: creating and deleting named namespaces (always "hvu-<role>-<random>", so parallel
runs never collide and leaks are easy to find), running commands inside one (`ip netns exec`),
veth pairs across namespaces, addresses and admin state on links we did not open ourselves, leak
listings, and `Cleanup`, a LIFO registry that undoes everything even when a step fails.

What must not live here: pyroute2 (only hvuio/netdev/tap.py, netlink.py and vfpath.py import it) and anything about taps. This
module never touches links or namespaces whose names lack the caller's prefix, except to read.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType

from hvuio.errors import HvuioError, NotRootError, PlatformError, UsageError

PREFIX = "hvu-"
NETNS_RUN_DIR = "/run/netns"
IFNAMSIZ = 16
# `ip` commands return in milliseconds; this only stops a wedged child from hanging a run.
COMMAND_TIMEOUT = 60.0
# Children start here: a working directory another user can write must not be theirs to fill.
CHILD_CWD = "/"


def python_argv(*args: str) -> list[str]:
    """This interpreter as a child that imports nothing from its working directory or script
    directory (-P): run by root from a directory another user can write, it must not load that
    user's modules (`python -m`/`-c` put the current directory first on the import path)."""
    return [sys.executable, "-P", *args]


def random_name(role: str, prefix: str = PREFIX, max_len: int = 0) -> str:
    """`prefix` + `role` + "-" + 8 random hex digits, e.g. "hvu-net-3fa2c01b".

    With `max_len` (e.g. 15 for interface names) the random part is shortened to fit.
    """
    if not role or not all(c.isalnum() for c in role):
        raise UsageError(f"name role {role!r} must be non-empty and alphanumeric")
    base = f"{prefix}{role}-"
    rand = secrets.token_hex(4)
    if max_len:
        room = max_len - len(base)
        if room < 4:
            raise UsageError(f"name role {role!r} leaves no room for a random suffix within {max_len} characters")
        rand = rand[:room]
    return base + rand


def random_ifname(role: str, prefix: str = PREFIX) -> str:
    """A random interface name that fits IFNAMSIZ (at most 15 characters)."""
    return random_name(role, prefix, IFNAMSIZ - 1)


def _ip_binary() -> str:
    path = shutil.which("ip")
    if path is None:
        raise PlatformError("iproute2's 'ip' command is not installed", "Install iproute2 (apt-get install iproute2).")
    return path


def _error_from(argv: Sequence[str], proc: subprocess.CompletedProcess[str]) -> HvuioError:
    text = (proc.stderr or proc.stdout or "").strip()
    cmd = " ".join(argv)
    if "Operation not permitted" in text or "Permission denied" in text:
        return NotRootError(f"'{cmd}' needs root or CAP_NET_ADMIN/CAP_SYS_ADMIN: {text}")
    if "File exists" in text or "already assigned" in text:
        return UsageError(f"'{cmd}' failed: already exists ({text})")
    return PlatformError(f"'{cmd}' failed with exit code {proc.returncode}: {text}")


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run `ip ARGS...`; on failure raise the matching HvuioError (unless check=False)."""
    argv = [_ip_binary(), *args]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False)
    if check and proc.returncode != 0:
        raise _error_from(argv, proc)
    return proc


def exists(name: str) -> bool:
    return os.path.exists(os.path.join(NETNS_RUN_DIR, name))


def list_namespaces(prefix: str = PREFIX) -> list[str]:
    """Named namespaces (from /run/netns) whose names start with `prefix`, sorted."""
    try:
        names = os.listdir(NETNS_RUN_DIR)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if n.startswith(prefix))


def list_links(prefix: str = PREFIX, netns: str | None = None) -> list[str]:
    """Interface names starting with `prefix` in `netns` (None: this process's namespace)."""
    args = ["-j", "link", "show"] if netns is None else ["-n", netns, "-j", "link", "show"]
    out = ip(*args).stdout
    links = json.loads(out) if out.strip() else []
    return sorted(str(link["ifname"]) for link in links if str(link.get("ifname", "")).startswith(prefix))


def create(role: str = "ns", *, ipv6: bool = True, loopback_up: bool = True) -> str:
    """Create a fresh namespace "hvu-<role>-<random>" and return its name.

    `ipv6=False` disables IPv6 in it (no router solicitations or MLD reports cluttering captured
    traffic). On any failure after creation the namespace is deleted again.
    """
    name = random_name(role)
    ip("netns", "add", name)
    try:
        if loopback_up:
            ip("-n", name, "link", "set", "lo", "up")
        if not ipv6:
            for key in ("all", "default"):
                run(name, ["sysctl", "-q", "-w", f"net.ipv6.conf.{key}.disable_ipv6=1"])
    except BaseException:
        delete(name)
        raise
    return name


def delete(name: str) -> None:
    """Delete namespace `name` (its links go with it); deleting a missing one is not an error."""
    if not name.startswith(PREFIX):
        raise UsageError(f"refusing to delete network namespace {name!r}: not created by hvuio (prefix {PREFIX!r})")
    if exists(name):
        ip("netns", "delete", name)


@contextlib.contextmanager
def namespace(role: str = "ns", *, ipv6: bool = True) -> Iterator[str]:
    """A fresh namespace for the duration of the `with` block, deleted even on failure."""
    name = create(role, ipv6=ipv6)
    try:
        yield name
    finally:
        delete(name)


def exec_argv(netns: str, argv: Sequence[str]) -> list[str]:
    """The argv that runs `argv` inside `netns`."""
    if not exists(netns):
        raise UsageError(f"network namespace {netns!r} does not exist")
    return [_ip_binary(), "netns", "exec", netns, *argv]


def run(
    netns: str,
    argv: Sequence[str],
    *,
    check: bool = True,
    timeout: float = COMMAND_TIMEOUT,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `argv` inside `netns`, capturing text output; check=True raises PlatformError on failure."""
    full = exec_argv(netns, argv)
    proc = subprocess.run(full, capture_output=True, text=True, timeout=timeout, check=False, input=input,
                          cwd=CHILD_CWD)
    if check and proc.returncode != 0:
        raise _error_from(full, proc)
    return proc


def popen(netns: str, argv: Sequence[str]) -> subprocess.Popen[str]:
    """Start `argv` inside `netns` with stdin/stdout/stderr as pipes (text); the caller waits."""
    return subprocess.Popen(
        exec_argv(netns, argv),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=CHILD_CWD,
    )


def add_veth(name_a: str, netns_a: str, name_b: str, netns_b: str) -> None:
    """Create a veth pair: `name_a` in `netns_a`, `name_b` in `netns_b` (both admin down)."""
    for name in (name_a, name_b):
        if len(name) >= IFNAMSIZ:
            raise UsageError(f"interface name {name!r} is longer than {IFNAMSIZ - 1} characters")
    # Created inside netns_a so the root namespace never holds either end, even briefly.
    ip("-n", netns_a, "link", "add", name_a, "type", "veth", "peer", "name", name_b, "netns", netns_b)


def set_up(netns: str, ifname: str) -> None:
    ip("-n", netns, "link", "set", ifname, "up")


def add_address(netns: str, ifname: str, cidr: str) -> None:
    """Add `cidr` ("198.18.0.1/24") to `ifname` in `netns` and set the link up."""
    if "/" not in cidr:
        raise UsageError(f"address {cidr!r} needs a /prefix length")
    ip("-n", netns, "addr", "add", cidr, "dev", ifname)
    set_up(netns, ifname)


def leaks(namespaces: Sequence[str] = (), links: Sequence[str] = ()) -> list[str]:
    """Which of the given namespaces and root-namespace links still exist (empty list: none)."""
    left = [f"netns {n}" for n in namespaces if exists(n)]
    if links:
        present = set(list_links(prefix=""))
        left += [f"link {name}" for name in links if name in present]
    return left


class Cleanup:
    """A LIFO registry of undo actions; `close()` runs them all, even if some fail.

    Errors from the actions are collected and the first is raised after every action ran.
    """

    def __init__(self) -> None:
        self._actions: list[tuple[str, Callable[[], object]]] = []

    def push(self, what: str, action: Callable[[], object]) -> None:
        self._actions.append((what, action))

    def namespace(self, role: str = "ns", *, ipv6: bool = True) -> str:
        """Create a namespace that `close()` deletes."""
        name = create(role, ipv6=ipv6)
        self.push(f"delete netns {name}", lambda: delete(name))
        return name

    def close(self) -> None:
        errors: list[BaseException] = []
        while self._actions:
            what, action = self._actions.pop()
            try:
                action()
            except Exception as exc:  # keep undoing the rest; report after
                exc.add_note(f"while cleaning up: {what}")
                errors.append(exc)
        if errors:
            raise errors[0]

    def __enter__(self) -> Cleanup:
        return self

    def __exit__(self, t: type[BaseException] | None, v: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
