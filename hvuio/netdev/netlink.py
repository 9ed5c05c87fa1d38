"""Netlink plumbing of the guest's taps: sockets in a namespace, link look-ups and moves, waiting
for a link change, watching a link's MTU, and the errno -> hvuio error mapping.

What lives here:
  * Link names, namespace names and MAC addresses: `random_ifname`, `check_ifname`,
    `check_netns_name`, `check_mac`, `format_mac`, `parse_mac`.
  * `netlink_error` / `os_error`: the hvuio error (one sentence) for a netlink or ioctl errno.
  * `iproute` (an IPRoute socket in a named namespace, never creating it), `lookup`, `move_link`,
    `link_exists`, `drop_unclaimed` (the replies pyroute2 leaves unread on a long-lived socket).
  * `wait_link_event`: wait, woken by RTM_NEWLINK/RTM_DELLINK notifications, until a condition on
    a link holds (no sleeping).
  * `LinkMonitor`: a socket subscribed to one namespace's link notifications whose fd a caller
    selects on; `mtu_changes()` drains it and says the MTU one link (by index) has now, when it
    differs from the one last seen (a user's `ip link set <tap> mtu N`), read back from the kernel.

What must not live here: the tap's fd and its ioctls (hvuio/netdev/tap.py), what to do about a
new MTU (hvuio/lifecycle.py), anything of the protocol. With hvuio/netdev/tap.py, the only module
in hvuio that imports pyroute2.
"""

from __future__ import annotations

import errno
import os
import secrets
import select
import time
from collections.abc import Callable
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import RTMGRP_LINK

from hvuio.errors import DeviceNotFoundError, HvuioError, NotRootError, PlatformError, UsageError

NETNS_RUN_DIR = "/run/netns"
IFNAMSIZ = 16  # names are at most 15 characters plus the NUL
NAME_PREFIX = "hvu-"


def random_ifname(prefix: str = NAME_PREFIX) -> str:
    """A fresh interface name: `prefix` plus random hex, at most 15 characters."""
    return prefix + secrets.token_hex(8)[: IFNAMSIZ - 1 - len(prefix)]


def check_ifname(name: str) -> None:
    """Raise UsageError unless `name` is a valid, literal Linux interface name."""
    if not name or len(name) >= IFNAMSIZ:
        raise UsageError(f"interface name {name!r} must be 1 to {IFNAMSIZ - 1} characters long")
    if name in (".", "..") or any(c in name for c in "/:%") or any(c.isspace() for c in name):
        raise UsageError(f"interface name {name!r} must not be '.'/'..' or contain '/', ':', '%' or spaces")


def check_mac(mac: bytes) -> None:
    """Raise UsageError unless `mac` is a 6-byte unicast, non-zero Ethernet address."""
    if len(mac) != 6:
        raise UsageError(f"MAC address must be 6 bytes, got {len(mac)}")
    if mac[0] & 1:
        raise UsageError(f"MAC address {format_mac(mac)} is multicast (bit 0 of the first byte set)")
    if mac == bytes(6):
        raise UsageError("MAC address 00:00:00:00:00:00 is not usable")


