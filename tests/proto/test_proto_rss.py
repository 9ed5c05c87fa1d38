"""proto/rss.py: the RSS parameters the guest sets and the host's send table, against the golden
layouts and Linux's values (drivers/net/hyperv/rndis_filter.c rndis_set_rss_param_msg)."""

from __future__ import annotations

import struct

import pytest

from hvuio.errors import LocalProtocolError
from hvuio.proto import rss
from hvuio.wire import rndis as wr

from support.golden import GOLDEN

H = GOLDEN["constants"]["ndis_hash"]
R = GOLDEN["constants"]["ndis_rss"]


@pytest.mark.parametrize("caps,want", [
    (R["NDIS_RSS_CAP_IPV4"] | R["NDIS_RSS_CAP_IPV6"] | R["NDIS_RSS_CAP_HASH_TOEPLITZ"], 0x1701),  # Linux's value
    (R["NDIS_RSS_CAP_IPV4"], H["NDIS_HASH_FUNCTION_TOEPLITZ"] | H["NDIS_HASH_IPV4"] | H["NDIS_HASH_TCP_IPV4"]),
    (R["NDIS_RSS_CAP_IPV6"], H["NDIS_HASH_FUNCTION_TOEPLITZ"] | H["NDIS_HASH_IPV6"] | H["NDIS_HASH_TCP_IPV6"]),
    (R["NDIS_RSS_CAP_IPV6_EX"], 0),   # extension-header types are never asked
    (R["NDIS_RSS_CAP_HASH_TOEPLITZ"], 0),
])
def test_hash_types_follow_the_capabilities(caps: int, want: int) -> None:
    assert rss.hash_info_for(caps) == want


@pytest.mark.parametrize("entries,size", [(0, 128), (1, 1), (64, 64), (256, 256), (257, 128), (0xFFFF, 128)])
def test_table_size_rule(entries: int, size: int) -> None:
    assert rss.table_size_for(entries) == size


def test_parameters_layout() -> None:
    table = rss.default_table(128, 3)
    raw = rss.parameters(table, 0x1701)
    assert len(raw) == R["NDIS_RSS_PARAMS_SIZE"] + 4 * 128 + H["NDIS_HASH_KEYSIZE_TOEPLITZ"]
    assert len(raw) == GOLDEN["structs"]["ndis_rssprm_toeplitz"]["size"]   # DPDK's 128-entry object
    otype, rev, size, flags, bcpu, hinfo, tsize = struct.unpack_from("<BBHHHIH", raw)
    assert (otype, rev, size) == (GOLDEN["constants"]["ndis_objtype"]["NDIS_OBJTYPE_RSS_PARAMS"],
                                  R["NDIS_RSS_PARAMS_REV_2"], R["NDIS_RSS_PARAMS_SIZE"])
    assert (flags, bcpu, hinfo, tsize) == (0, 0, 0x1701, 512)
    toff, ksize, koff = struct.unpack_from("<IH2xI", raw, 16)
    assert (toff, ksize, koff) == (40, 40, 552)
    assert struct.unpack_from("<128I", raw, toff) == tuple(i % 3 for i in range(128))
    assert raw[koff:koff + 40] == rss.LINUX_KEY
    assert raw[28:40] == bytes(12)  # no processor masks
    disabled = rss.parameters(table, 0x1701, disable=True)
    assert struct.unpack_from("<H", disabled, 4)[0] == wr.NDIS_RSS_FLAG_DISABLE == 0x10
    assert disabled[6:] == raw[6:]


def test_linux_key() -> None:
    assert rss.LINUX_KEY.hex() == ("6d5a56da255b0ec24167253d43a38fb0d0ca2bcb"
                                   "ae7b30b477cb2da38030f20c6a42b73bbeac01fa")


@pytest.mark.parametrize("key,table", [(bytes(39), (0,)), (rss.LINUX_KEY, ()), (rss.LINUX_KEY, (0,) * 257)])
def test_parameters_refuse_what_no_host_takes(key: bytes, table: tuple[int, ...]) -> None:
    with pytest.raises(LocalProtocolError):
        rss.parameters(table, 0x1701, key=key)


def test_send_table_check() -> None:
    good = tuple(i % 4 for i in range(16))
    assert rss.check_send_table(good, 4) == (good, ())
    entries = (0, 1, 5, 2) * 4
    table, bad = rss.check_send_table(entries, 4)
    assert table == (0, 1, 1, 2) * 4 and bad == (5,) * 4
    huge = (0xFFFFFFFF,) * 16
    assert rss.check_send_table(huge, 3)[0] == (0xFFFFFFFF % 3,) * 16
    with pytest.raises(LocalProtocolError):
        rss.check_send_table(good, 0)
