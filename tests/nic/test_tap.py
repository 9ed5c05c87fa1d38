"""hvuio.netdev.tap: a tap opened by us, checked independently through pyroute2, TUN ioctls and the
namespace's own stack. Root-only tests skip with the reason; argument and errno-mapping tests run
everywhere."""

from __future__ import annotations

import errno
import fcntl
import gc
import os
import re
import select
import shutil
import struct
import subprocess
import sys
import tracemalloc

from typing import Any

import pytest
from support.namespaces import NetnsFactory
from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from hvuio.netdev import netns, tap
from hvuio.errors import DeviceNotFoundError, NotRootError, PlatformError, UsageError
from hvuio.netdev.tap import Tap

MAC_A = bytes.fromhex("02aa00000001")
MAC_B = bytes.fromhex("02bb00000002")
# _IOR('T', 210, unsigned int) and _IOR('T', 215, int): read back what the kernel recorded.
TUNGETIFF = (2 << 30) | (4 << 16) | (ord("T") << 8) | 210
TUNGETVNETHDRSZ = (2 << 30) | (4 << 16) | (ord("T") << 8) | 215
WAIT_MS = 10_000  # upper bound so a broken path fails instead of hanging; not a speed check


def open_tap(f: NetnsFactory, ns: str | None, name: str | None = None, mac: bytes = MAC_A, mtu: int = 1500, **kw: Any) -> Tap:
    t = Tap.open(name or f.ifname("tap"), mac, mtu, netns=ns, **kw)
    f.defer(f"close {t.name}", t.close)
    if ns is None:
        f.track_root_link(t.name)
    return t


def link_msg(ns: str, name: str) -> object:
    with IPRoute(netns=ns, flags=0) as ipr:
        idx = ipr.link_lookup(ifname=name)
        assert len(idx) == 1, f"{name} not found in {ns}"
        return ipr.link("get", index=idx[0])[0]


def tun_flags(fd: int) -> int:
    res = fcntl.ioctl(fd, TUNGETIFF, bytes(40))
    return int(struct.unpack_from("16sH", res)[1])


# ------------------------------------------------------------------ root + netns


def test_open_in_namespace_sets_mac_mtu_and_flags(netns_factory: NetnsFactory) -> None:
    ns = netns_factory.namespace()
    t = open_tap(netns_factory, ns, name="hvut0", mtu=1400)
    msg = link_msg(ns, "hvut0")
    assert msg.get_attr("IFLA_ADDRESS") == "02:aa:00:00:00:01"  # type: ignore[attr-defined]
    assert msg.get_attr("IFLA_MTU") == 1400  # type: ignore[attr-defined]
    assert not msg["flags"] & tap.IFF_UP  # type: ignore[index]
    with IPRoute() as root:
        assert root.link_lookup(ifname="hvut0") == []  # moved, not copied
    flags = tun_flags(t.fileno())
    assert flags & (tap.IFF_TAP | tap.IFF_NO_PI | tap.IFF_VNET_HDR) == tap.IFF_TAP | tap.IFF_NO_PI | tap.IFF_VNET_HDR
    assert not flags & tap.IFF_MULTI_QUEUE
    assert struct.unpack("i", fcntl.ioctl(t.fileno(), TUNGETVNETHDRSZ, bytes(4)))[0] == 12
    assert not os.get_blocking(t.fileno())

    t.up()
    msg = link_msg(ns, "hvut0")
    assert msg["flags"] & tap.IFF_UP  # type: ignore[index]
    assert msg.get_attr("IFLA_OPERSTATE") in ("UP", "UNKNOWN")  # type: ignore[attr-defined]
    t.set_mtu(9000)
    assert link_msg(ns, "hvut0").get_attr("IFLA_MTU") == 9000  # type: ignore[attr-defined]
    t.add_address("198.18.5.2/24")
    out = netns.ip("-n", ns, "-o", "addr", "show", "dev", "hvut0").stdout
    assert "198.18.5.2/24" in out
    with pytest.raises(UsageError, match="already on interface"):
        t.add_address("198.18.5.2/24")


def test_flags_without_vnet_hdr_and_with_multi_queue(netns_factory: NetnsFactory) -> None:
    ns = netns_factory.namespace()
    t = open_tap(netns_factory, ns, vnet_hdr=False, multi_queue=True)
    flags = tun_flags(t.fileno())
    assert not flags & tap.IFF_VNET_HDR
    assert flags & tap.IFF_MULTI_QUEUE