def format_mac(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


def parse_mac(text: str) -> bytes:
    parts = text.split(":")
    if len(parts) != 6 or not all(len(p) == 2 for p in parts):
        raise UsageError(f"MAC address {text!r} is not six ':'-separated hex bytes")
    try:
        return bytes(int(p, 16) for p in parts)
    except ValueError:
        raise UsageError(f"MAC address {text!r} is not six ':'-separated hex bytes") from None


def check_netns_name(name: str) -> None:
    """A namespace is named as `ip netns` names it: one entry of /run/netns, never a path
    (`/proc/PID/ns/net` would hand the tap to whatever process owns that namespace)."""
    if not name or len(name) > 255 or "/" in name or name in (".", "..") or "\0" in name:
        raise UsageError(f"network namespace {name!r} is not a name under {NETNS_RUN_DIR}",
                         "Pass a name as 'ip netns list' shows it (no '/').")


def netlink_error(code: int, action: str, ifname: str, netns: str | None = None) -> HvuioError:
    """The hvuio error for a netlink or ioctl errno `code` met while doing `action` on `ifname`."""
    where = f" in network namespace {netns!r}" if netns else ""
    if code in (errno.EPERM, errno.EACCES):
        return NotRootError(f"{action} on interface {ifname!r}{where} needs root or CAP_NET_ADMIN")
    if code == errno.EEXIST:
        return UsageError(
            f"interface name {ifname!r} already exists{where}",
            "Pick another name, or leave the name out for a random 'hvu-…' one.",
        )
    if code == errno.EBUSY:
        return UsageError(
            f"interface name {ifname!r} already exists{where} and is in use by another program",
            "Pick another name, or stop the program that holds the tap.",
        )
    if code == errno.ENODEV:
        return DeviceNotFoundError(f"interface {ifname!r}{where} does not exist (while trying to {action})")
    if code == errno.EINVAL:
        return UsageError(f"the kernel rejected {action} on interface {ifname!r}{where} as invalid (EINVAL)")
    return PlatformError(f"{action} on interface {ifname!r}{where} failed: {os.strerror(code)} (errno {code})")


def os_error(exc: OSError, action: str, ifname: str, netns: str | None = None) -> HvuioError:
    return netlink_error(exc.errno or errno.EIO, action, ifname, netns)



def drop_unclaimed(ipr: Any) -> None:
    """Discard the replies no request claimed on the tap's long-lived socket.

    pyroute2 (0.9: pyroute2/netlink/core.py, CoreMessageQueue.put) files a reply whose request
    already finished, such as the ACK that trails a "get", in the calling thread's untagged queue;
    nothing reads that queue on a socket without multicast groups, so it would grow by one message
    per request for as long as the tap lives (a link flap makes several).
    """
    queue = getattr(getattr(getattr(ipr, "asyncore", None), "msg_queue", None), "root", None)
    while queue is not None and not queue.empty():
        queue.get_nowait()
        queue.task_done()



def iproute(netns: str | None, ifname: str, groups: int | None = None) -> Any:
    """An IPRoute socket in `netns` (never creating the namespace), errors mapped."""
    kwargs: dict[str, Any] = {}
    if groups is not None:
        kwargs["groups"] = groups
    try:
        if netns is None:
            return IPRoute(**kwargs)
        return IPRoute(netns=netns, flags=0, **kwargs)
    except NetlinkError as exc:
        raise netlink_error(exc.code, "open netlink socket for", ifname, netns) from exc
    except FileNotFoundError:
        raise UsageError(f"network namespace {netns!r} does not exist") from None
    except OSError as exc:
        raise os_error(exc, "open netlink socket for", ifname, netns) from exc


def lookup(ipr: Any, name: str, netns: str | None) -> int | None:
    try:
        found = ipr.link_lookup(ifname=name)
    except NetlinkError as exc:
        raise netlink_error(exc.code, "look up", name, netns) from exc
    return int(found[0]) if found else None


def move_link(ipr: Any, index: int, tmp_name: str, final: str, netns: str) -> int:
    """Move link `index` into `netns` renaming it to `final`; return its index there."""
    try:
        nsfd = os.open(os.path.join(NETNS_RUN_DIR, netns), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise UsageError(f"network namespace {netns!r} does not exist") from None
    try:
        ipr.link("set", index=index, net_ns_fd=nsfd, ifname=final)
    except NetlinkError as exc:
        # On EEXIST the kernel may already have moved the link under its temporary name; the
        # caller closes the fd, which removes it there.
        raise netlink_error(exc.code, "move tap into namespace", final, netns) from exc
    finally:
        os.close(nsfd)
    with iproute(netns, final) as nsipr:
        found = lookup(nsipr, final, netns)
    if found is None:
        raise DeviceNotFoundError(f"tap {final!r} not found in network namespace {netns!r} after the move ({tmp_name})")
    return found


def link_exists(ipr: Any, index: int) -> bool:
    try:
        ipr.link("get", index=index)
    except NetlinkError as exc:
        if exc.code == errno.ENODEV:
            return False
        raise
    return True


def wait_link_event(netns: str | None, name: str, done: Callable[[], bool], why: Callable[[], str], timeout: float) -> None:
    """Return once `done()` is true, re-checking on every RTM_*LINK notification; no sleeping.

    The monitor subscribes before `done()` is re-evaluated, so a change that lands in between is
    not missed; notifications are only wake-ups (after an overrun, re-checking covers what was
    lost). Raises PlatformError(why()) after `timeout` seconds.
    """
    if done():
        return
    mon = iproute(netns, name, groups=RTMGRP_LINK)
    try:
        mon.bind(groups=RTMGRP_LINK)
        poller = select.poll()
        poller.register(mon.fileno(), select.POLLIN)
        deadline = time.monotonic() + timeout
        while not done():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise PlatformError(why())
            if poller.poll(int(remaining * 1000) + 1):
                try:
                    mon.get()
                except NetlinkError:
                    pass  # e.g. ENOBUFS after an overrun
    finally:
        mon.close()


class LinkMonitor:
    """Link notifications of one namespace, for a select loop (see the module docstring).

    `fileno()` is readable when notifications wait; `mtu_changes()` reads them all (without
    blocking), reads the link's MTU back from the kernel and returns it when it differs from the
    one last seen (the MTU at construction first). Notifications only wake the caller: one that
    pyroute2 read ahead, or lost to an overrun (ENOBUFS), hides no change, since the kernel's
    value is what counts; a caller may also call it without a wake-up."""

    def __init__(self, netns: str | None, name: str, index: int, mtu: int) -> None:
        self.name = name
        self.index = index
        self.netns = netns
        #: the MTU the link had when last looked at
        self.mtu = mtu
        self._mon = iproute(netns, name, groups=RTMGRP_LINK)
        try:
            self._mon.bind(groups=RTMGRP_LINK)
            self._ipr = iproute(netns, name)
        except BaseException:
            self._mon.close()
            raise

    def fileno(self) -> int:
        return int(self._mon.fileno())

    def expect(self, mtu: int) -> None:
        """The caller set the MTU itself: a notification of it is no change."""
        self.mtu = mtu

    def mtu_changes(self) -> int | None:
        """The link's new MTU, or None when it did not change (see the class docstring)."""
        while select.select([self._mon.fileno()], [], [], 0)[0]:
            try:
                self._mon.get()  # only a wake-up: the MTU is read back below
            except NetlinkError:
                pass  # e.g. ENOBUFS after an overrun
        try:
            now = int(self._ipr.link("get", index=self.index)[0].get_attr("IFLA_MTU"))
        except NetlinkError:
            return None
        finally:
            drop_unclaimed(self._ipr)
        if now == self.mtu:
            return None
        self.mtu = now
        return now

    def close(self) -> None:
        self._mon.close()
        self._ipr.close()
