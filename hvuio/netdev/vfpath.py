"""The data path through an accelerated-networking VF, built with tc through pyroute2.

What lives here: `VfPath`, the netlink side of one NIC's VF: it finds the VF netdev the caller's
`find(serial)` names (in the tap's namespace, or in this process's and then moves it there, as
Linux moves a VF into the synthetic device's namespace: netvsc_drv.c `netvsc_register_vf`), joins
it, sends the tap's frames through it while the data path is the VF, and reads its counters.
When to do what is hvuio/vfwatch.py's decision; this module only does it. Its netlink calls run
in a thread of its own (`hvuio-vf`), the caller waiting for each (see `VfPath`).

How, without a bond (a guest kernel need not have the bonding driver, CONFIG_BONDING, and a bond
would move the tap's addresses to a master device the user did not make): the addresses stay on the tap, the NIC's one
interface, and two tc rules on clsact qdiscs (NET_SCH_INGRESS) move the frames:

* joined: the VF is up (the tap's MTU when the engine started, no IPv6 address of its own: addrgenmode none, as Linux's
  IFF_SLAVE prevents autoconfiguration), and a u32 match-all filter on the VF's ingress redirects
  every frame it receives to the tap's ingress (act_mirred ingress redirect): the stack sees them
  arrive on the tap, as Linux's VF rx_handler hands them to the synthetic netdev;
* TX on the VF: a u32 match-all filter on the tap's egress redirects every frame the stack sends
  to the VF (mirred egress redirect), so nothing reaches the tap's queue and the C data path;
  removed first when the VF is about to go, and the frames go to the tap again.
The synthetic receive path keeps running all the time (the host may still deliver there). mirred
drops what it redirects to an interface without carrier (the tap follows the host's link) or one
that is gone, so the egress rule is removed before the VF leaves. A tap's rules go with the tap;
the VF's ingress rule is removed on leave and replaced on the next join (also after a killed `up`).

Counters: the VF netdev's own (`vf_rx_packets`, `vf_rx_bytes`, `vf_tx_packets`, `vf_tx_bytes`,
summed over every VF netdev this path joined, as Linux's `vf_*` ethtool statistics count traffic
through the VF).

What must not live here: the protocol, sysfs (the caller's `find`), the decision when to switch.
"""

from __future__ import annotations

import errno
import logging
import os
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from hvuio.errors import HvuioError, PlatformError
from hvuio.netdev.netlink import NETNS_RUN_DIR, drop_unclaimed, netlink_error

log = logging.getLogger(__name__)

#: clsact's ingress and egress hooks (TC_H_MIN_INGRESS / TC_H_MIN_EGRESS under TC_H_CLSACT)
INGRESS: Final = 0xFFFFFFF2
EGRESS: Final = 0xFFFFFFF3
ETH_P_ALL: Final = 0x0003
_PRIO: Final = 1
_IN6_ADDR_GEN_MODE_NONE: Final = 1
COUNTERS: Final = ("rx_packets", "rx_bytes", "tx_packets", "tx_bytes")
#: Longest a netlink call of the path may take before the caller gives up on it.
CALL_TIMEOUT: Final = 10.0


def _match_all(ifindex: int, direction: str) -> dict[str, Any]:
    """A u32 filter matching every frame, redirecting it to `ifindex`'s `direction` (mirred)."""
    return {"prio": _PRIO, "protocol": ETH_P_ALL, "keys": ["0x0/0x0+0"], "target": 0,
            "action": {"kind": "mirred", "direction": direction, "action": "redirect", "ifindex": ifindex}}


def _tc_error(exc: NetlinkError, action: str, ifname: str, netns: str | None) -> HvuioError:
    """netlink_error, but a kernel without the tc pieces says which to load."""
    if exc.code in (errno.ENOENT, errno.EOPNOTSUPP):
        return PlatformError(f"{action} on interface {ifname!r}: the kernel has no clsact qdisc, u32 filter or "
                             f"mirred action ({os.strerror(exc.code)})",
                             "Load them ('modprobe sch_ingress cls_u32 act_mirred'), or run with --vf off.")
    return netlink_error(exc.code, action, ifname, netns)