def test_queues_attach_every_queue_before_the_move(netns_factory: NetnsFactory) -> None:
    ns = netns_factory.namespace()
    t = open_tap(netns_factory, ns, queues=3)
    fds = t.queue_fds
    assert t.multi_queue and len(fds) == 3 and fds[0] == t.fileno() and len(set(fds)) == 3
    for fd in fds:  # each one a queue of the same multi-queue tap, with the vnet header
        flags = tun_flags(fd)
        assert flags & tap.IFF_MULTI_QUEUE and flags & tap.IFF_VNET_HDR
        res = fcntl.ioctl(fd, TUNGETIFF, bytes(40))
        assert struct.unpack_from("16s", res)[0].rstrip(b"\0").decode() == t.name
        assert os.get_blocking(fd) is False
    assert link_msg(ns, t.name).get_attr("IFLA_NUM_TX_QUEUES") >= 3
    t.close()
    assert t.closed


def test_set_queues_detaches_and_attaches_again(netns_factory: NetnsFactory) -> None:
    ns = netns_factory.namespace()
    t = open_tap(netns_factory, ns, queues=3)

    def queues() -> list[str]:   # the kernel's real queues (netif_set_real_num_tx_queues), seen in ns
        return sorted(netns.run(ns, ["ls", f"/sys/class/net/{t.name}/queues"]).stdout.split())

    assert queues() == ["rx-0", "rx-1", "rx-2", "tx-0", "tx-1", "tx-2"]
    t.set_queues(1)
    assert queues() == ["rx-0", "tx-0"]
    t.set_queues(3)
    assert queues() == ["rx-0", "rx-1", "rx-2", "tx-0", "tx-1", "tx-2"]
    with pytest.raises(UsageError, match="queues"):
        t.set_queues(4)
    t.set_offload(tap.TunOffload.CSUM)
    assert t.offload == tap.TunOffload.CSUM
    t.close()


def test_link_monitor_sees_a_users_mtu_change_and_not_its_own(netns_factory: NetnsFactory) -> None:
    from hvuio.netdev.netlink import LinkMonitor

    ns = netns_factory.namespace()
    t = open_tap(netns_factory, ns)
    mon = LinkMonitor(ns, t.name, t.index, 1500)
    try:
        assert mon.mtu_changes() is None
        netns.ip("-n", ns, "link", "set", "dev", t.name, "mtu", "4000")   # the user, with iproute2
        assert select.select([mon.fileno()], [], [], WAIT_MS / 1000)[0]
        assert mon.mtu_changes() == 4000 and mon.mtu_changes() is None
        netns.ip("-n", ns, "link", "set", "dev", t.name, "mtu", "3000")
        netns.ip("-n", ns, "link", "set", "dev", t.name, "mtu", "5000")
        assert mon.mtu_changes() == 5000                                 # the kernel's value, once
        mon.expect(1500)
        t.set_mtu(1500)                                                  # our own change
        assert mon.mtu_changes() is None
    finally:
        mon.close()


@pytest.mark.parametrize("queues", [0, tap.MAX_QUEUES + 1])
def test_queue_count_outside_the_range_is_refused(queues: int) -> None:
    with pytest.raises(UsageError, match="queues"):
        Tap.open("ok0", MAC_A, 1500, queues=queues)


def test_close_removes_link(netns_factory: NetnsFactory) -> None:
    ns = netns_factory.namespace()
    t = open_tap(netns_factory, ns, name="hvut1")
    link_msg(ns, "hvut1")
    t.close()
    assert t.closed
    assert netns.list_links(prefix="hvut", netns=ns) == []
    with pytest.raises(UsageError, match="closed"):
        t.fileno()
    t.close()  # idempotent


def carrier_and_operstate(ns: str, name: str) -> tuple[int, str]:
    msg = link_msg(ns, name)
    return msg.get_attr("IFLA_CARRIER"), msg.get_attr("IFLA_OPERSTATE")  # type: ignore[attr-defined]


def test_carrier_follows_set_carrier(netns_factory: NetnsFactory) -> None:
    ns = netns_factory.namespace()
    t = open_tap(netns_factory, ns, name="hvut2")
    t.up()
    t.set_carrier(False)
    assert carrier_and_operstate(ns, "hvut2") == (0, "DOWN")
    assert t.state().carrier is False
    t.set_carrier(True)
    assert carrier_and_operstate(ns, "hvut2") == (1, "UP")
    assert link_msg(ns, "hvut2")["flags"] & tap.IFF_UP  # type: ignore[index]


