"""vRSS as the emulated host applies it: the guest's receive-scale parameters, the Toeplitz hash of
a frame from the network, and the queue (channel) that frame goes to.

What lives here: `RssState` (what a successful OID_GEN_RECEIVE_SCALE_PARAMETERS leaves: key,
indirection table at the host's size, hash information), `parse_parameters` (OpenVMM's acceptance
rules and the RNDIS status of each refusal), `Toeplitz` (the Microsoft RSS hash over one key),
`hash_input` (which bytes of a frame are hashed under the enabled hash types, and as which type)
and `RssState.queue` (the channel a frame goes to). The C fast path has its own twin
(_native/simhost/rss.c), held equal frame by frame by tests.

Sources: [OV] microsoft/openvmm vm/devices/net/netvsp/src/lib.rs `oid_set_rss_parameters`,
`restart_queues`; [OV-MANA] vm/devices/net/net_mana/src/lib.rs `get_queues_inner` (the backend
that steers by the table: queue 0 is the default receive object for frames that cannot be hashed
and for table entries naming no queue); [OV-MANA-DRV] vm/devices/net/mana_driver/src/bnic_driver.rs
(`default_rxobj`). Hash inputs follow the NDIS RSS hash types (source address, destination address,
then source and destination port for the TCP/UDP types).

What must not live here: RNDIS framing (rndis.py), receive sections (receive.py), channels and
rings (hvuio.sim.vsp).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import lru_cache

from hvuio.sim.host import wire as w

KEY_SIZE = 40  # [OV] hash_secret_key_size must be 40

# NDIS hash types (golden ndis_hash; the UDP ones are NDIS 6.80, [OV-R] rndisprot.rs).
HASH_IPV4 = 0x100
HASH_TCP_IPV4 = 0x200
HASH_IPV6 = 0x400
HASH_IPV6_EX = 0x800
HASH_TCP_IPV6 = 0x1000
HASH_TCP_IPV6_EX = 0x2000
HASH_UDP_IPV4 = 0x4000
HASH_UDP_IPV6 = 0x8000
HASH_UDP_IPV6_EX = 0x10000
HASH_NAMES = {
    HASH_IPV4: "IPV4", HASH_TCP_IPV4: "TCP_IPV4", HASH_IPV6: "IPV6", HASH_IPV6_EX: "IPV6_EX",
    HASH_TCP_IPV6: "TCP_IPV6", HASH_TCP_IPV6_EX: "TCP_IPV6_EX", HASH_UDP_IPV4: "UDP_IPV4",
    HASH_UDP_IPV6: "UDP_IPV6", HASH_UDP_IPV6_EX: "UDP_IPV6_EX",
}
# The types the emulator hashes by; the _EX ones (addresses from IPv6 extension headers) are not
# applied: the host's capabilities offer none of them (wire.ndis_rss_caps).
APPLIED = HASH_IPV4 | HASH_TCP_IPV4 | HASH_IPV6 | HASH_TCP_IPV6 | HASH_UDP_IPV4 | HASH_UDP_IPV6

ETH_P_IPV4 = 0x0800
ETH_P_IPV6 = 0x86DD
ETH_P_8021Q = 0x8100
IPPROTO_TCP = 6
IPPROTO_UDP = 17


@dataclass(frozen=True, slots=True)
class RssState:
    """RSS as the guest enabled it: `table` always has the host's size ([OV] repeats a shorter one)."""

    key: bytes
    table: tuple[int, ...]
    hash_info: int

    @property
    def hash_types(self) -> list[str]:
        return [name for bit, name in HASH_NAMES.items() if self.hash_info & bit]

    def hash(self, frame: bytes) -> tuple[int, int] | None:
        """(Toeplitz hash, NDIS hash type) of a frame, or None when no enabled type applies."""
        found = hash_input(frame, self.hash_info)
        if found is None:
            return None
        data, htype = found
        return Toeplitz.of(self.key).hash(data), htype

    def queue(self, frame: bytes, queues: int) -> int:
        """The queue a frame goes to among `queues` (primary + granted subchannels): the table's
        entry for its hash; queue 0 for a frame that cannot be hashed or an entry past `queues`
        ([OV-MANA] default_rxobj, `queue_resources.get(queue_id).unwrap_or(queue 0)`)."""
        found = self.hash(frame)
        if found is None:
            return 0
        q = self.table[found[0] % len(self.table)]
        return q if q < queues else 0


def status(state: RssState | None, queues: int) -> dict[str, object]:
    """What `hvuio sim status` shows of RSS: on/off, hash types, table size, queues granted, and
    (for `--json`: what a test needs to predict a frame's queue) the NDIS hash information, the
    key in hex and the table."""
    return {"enabled": state is not None, "hash_types": state.hash_types if state else [],
            "table_size": len(state.table) if state else 0, "queues": queues,
            "hash_info": state.hash_info if state else 0, "key": state.key.hex() if state else "",
            "table": list(state.table) if state else []}


