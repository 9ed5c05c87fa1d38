"""vRSS of the guest: the receive-scale parameters it asks of the host, and the host's send table.

What lives here, sans-IO (bytes and tuples, no channel, no logging):

* `LINUX_KEY`: the Toeplitz key Linux sends (drivers/net/hyperv/rndis_filter.c `netvsc_hash_key`);
* `hash_info_for(capabilities)`: the hash types to enable from the host's
  OID_GEN_RECEIVE_SCALE_CAPABILITIES bits, as DPDK maps them (drivers/net/netvsc/hn_rndis.c
  `hn_rndis_query_rsscaps`): IPv4 bit -> IPV4 | TCP_IPV4, IPv6 bit -> IPV6 | TCP_IPV6, always with
  the Toeplitz function. For a host offering both this is Linux's fixed 0x1701
  (rndis_filter.c `rndis_set_rss_param_msg`). The IPv6 extension-header types are not asked
  (Linux never does), and no UDP type: the capabilities carry no UDP bit, and neither Linux nor
  DPDK ask one;
* `table_size_for(entries)`: the receive table size, Linux's rule (rndis_filter.c
  `rndis_filter_device_add`): the host's entry count when 1..256, else 128;
* `parameters(...)`: the OID_GEN_RECEIVE_SCALE_PARAMETERS info buffer: the 40-byte head
  (wire.rndis.NdisRssParams), the table (`i % queues`, Linux `ethtool_rxfh_indir_default`), then
  the key, as Linux's `rndis_set_rss_param_msg` and DPDK's `hn_rndis_conf_rss` lay it out;
* `check_send_table(entries, queues)`: the host's send indirection table (NVSP 5 message 134)
  held against the queue count: Linux does not range-check it and its queue choice
  (netvsc_drv.c `netvsc_select_queue`) reduces an entry >= the queue count by repeated
  subtraction, so an out-of-range entry is reduced modulo the queue count here too, and reported.

What must not live here: the order of the RNDIS sets and when they are sent (proto/netvsc.py),
the table's wire parsing (proto/nvsp.py), logging and counting (hvuio/nicinfo.py, hvuio/nicnotices.py).
"""

from __future__ import annotations

import ctypes
from typing import Final

from hvuio.errors import LocalProtocolError
from hvuio.wire import rndis as wr

__all__ = ["LINUX_KEY", "DEFAULT_TABLE_SIZE", "MAX_TABLE_SIZE", "hash_info_for", "table_size_for", "parameters",
           "default_table", "check_send_table"]

#: Linux netvsc_hash_key (rndis_filter.c), 40 bytes.
LINUX_KEY: Final = bytes.fromhex(
    "6d5a56da255b0ec24167253d43a38fb0d0ca2bcbae7b30b477cb2da38030f20c6a42b73bbeac01fa")
#: Linux ITAB_NUM: the receive table size when the host names none that fits.
DEFAULT_TABLE_SIZE: Final = 128
#: Linux ITAB_NUM_MAX.
MAX_TABLE_SIZE: Final = 256

assert len(LINUX_KEY) == wr.NDIS_RSS_KEY_SIZE


def hash_info_for(capabilities: int) -> int:
    """Toeplitz and the hash types the host's capability bits offer (0: the host offers none)."""
    types = 0
    if capabilities & wr.RssCap.IPV4:
        types |= wr.RssHash.IPV4 | wr.RssHash.TCP_IPV4
    if capabilities & wr.RssCap.IPV6:
        types |= wr.RssHash.IPV6 | wr.RssHash.TCP_IPV6
    return int(types | wr.RssHash.TOEPLITZ) if types else 0


def table_size_for(entries: int) -> int:
    """The receive indirection table size for the host's `num_indirect_tabent`."""
    return entries if 1 <= entries <= MAX_TABLE_SIZE else DEFAULT_TABLE_SIZE


def default_table(size: int, queues: int) -> tuple[int, ...]:
    """Entry i is queue i % queues."""
    if queues < 1 or size < 1:
        raise LocalProtocolError(f"RSS table of {size} entries over {queues} queues")
    return tuple(i % queues for i in range(size))


def parameters(table: tuple[int, ...], hash_info: int, *, key: bytes = LINUX_KEY, disable: bool = False) -> bytes:
    """OID_GEN_RECEIVE_SCALE_PARAMETERS info buffer: head, table at byte 40, key after the table."""
    if len(key) != wr.NDIS_RSS_KEY_SIZE:
        raise LocalProtocolError(f"RSS key of {len(key)} bytes, not {wr.NDIS_RSS_KEY_SIZE}")
    if not 1 <= len(table) <= MAX_TABLE_SIZE:
        raise LocalProtocolError(f"RSS table of {len(table)} entries outside [1, {MAX_TABLE_SIZE}]")
    head = wr.NdisRssParams()
    head.header.type = wr.NdisObjectType.RSS_PARAMS
    head.header.revision = wr.NDIS_RSS_PARAMS_REV_2
    head.header.size = wr.NDIS_RSS_PARAMS_SIZE
    head.flags = wr.NDIS_RSS_FLAG_DISABLE if disable else 0
    head.hash_info = hash_info
    head.table_size = 4 * len(table)
    head.table_offset = wr.NDIS_RSS_PARAMS_SIZE
    head.key_size = len(key)
    head.key_offset = wr.NDIS_RSS_PARAMS_SIZE + 4 * len(table)
    raw = bytes(memoryview(head).cast("B"))
    assert len(raw) == ctypes.sizeof(wr.NdisRssParams) == wr.NDIS_RSS_PARAMS_SIZE
    table_bytes = b"".join(q.to_bytes(4, "little") for q in table)
    return raw + table_bytes + key


def check_send_table(entries: tuple[int, ...], queues: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(table to use, the host's entries that named no queue): an entry >= `queues` becomes
    entry % queues, as Linux's queue choice treats it."""
    if queues < 1:
        raise LocalProtocolError(f"send table over {queues} queues")
    bad = tuple(q for q in entries if q >= queues)
    return tuple(q % queues for q in entries), bad
