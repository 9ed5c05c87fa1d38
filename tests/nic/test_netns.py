"""hvuio.netdev.netns: names, namespace lifetime, commands inside, veth pairs, leak listing, Cleanup."""

from __future__ import annotations

import pytest
from support.namespaces import NetnsFactory, ping, require_netns

from hvuio.netdev import netns
from hvuio.errors import PlatformError, UsageError


def test_random_names_are_prefixed_unique_and_fit() -> None:
    names = {netns.random_name("net") for _ in range(50)}
    assert len(names) == 50
    assert all(n.startswith("hvu-net-") and len(n) == len("hvu-net-") + 8 for n in names)
    ifname = netns.random_ifname("veth")
    assert ifname.startswith("hvu-veth-") and len(ifname) == 15
    with pytest.raises(UsageError):
        netns.random_name("bad role")
    with pytest.raises(UsageError, match="no room"):
        netns.random_ifname("averyverylongrole")


def test_cleanup_runs_every_action_lifo_and_reports_first_error() -> None:
    order: list[str] = []

    def boom() -> None:
        order.append("boom")
        raise RuntimeError("first failure")

    c = netns.Cleanup()
    c.push("a", lambda: order.append("a"))
    c.push("boom", boom)
    c.push("c", lambda: order.append("c"))
    with pytest.raises(RuntimeError, match="first failure") as info:
        c.close()
    assert order == ["c", "boom", "a"]
    assert "while cleaning up: boom" in "".join(info.value.__notes__)
    c.close()  # nothing left to run
    assert order == ["c", "boom", "a"]


def test_delete_refuses_foreign_names() -> None:
    with pytest.raises(UsageError, match="not created by hvuio"):
        netns.delete("production")


def test_namespace_context_deletes_even_on_failure() -> None:
    require_netns()
    seen = ""
    with pytest.raises(ZeroDivisionError):
        with netns.namespace("ctx") as name:
            seen = name
            assert netns.exists(name)
            assert name in netns.list_namespaces()
            1 / 0  # noqa: B018
    assert seen and not netns.exists(seen)
    assert netns.leaks([seen]) == []
    netns.delete(seen)  # already gone: not an error


def test_run_inside_namespace(netns_factory: NetnsFactory) -> None:
    ns = netns_factory.namespace()
    out = netns.run(ns, ["ip", "-o", "link", "show"]).stdout
    assert [line.split(":")[1].strip() for line in out.splitlines()] == ["lo"]
    assert netns.run(ns, ["sh", "-c", "exit 3"], check=False).returncode == 3
    with pytest.raises(PlatformError, match="exit code 3"):
        netns.run(ns, ["sh", "-c", "echo nope >&2; exit 3"])
    assert netns.run(ns, ["sysctl", "-n", "net.ipv6.conf.all.disable_ipv6"]).stdout.strip() == "1"
    with pytest.raises(UsageError, match="does not exist"):
        netns.run(netns.random_name("gone"), ["true"])


def test_veth_pair_across_namespaces_carries_ping(netns_factory: NetnsFactory) -> None:
    ns_a, ns_b = netns_factory.namespace("a"), netns_factory.namespace("b")
    va, vb = netns_factory.ifname("va"), netns_factory.ifname("vb")
    netns.add_veth(va, ns_a, vb, ns_b)
    assert netns.list_links(netns=ns_a) == [va]
    assert netns.list_links(netns=ns_b) == [vb]
    assert va not in netns.list_links() and vb not in netns.list_links()
    netns.add_address(ns_a, va, "198.18.9.1/24")
    netns.add_address(ns_b, vb, "198.18.9.2/24")
    out = ping(ns_a, "198.18.9.2", count=2)
    assert "2 received" in out
    with pytest.raises(UsageError, match="already exists"):
        netns.add_address(ns_a, va, "198.18.9.1/24")


def test_leaks_lists_what_is_left(netns_factory: NetnsFactory) -> None:
    ns = netns.create("leak")
    try:
        assert netns.leaks([ns]) == [f"netns {ns}"]
    finally:
        netns.delete(ns)
    assert netns.leaks([ns]) == []