def test_link_flaps_leave_nothing_behind(netns_factory: NetnsFactory) -> None:
    """A tap lives as long as `hvuio up`: the netlink replies of the link flaps it follows must not
    pile up on its socket. Counted as the received datagrams (asyncio's receive path allocates each
    one) still alive after a warm-up: 40 more flaps may leave fewer than 40 (each flap makes several
    requests, so one reply kept per request fails). Other pyroute2 memory is not counted: its caches
    (sequence numbers held back, the interpreter's attribute-name cache) fill up and then stay."""
    ns = netns_factory.namespace()
    t = open_tap(netns_factory, ns, name="hvut5")
    t.up()

    def flaps(n: int) -> None:
        for _ in range(n):
            t.set_carrier(False)
            t.set_carrier(True)
            t.addresses()

    def blocks() -> int:
        gc.collect()
        snap = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(True, "*/asyncio/selector_events.py")])
        return sum(s.count for s in snap.statistics("filename"))

    flaps(10)
    tracemalloc.start()
    try:
        flaps(10)
        before = blocks()
        flaps(40)
        grown = blocks() - before
    finally:
        tracemalloc.stop()
    assert grown < 40, f"{grown} more received datagrams alive after 40 link flaps"


def test_carrier_fallback_uses_admin_state(netns_factory: NetnsFactory) -> None:
    ns = netns_factory.namespace()
    t = open_tap(netns_factory, ns, name="hvut3")
    t.up()
    t._carrier_ioctl = False  # as on a kernel without TUNSETCARRIER
    t.set_carrier(False)
    assert not link_msg(ns, "hvut3")["flags"] & tap.IFF_UP  # type: ignore[index]
    t.set_carrier(True)
    assert link_msg(ns, "hvut3")["flags"] & tap.IFF_UP  # type: ignore[index]


def test_name_exists_in_target_namespace(netns_factory: NetnsFactory) -> None:
    ns = netns_factory.namespace()
    open_tap(netns_factory, ns, name="hvudup0")
    before_root = set(netns.list_links())
    with pytest.raises(UsageError, match="'hvudup0' already exists in network namespace"):
        Tap.open("hvudup0", MAC_B, 1500, netns=ns)
    # the temporary link ("hvu-t<hex>") was removed wherever it ended up
    assert netns.list_links(prefix="", netns=ns) == ["hvudup0", "lo"]
    new_in_root = set(netns.list_links()) - before_root
    assert not [n for n in new_in_root if re.fullmatch(r"hvu-t[0-9a-f]+", n)]


def test_name_exists_in_current_namespace(netns_factory: NetnsFactory) -> None:
    name = netns_factory.ifname("dup")
    open_tap(netns_factory, None, name=name)
    with pytest.raises(UsageError, match="already exists"):
        Tap.open(name, MAC_B, 1500)
    assert netns.list_links().count(name) == 1


def test_missing_namespace(netns_factory: NetnsFactory) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        Tap.open(None, MAC_A, 1500, netns=netns.random_name("gone"))


def test_write_while_down_is_a_drop(netns_factory: NetnsFactory) -> None:
    ns = netns_factory.namespace()
    t = open_tap(netns_factory, ns)
    frame = b"\xff" * 6 + MAC_B + b"\x08\x00" + bytes(46)
    assert t.write_frame(frame) is False  # admin down: the kernel answers EIO
    t.up()
    assert t.write_frame(frame) is True
    with pytest.raises(UsageError, match="not a valid Ethernet frame"):
        t.write_frame(b"\x00" * 13)


UDP_SEND = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.sendto(sys.argv[3].encode(), (sys.argv[1], int(sys.argv[2])))
"""
UDP_RECV = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
s.settimeout(20)
print("ready", flush=True)
data, peer = s.recvfrom(2048)
print(data.decode(), peer[0], flush=True)
"""


def wait_readable(fd: int) -> None:
    p = select.poll()
    p.register(fd, select.POLLIN)
    assert p.poll(WAIT_MS), "no frame arrived"