def parse_parameters(info: bytes, max_queues: int, table_size: int,
                     current: RssState | None) -> tuple[int, str, int, RssState | None]:
    """(RNDIS status, offending field, value, new state) for one SET of the parameters.

    [OV] `oid_set_rss_parameters`: the NDIS header is not checked ("Vmswitch doesn't validate the
    NDIS header"); a short object is read as far as it goes, the rest zero; the DISABLE flag or no
    hash function bit turns RSS off; else the key size must be 40 and the table size a non-zero
    multiple of 4 (INVALID_DATA), key and table are read at their offsets from the object's start
    (outside the info buffer: FAILURE), at most `table_size` entries are read and a shorter table
    is repeated to fill it, and an entry >= the host's queue count is INVALID_DATA. On a refusal
    the earlier state stays.
    """
    params = info[:w.NDIS_RSS_PARAMS_SIZE].ljust(w.NDIS_RSS_PARAMS_SIZE, b"\0")
    flags, _bcpu, hash_info, ind_size = struct.unpack_from("<HHIH", params, 4)
    (ind_off,) = struct.unpack_from("<I", params, 16)
    (key_size,) = struct.unpack_from("<H", params, 20)
    (key_off,) = struct.unpack_from("<I", params, 24)
    if flags & w.NDIS_RSS_FLAG_DISABLE or hash_info & w.NDIS_HASH_FUNCTION_MASK == 0:
        return w.RNDIS_STATUS_SUCCESS, "", 0, None
    if key_size != KEY_SIZE:
        return w.RNDIS_STATUS_INVALID_DATA, "hash_secret_key_size", key_size, current
    if ind_size % 4 or ind_size == 0:
        return w.RNDIS_STATUS_INVALID_DATA, "indirection_table_size", ind_size, current
    if key_off + KEY_SIZE > len(info):
        return w.RNDIS_STATUS_FAILURE, "hash_secret_key_offset", key_off, current
    count = min(ind_size // 4, table_size)
    if ind_off + 4 * count > len(info):
        return w.RNDIS_STATUS_FAILURE, "indirection_table_offset", ind_off, current
    given = struct.unpack_from(f"<{count}I", info, ind_off)
    bad = [q for q in given if q >= max_queues]
    if bad:
        return w.RNDIS_STATUS_INVALID_DATA, "indirection_table", bad[0], current
    table = tuple(given[i % count] for i in range(table_size))
    return w.RNDIS_STATUS_SUCCESS, "", 0, RssState(bytes(info[key_off:key_off + KEY_SIZE]), table, hash_info)


def hash_input(frame: bytes, hash_info: int) -> tuple[bytes, int] | None:
    """The bytes hashed for a frame and their NDIS hash type, or None (not hashed: queue 0).

    IPv4: TCP with TCP_IPV4 (or UDP with UDP_IPV4), not a fragment -> source address, destination
    address, source port, destination port; else with IPV4 -> the two addresses. IPv6 likewise
    (TCP_IPV6 / UDP_IPV6 when the transport header follows the fixed header directly, else IPV6).
    One 802.1Q tag is skipped. Anything else (ARP, a truncated header) is not hashed.
    """
    types = hash_info & APPLIED
    if len(frame) < 14:
        return None
    eth_type, at = struct.unpack_from("!H", frame, 12)[0], 14
    if eth_type == ETH_P_8021Q and len(frame) >= 18:
        eth_type, at = struct.unpack_from("!H", frame, 16)[0], 18
    if eth_type == ETH_P_IPV4 and len(frame) >= at + 20 and frame[at] >> 4 == 4:
        ihl = (frame[at] & 0xF) * 4
        addrs = frame[at + 12:at + 20]
        proto = frame[at + 9]
        fragment = struct.unpack_from("!H", frame, at + 6)[0] & 0x3FFF
        l4 = at + ihl
        l4_type = {IPPROTO_TCP: HASH_TCP_IPV4, IPPROTO_UDP: HASH_UDP_IPV4}.get(proto, 0)
        if ihl >= 20 and l4_type & types and not fragment and len(frame) >= l4 + 4:
            return addrs + frame[l4:l4 + 4], l4_type
        return (addrs, HASH_IPV4) if types & HASH_IPV4 else None
    if eth_type == ETH_P_IPV6 and len(frame) >= at + 40 and frame[at] >> 4 == 6:
        addrs = frame[at + 8:at + 40]
        l4 = at + 40
        l4_type = {IPPROTO_TCP: HASH_TCP_IPV6, IPPROTO_UDP: HASH_UDP_IPV6}.get(frame[at + 6], 0)
        if l4_type & types and len(frame) >= l4 + 4:
            return addrs + frame[l4:l4 + 4], l4_type
        return (addrs, HASH_IPV6) if types & HASH_IPV6 else None
    return None


class Toeplitz:
    """The Microsoft RSS Toeplitz hash over one 40-byte key: for every set input bit i (most
    significant bit of byte 0 first), XOR the 32 key bits starting at bit i. Precomputed per
    (input byte position, byte value); inputs up to 36 bytes (IPv6 4-tuple)."""

    MAX_INPUT = 36

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_SIZE:
            raise ValueError(f"Toeplitz key must be {KEY_SIZE} bytes, got {len(key)}")
        k = int.from_bytes(key, "big")
        bits = 8 * KEY_SIZE
        window = [(k >> (bits - 32 - i)) & 0xFFFFFFFF for i in range(8 * self.MAX_INPUT)]
        self._table = [[0] * 256 for _ in range(self.MAX_INPUT)]
        for pos in range(self.MAX_INPUT):
            row = self._table[pos]
            for value in range(1, 256):
                h = 0
                for bit in range(8):
                    if value & (0x80 >> bit):
                        h ^= window[8 * pos + bit]
                row[value] = h

    @staticmethod
    @lru_cache(maxsize=16)
    def of(key: bytes) -> Toeplitz:
        return Toeplitz(key)

    def hash(self, data: bytes) -> int:
        if len(data) > self.MAX_INPUT:
            raise ValueError(f"Toeplitz input is at most {self.MAX_INPUT} bytes, got {len(data)}")
        h = 0
        for pos, value in enumerate(data):
            h ^= self._table[pos][value]
        return h
