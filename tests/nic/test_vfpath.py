"""hvuio.netdev.vfpath on real netlink: the VF netdev found (and moved beside the tap), joined (up,
the tap's MTU, no IPv6 address of its own, its ingress redirected to the tap), the tap's egress
redirected to it and back, the rules gone on leave and close, a VF that went away seen as such.
Needs root and namespaces."""

from __future__ import annotations

import json
from typing import Any

import pytest
from support.namespaces import NetnsFactory

from hvuio.errors import DeviceNotFoundError
from hvuio.netdev import netns
from hvuio.netdev.tap import Tap
from hvuio.netdev.vfpath import VfPath

MAC = bytes.fromhex("00155d0000aa")


def filters(ns: str, dev: str, hook: str) -> list[dict[str, Any]]:
    out = netns.run(ns, ["tc", "-j", "filter", "show", "dev", dev, hook], check=False).stdout
    return [f for f in (json.loads(out) if out.strip() else []) if "actions" in f.get("options", {})]


def redirect_of(f: dict[str, Any]) -> tuple[str, str, str]:
    [action] = f["options"]["actions"]
    return action["direction"], action["mirred_action"], action["to_dev"]


def link(ns: str | None, name: str) -> dict[str, Any]:
    args = ("-n", ns) if ns else ()
    return dict(json.loads(netns.ip(*args, "-d", "-j", "link", "show", "dev", name).stdout)[0])


@pytest.fixture
def tap(netns_factory: NetnsFactory) -> Any:
    ns = netns_factory.namespace("g", ipv6=True)
    t = Tap.open(netns_factory.ifname("g"), MAC, 1400, netns=ns)
    netns_factory.defer("close tap", t.close)
    t.up()
    return t


def test_join_redirects_both_ways_and_leave_removes_the_rules(netns_factory: NetnsFactory, tap: Tap) -> None:
    ns = tap.netns
    assert ns is not None
    vf, peer = netns_factory.ifname("vf"), netns_factory.ifname("vp")
    other = netns_factory.namespace("h")
    netns.add_veth(vf, ns, peer, other)
    path = VfPath(tap.name, ns, 1400, lambda serial: vf if serial == 5 else None)
    try:
        assert path.look(4) is None and path.look(5) == vf
        path.join(vf)
        shown = link(ns, vf)
        assert "UP" in shown["flags"] and shown["mtu"] == 1400
        assert shown["inet6_addr_gen_mode"] == "none"
        [ingress] = filters(ns, vf, "ingress")
        assert redirect_of(ingress) == ("ingress", "redirect", tap.name)
        assert filters(ns, tap.name, "egress") == []
        path.tx(True)
        [egress] = filters(ns, tap.name, "egress")
        assert redirect_of(egress) == ("egress", "redirect", vf)
        path.tx(False)
        assert filters(ns, tap.name, "egress") == []
        assert path.present() and set(path.counters()) == {"vf_rx_packets", "vf_rx_bytes", "vf_tx_packets",
                                                             "vf_tx_bytes"}
        path.leave(vf)
        assert filters(ns, vf, "ingress") == [] and path.vf is None
        path.join(vf)                                   # again: the rules are replaced, not doubled
        path.join(vf)
        assert len(filters(ns, vf, "ingress")) == 1
        path.tx(True)
    finally:
        path.close()
    assert filters(ns, tap.name, "egress") == [] and filters(ns, vf, "ingress") == []


def test_a_vf_in_this_namespace_is_moved_beside_the_tap(netns_factory: NetnsFactory, tap: Tap) -> None:
    ns = tap.netns
    assert ns is not None
    vf, peer = netns_factory.ifname("vf"), netns_factory.ifname("vp")
    other = netns_factory.namespace("h")
    netns.ip("link", "add", vf, "type", "veth", "peer", "name", peer, "netns", other)
    netns_factory.defer(f"delete {vf}", lambda: netns.ip("link", "del", vf, check=False))
    path = VfPath(tap.name, ns, 1400, lambda serial: vf)
    try:
        assert path.look(1) == vf
        assert vf in netns.list_links(prefix=vf, netns=ns) and vf not in netns.list_links(prefix=vf)
    finally:
        path.close()


def test_a_vf_that_went_away(netns_factory: NetnsFactory, tap: Tap) -> None:
    ns = tap.netns
    assert ns is not None
    vf, peer = netns_factory.ifname("vf"), netns_factory.ifname("vp")
    other = netns_factory.namespace("h")
    netns.add_veth(vf, ns, peer, other)
    path = VfPath(tap.name, ns, 1400, lambda serial: vf)
    try:
        path.join(vf)
        path.tx(True)
        netns.ip("-n", other, "link", "del", peer)      # the host took the VF away (both ends go)
        assert not path.present()
        path.tx(False)
        path.leave(vf, gone=True)
        assert filters(ns, tap.name, "egress") == []
        with pytest.raises(DeviceNotFoundError, match="does not exist"):
            path.join(vf)
    finally:
        path.close()