def test_frame_crosses_from_one_namespace_to_another(netns_factory: NetnsFactory) -> None:
    """ns A's stack sends UDP → raw [vnet hdr][frame] on A's fd → written to B's fd → B's stack."""
    ns_a, ns_b = netns_factory.namespace("a"), netns_factory.namespace("b")
    a = open_tap(netns_factory, ns_a, name="hvua0", mac=MAC_A)
    b = open_tap(netns_factory, ns_b, name="hvub0", mac=MAC_B, vnet_hdr=False)
    for t, cidr in ((a, "198.18.7.2/24"), (b, "198.18.7.1/24")):
        t.up()
        t.add_address(cidr)
    netns.ip("-n", ns_a, "neigh", "add", "198.18.7.1", "lladdr", "02:bb:00:00:00:02", "dev", "hvua0")

    listener = netns.popen(ns_b, [sys.executable, "-c", UDP_RECV, "198.18.7.1", "9999"])
    netns_factory.defer("stop listener", lambda: (listener.kill(), listener.communicate()))
    assert listener.stdout is not None
    assert listener.stdout.readline().strip() == "ready"
    netns.run(ns_a, [sys.executable, "-c", UDP_SEND, "198.18.7.1", "9999", "hello-hvuio"])

    udp = None
    while udp is None:
        wait_readable(a.fileno())
        raw = os.read(a.fileno(), 65600)
        hdr, frame = raw[:12], raw[12:]
        if frame[12:14] == b"\x08\x00" and frame[23] == 17 and frame[36:38] == (9999).to_bytes(2, "big"):
            udp = (hdr, frame)
    hdr, frame = udp
    assert hdr[1] == 0  # gso_type NONE: offloads are off
    assert hdr[0] & 1 == 0  # no NEEDS_CSUM: the checksum is complete
    assert frame[0:6] == MAC_B and frame[6:12] == MAC_A
    assert frame[42:] == b"hello-hvuio"

    assert b.write_frame(frame) is True
    out, _ = listener.communicate(timeout=30)
    assert out.split() == ["hello-hvuio", "198.18.7.2"]


# ------------------------------------------------------------------ privilege and platform errors


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("capsh") is None, reason="needs root and capsh to drop a capability")
def test_without_cap_net_admin_is_not_root_error() -> None:
    code = (
        "import hvuio.netdev.tap as t, hvuio.errors as e\n"
        "try:\n    t.Tap.open(None, bytes.fromhex('020000000001'), 1500)\n"
        "except e.NotRootError as x:\n    print('NotRootError:', x)\n"
    )
    proc = subprocess.run(
        ["capsh", "--drop=cap_net_admin", "--", "-c", f"exec {sys.executable} -c \"$0\"", code],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.stdout.startswith("NotRootError:"), proc.stdout + proc.stderr
    assert "needs root or CAP_NET_ADMIN" in proc.stdout


def test_missing_dev_net_tun_is_platform_error(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    monkeypatch.setattr(tap, "TUN_PATH", str(tmp_path) + "/no-such-tun")
    with pytest.raises(PlatformError, match="does not exist"):
        Tap.open(None, MAC_A, 1500)


@pytest.mark.parametrize(
    ("code", "cls", "words"),
    [
        (errno.EPERM, NotRootError, "needs root or CAP_NET_ADMIN"),
        (errno.EEXIST, UsageError, "interface name 'x0' already exists"),
        (errno.ENODEV, DeviceNotFoundError, "does not exist"),
        (errno.EBUSY, UsageError, "in use"),
        (errno.EOPNOTSUPP, PlatformError, "errno 95"),
    ],
)
def test_netlink_errors_map_to_hvuio_errors(code: int, cls: type[Exception], words: str) -> None:
    err = tap.netlink_error(NetlinkError(code).code, "set MTU", "x0")
    assert type(err) is cls
    assert words in str(err)


@pytest.mark.parametrize(
    ("name", "mac", "mtu", "words"),
    [
        ("x" * 16, MAC_A, 1500, "1 to 15 characters"),
        ("a/b", MAC_A, 1500, "must not"),
        ("tap%d", MAC_A, 1500, "must not"),
        ("ok0", b"\x01" + bytes(5), 1500, "multicast"),
        ("ok0", bytes(6), 1500, "not usable"),
        ("ok0", b"\x02" * 5, 1500, "6 bytes"),
        ("ok0", MAC_A, 67, "MTU 67"),
        ("ok0", MAC_A, 65536, "MTU 65536"),
    ],
)
def test_bad_arguments_rejected_before_any_syscall(name: str, mac: bytes, mtu: int, words: str) -> None:
    with pytest.raises(UsageError, match=words):
        Tap.open(name, mac, mtu)