class VfPath:
    """The VF side of one NIC's interface (see the module docstring). Every netlink call runs in
    the path's own thread (`hvuio-vf`), the caller waits for it (bounded): pyroute2 keeps the
    exceptions it raises and catches inside in reference cycles with their tracebacks, whose
    frames would otherwise reach the caller's stack (the data path's thread, with its mapped
    buffers) and leave it for the garbage collector, which frees such buffers in an order that
    crashes (hvuio/engine.py `_pump_error`). An error comes back as a new exception."""

    def __init__(self, tap: str, netns: str | None, mtu: int, find: Callable[[int], str | None]) -> None:
        self._find = find
        self._requests: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=_serve, args=(self._requests,), name="hvuio-vf", daemon=True)
        self._thread.start()
        self._nl: _VfNetlink = self._call(_VfNetlink, tap, netns, mtu)

    @property
    def vf(self) -> str | None:
        return self._nl.vf

    def look(self, serial: int) -> str | None:
        """The VF netdev for `serial` when it exists (moved into the tap's namespace), else None."""
        name = self._find(serial)
        return None if name is None else self._call(self._nl.locate, name)

    def join(self, name: str) -> None:
        """VF `name` up, and what it receives redirected to the tap."""
        self._call(self._nl.join, name)

    def tx(self, on: bool) -> None:
        """The tap's frames to the VF (`on`), or to the tap again."""
        self._call(self._nl.tx, on)

    def leave(self, name: str, gone: bool = False) -> None:
        """Stop taking what VF `name` receives (its rule goes; a gone VF took it along)."""
        self._call(self._nl.leave, name, gone)

    def present(self) -> bool:
        """The joined VF netdev still exists (True when none is joined)."""
        return bool(self._call(self._nl.present))

    def counters(self) -> dict[str, int]:
        """vf_rx_packets, vf_rx_bytes, vf_tx_packets, vf_tx_bytes over every VF netdev joined."""
        return dict(self._call(self._nl.counters))

    def close(self) -> None:
        """Rules removed (the tap's first), the VF left as it is; the netlink socket and the
        thread end."""
        try:
            self._call(self._nl.close)
        except HvuioError as err:
            log.warning("removing the VF rules: %s", err.message)
        finally:
            self._requests.put(None)
            self._thread.join(CALL_TIMEOUT)

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        request = _Request(fn, args)
        self._requests.put(request)
        if not request.done.wait(CALL_TIMEOUT):
            raise PlatformError(f"netlink did not answer within {CALL_TIMEOUT:g} s", "See 'dmesg'; try --vf off.")
        if request.error is not None:
            raise request.error
        return request.result


@dataclass
class _Request:
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: HvuioError | None = None


def _serve(requests: queue.SimpleQueue[_Request | None]) -> None:
    """The path's thread: one request at a time; an error is handed over without its traceback
    (so nothing of this thread's frames travels with it)."""
    while (request := requests.get()) is not None:
        try:
            request.result = request.fn(*request.args)
        except HvuioError as err:
            request.error = type(err)(err.message, err.hint) if _plain(err) else err
            err.__traceback__ = None
        except (NetlinkError, OSError) as err:
            request.error = PlatformError(f"netlink: {err}")
        finally:
            request.done.set()
            del request


def _plain(err: HvuioError) -> bool:
    """`err` can be made again from its message and hint."""
    try:
        type(err)(err.message, err.hint)
    except TypeError:
        return False
    return True


