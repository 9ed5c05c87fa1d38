"""The emulated host's vRSS (hvuio.sim.host.rss): the Toeplitz hash against Microsoft's published
verification vectors and an independent implementation (tests/support/toeplitz.py), what is hashed
under which hash types, and the queue a frame goes to through HostNvsp once the guest set RSS."""

from __future__ import annotations

import ipaddress
import random
import struct

import pytest

from hvuio.sim.host import rss
from hvuio.sim.host.profile import HostProfile
from support.simhost import NVS_V5, OID, RST, Env, c, rss_params, set_status
from support.toeplitz import (
    IPV4, IPV6, MS_KEY, MS_VECTORS, TCP_IPV4, TCP_IPV6, UDP_IPV4, UDP_IPV6, expected_hash, expected_queue,
    flow_frame, toeplitz,
)

LINUX_TYPES = 0x1701  # rndis_set_rss_param_msg: Toeplitz | IPV4 | TCP_IPV4 | IPV6 | TCP_IPV6


@pytest.mark.parametrize("vector", MS_VECTORS, ids=lambda v: v[0])
def test_toeplitz_matches_the_published_vectors(vector: tuple[str, int, str, int, int, int]) -> None:
    src, sport, dst, dport, h_addr, h_ports = vector
    addrs = ipaddress.ip_address(src).packed + ipaddress.ip_address(dst).packed
    ports = struct.pack("!HH", sport, dport)
    assert toeplitz(MS_KEY, addrs) == h_addr and toeplitz(MS_KEY, addrs + ports) == h_ports  # the reference
    t = rss.Toeplitz(MS_KEY)
    assert t.hash(addrs) == h_addr and t.hash(addrs + ports) == h_ports
    # and through the frame parser: TCP frames of that flow under each hash-type choice
    frame = flow_frame(src, dst, 6, sport, dport)
    state = rss.RssState(MS_KEY, tuple(range(128)), LINUX_TYPES)
    assert state.hash(frame) == (h_ports, rss.HASH_TCP_IPV4 if "." in src else rss.HASH_TCP_IPV6)
    addr_only = rss.RssState(MS_KEY, tuple(range(128)), 0x1 | IPV4 | IPV6)
    assert addr_only.hash(frame) == (h_addr, rss.HASH_IPV4 if "." in src else rss.HASH_IPV6)


def test_toeplitz_agrees_with_the_reference_on_random_keys_and_inputs() -> None:
    rnd = random.Random(7)
    for _ in range(50):
        key = rnd.randbytes(40)
        data = rnd.randbytes(rnd.choice((8, 12, 32, 36)))
        assert rss.Toeplitz(key).hash(data) == toeplitz(key, data)


FLOWS = [("198.18.0.1", "198.18.0.2"), ("10.1.2.3", "10.9.8.7"), ("fd00::1", "fd00::2"),
         ("2001:db8::5", "2001:db8:1::9")]


@pytest.mark.parametrize("types", [LINUX_TYPES, 0x1 | IPV4 | IPV6, 0x1 | TCP_IPV4, 0x1 | UDP_IPV4 | UDP_IPV6 | IPV4,
                                   0x1 | TCP_IPV6 | IPV4])
def test_hash_input_follows_the_ndis_hash_types(types: int) -> None:
    """TCP/UDP with their type enabled: addresses + ports; else the addresses with IPV4/IPV6
    enabled; else not hashed. Fragments and other protocols: addresses only."""
    rnd = random.Random(types)
    key = rnd.randbytes(40)
    state = rss.RssState(key, tuple(range(128)), types)
    for src, dst in FLOWS:
        for proto in (6, 17, 1):
            for frag in (False, True) if "." in src else (False,):
                frame = flow_frame(src, dst, proto, rnd.randrange(65536), rnd.randrange(65536), fragment=frag)
                want = expected_hash(frame, key, types)
                got = state.hash(frame)
                assert (got[0] if got else None) == want, (src, proto, frag)


def test_frames_that_cannot_be_hashed_go_to_queue_0() -> None:
    state = rss.RssState(MS_KEY, (3,) * 128, LINUX_TYPES)
    arp = b"\xff" * 6 + b"\x02" * 6 + b"\x08\x06" + bytes(28)
    assert state.queue(arp, 4) == 0 and state.queue(arp[:10], 4) == 0
    assert state.queue(flow_frame("10.0.0.1", "10.0.0.2"), 4) == 3
    assert state.queue(flow_frame("10.0.0.1", "10.0.0.2"), 3) == 0  # entry past the granted queues
    tagged = flow_frame("10.0.0.1", "10.0.0.2")
    tagged = tagged[:12] + b"\x81\x00\x00\x05" + tagged[12:]  # one 802.1Q tag is looked through
    assert state.hash(tagged) == state.hash(flow_frame("10.0.0.1", "10.0.0.2"))


def test_host_steers_each_flow_to_the_queue_the_guest_table_names() -> None:
    """HostNvsp.rx_queue: queue 0 before RSS is set and after it is disabled; with RSS, the
    table entry for each flow's hash as computed independently."""
    env = Env(HostProfile(max_subchannels=3))
    env.bring_up(NVS_V5)
    env.send_nvsp(struct.pack("<III", c("nvs_msg_type", "NVS_TYPE_SUBCH_REQ"), 1, 3))
    assert env.host.subchannels == 3
    rnd = random.Random(1)
    frames = [flow_frame(s, d, rnd.choice((6, 17)), rnd.randrange(65536), rnd.randrange(65536))
              for s, d in FLOWS for _ in range(16)]
    assert {env.host.rx_queue(f) for f in frames} == {0}  # RSS not set: all on the primary
    key = rnd.randbytes(40)
    table = [rnd.randrange(4) for _ in range(128)]
    oid = c(OID, "OID_GEN_RECEIVE_SCALE_PARAMETERS")
    assert set_status(env, oid, rss_params(tuple(table), key=key))[0] == c(RST, "RNDIS_STATUS_SUCCESS")
    got = [env.host.rx_queue(f) for f in frames]
    assert got == [expected_queue(f, key, table, LINUX_TYPES, 4) for f in frames]
    assert len(set(got)) > 1  # the flows did spread
    set_status(env, oid, rss_params(flags=c("ndis_rss", "NDIS_RSS_FLAG_DISABLE")))
    assert {env.host.rx_queue(f) for f in frames} == {0}