class _VfNetlink:
    """The netlink work of a VfPath, in its thread."""

    def __init__(self, tap: str, netns: str | None, mtu: int) -> None:
        self.tap, self.netns, self.mtu = tap, netns, mtu
        self._ipr: Any = IPRoute(netns=netns, flags=0) if netns is not None else IPRoute()
        self.vf: str | None = None
        self._vf_index: int | None = None
        self._tx = False
        self._done: dict[str, int] = dict.fromkeys(COUNTERS, 0)  # of VF netdevs that left
        self._last: dict[str, int] = {}  # the joined VF's counters when last read

    def locate(self, name: str) -> str | None:
        """`name` in the tap's namespace (moved there from this process's), else None."""
        if self._index(self._ipr, name) is not None:
            return name
        if self.netns is None:
            return None
        try:
            here = IPRoute()
        except (NetlinkError, OSError) as exc:
            raise netlink_error(getattr(exc, "code", 0) or errno.EIO, "open netlink for", name, None) from exc
        with here:
            index = self._index(here, name)
            if index is None:
                return None
            fd = os.open(os.path.join(NETNS_RUN_DIR, self.netns), os.O_RDONLY | os.O_CLOEXEC)
            try:
                here.link("set", index=index, net_ns_fd=fd)
            except NetlinkError as exc:
                raise netlink_error(exc.code, "move the VF into the namespace of", name, self.netns) from exc
            finally:
                os.close(fd)
        return name if self._index(self._ipr, name) is not None else None

    def join(self, name: str) -> None:
        """VF `name` up, and what it receives redirected to the tap."""
        ipr = self._ipr
        index = self._index(ipr, name)
        tap = self._index(ipr, self.tap)
        if index is None or tap is None:
            raise netlink_error(errno.ENODEV, "join", name, self.netns)
        try:
            ipr.link("set", index=index, state="down")
            ipr.link("set", index=index, mtu=self.mtu)
            self._no_ipv6(index, name)
            ipr.link("set", index=index, state="up")
            self._clsact(index, fresh=True)
            ipr.tc("add-filter", "u32", index, parent=INGRESS, **_match_all(tap, "ingress"))
        except NetlinkError as exc:
            raise _tc_error(exc, "join the VF", name, self.netns) from exc
        finally:
            drop_unclaimed(ipr)
        self.vf, self._vf_index = name, index
        log.info("VF %s joined %s", name, self.tap)

    def tx(self, on: bool) -> None:
        """The tap's frames to the VF (`on`), or to the tap again."""
        tap = self._index(self._ipr, self.tap)
        if tap is None:
            return
        if not on:
            self._tx = False
            self._drop_clsact(tap)
            return
        if self._vf_index is None:
            raise netlink_error(errno.ENODEV, "send through the VF of", self.tap, self.netns)
        try:
            self._clsact(tap, fresh=True)
            self._ipr.tc("add-filter", "u32", tap, parent=EGRESS, **_match_all(self._vf_index, "egress"))
        except NetlinkError as exc:
            raise _tc_error(exc, "redirect to the VF", self.tap, self.netns) from exc
        finally:
            drop_unclaimed(self._ipr)
        self._tx = True

    def leave(self, name: str, gone: bool = False) -> None:
        """Stop taking what VF `name` receives (its rule goes; a gone VF took it along)."""
        index = self._vf_index
        self._fold_counters()
        self.vf, self._vf_index = None, None
        if not gone and index is not None:
            self._drop_clsact(index)
        log.info("VF %s left %s%s", name, self.tap, " (it went away)" if gone else "")

    def present(self) -> bool:
        """The joined VF netdev still exists (True when none is joined)."""
        index = self._vf_index
        if index is None:
            return True
        try:
            self._ipr.link("get", index=index)
        except NetlinkError as exc:
            if exc.code == errno.ENODEV:
                return False
            raise netlink_error(exc.code, "look at", self.vf or "the VF", self.netns) from exc
        finally:
            drop_unclaimed(self._ipr)
        return True

    def counters(self) -> dict[str, int]:
        """vf_rx_packets, vf_rx_bytes, vf_tx_packets, vf_tx_bytes over every VF netdev joined."""
        now = self._vf_stats() if self._vf_index is not None else {}
        return {f"vf_{k}": self._done[k] + now.get(k, 0) for k in COUNTERS}

    def close(self) -> None:
        """Rules removed (the tap's first), the VF left as it is; the netlink socket closed."""
        try:
            if self._tx:
                self.tx(False)
            if self.vf is not None:
                self.leave(self.vf)
        except (HvuioError, NetlinkError, OSError) as err:
            log.warning("removing the VF rules of %s: %s", self.tap, err)
        finally:
            self._ipr.close()

    # ---- netlink helpers ------------------------------------------------------------------------

    @staticmethod
    def _index(ipr: Any, name: str) -> int | None:
        try:
            found = ipr.link_lookup(ifname=name)
        except NetlinkError:
            return None
        return int(found[0]) if found else None

    def _clsact(self, index: int, fresh: bool) -> None:
        if fresh:
            self._drop_clsact(index)
        self._ipr.tc("add", "clsact", index)

    def _drop_clsact(self, index: int) -> None:
        try:
            self._ipr.tc("del", "clsact", index)
        except NetlinkError as exc:
            if exc.code not in (errno.ENOENT, errno.EINVAL, errno.ENODEV):
                raise netlink_error(exc.code, "remove the tc rules of", str(index), self.netns) from exc
        finally:
            drop_unclaimed(self._ipr)

    def _no_ipv6(self, index: int, name: str) -> None:
        """No IPv6 address of its own on the VF (addrgenmode none); a kernel without IPv6 has none anyway."""
        try:
            self._ipr.link("set", index=index, IFLA_AF_SPEC={"attrs": [["AF_INET6", {"attrs": [
                ["IFLA_INET6_ADDR_GEN_MODE", _IN6_ADDR_GEN_MODE_NONE]]}]]})
        except (NetlinkError, ValueError, KeyError, TypeError) as exc:
            log.debug("VF %s: addrgenmode none not set: %s", name, exc)

    def _vf_stats(self) -> dict[str, int]:
        index = self._vf_index
        if index is None:
            return {}
        try:
            msg = self._ipr.link("get", index=index)[0]
        except (NetlinkError, IndexError):
            return self._last
        finally:
            drop_unclaimed(self._ipr)
        stats = msg.get_attr("IFLA_STATS64") or {}
        self._last = {k: int(stats.get(k, 0)) for k in COUNTERS}
        return self._last

    def _fold_counters(self) -> None:
        """The leaving VF's counters (as last read, when it is already gone) join the sums."""
        self._vf_stats()
        for k, v in self._last.items():
            self._done[k] += v
        self._last = {}
