"""The C data path on a real tap (root, a namespace the test makes): the kernel pings an address
"behind" the fake host; the pump thread carries ARP and ICMP through vnet-header tap reads, send
sections and NVS 107, and the replies back through transfer pages and tap writes.

The fake host runs in a second thread over the same rings (as the real host runs beside the
guest): it completes every send, answers ARP requests and ICMP echo requests for PEER_IP, and
interrupts the guest through the irq socketpair. No traffic leaves the test's namespace.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
from collections.abc import Iterator

import pytest

from hvuio.native.datapath import DataPath, RunResult
from hvuio.netdev.tap import Tap
from support.namespaces import NetnsFactory, ping
from support.fakehost import FakeHost, rndis_packet

GUEST_MAC = bytes.fromhex("020000000a01")
PEER_MAC = bytes.fromhex("020000000a02")
GUEST_IP, PEER_IP = "198.18.7.1", "198.18.7.2"


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def answer(frame: bytes) -> bytes | None:
    """ARP reply or ICMP echo reply from PEER for a frame the guest sent, else None."""
    dst, src, ethertype = frame[:6], frame[6:12], struct.unpack("!H", frame[12:14])[0]
    peer = socket.inet_aton(PEER_IP)
    if ethertype == 0x0806 and frame[20:22] == b"\0\1" and frame[38:42] == peer:
        arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 2) + PEER_MAC + peer + frame[22:28] + frame[28:32]
        return src + PEER_MAC + b"\x08\x06" + arp
    if ethertype == 0x0800 and dst == PEER_MAC and frame[23] == 1 and frame[30:34] == peer:
        ihl = (frame[14] & 0xF) * 4
        ip = bytearray(frame[14:14 + ihl])
        total = struct.unpack("!H", ip[2:4])[0]
        icmp = bytearray(frame[14 + ihl:14 + total])
        if icmp[0] != 8:
            return None
        icmp[0] = 0
        icmp[2:4] = b"\0\0"
        icmp[2:4] = struct.pack("!H", _csum(bytes(icmp)))
        ip[12:16], ip[16:20] = frame[30:34], frame[26:30]
        ip[10:12] = b"\0\0"
        ip[10:12] = struct.pack("!H", _csum(bytes(ip)))
        return src + PEER_MAC + b"\x08\x00" + bytes(ip) + bytes(icmp)
    return None


class Responder(threading.Thread):
    """The host side: drains the outbound ring, completes sends, answers, interrupts the guest."""

    def __init__(self, host: FakeHost) -> None:
        super().__init__(name="fake-host", daemon=True)
        self.host = host
        self.stop = threading.Event()
        self.frames_seen = 0
        self.error: BaseException | None = None
        self.next_section = 0
        self.tid = 1

    def run(self) -> None:
        h = self.host
        try:
            while not self.stop.wait(0.002):
                pkts, _ = h.reader.read_batch(256)
                wake = False
                for p in pkts:
                    if p.type == 0xB:                         # our receive completions: section free again
                        continue
                    nvs_type, _chan, idx, size = struct.unpack_from("<IIII", p.payload)
                    msg = h.section_bytes(idx, size)
                    doff, dlen = struct.unpack_from("<II", msg, 8)
                    frame = msg[8 + doff:8 + doff + dlen]
                    self.frames_seen += 1
                    wake |= h.writer.write(0xB, struct.pack("<II", 108, 1) + bytes(32), trans_id=p.trans_id)
                    reply = answer(frame)
                    if reply is not None:
                        rng = h.place(self.next_section, rndis_packet(reply))
                        self.next_section = (self.next_section + 1) % 16
                        wake |= h.send_xfer([rng], trans_id=self.tid)
                        self.tid += 1
                if wake:
                    h.interrupt_guest()
        except BaseException as exc:  # surfaced by the test
            self.error = exc


@pytest.fixture
def tap_host(netns_factory: NetnsFactory) -> Iterator[tuple[str, Tap, FakeHost]]:
    ns = netns_factory.namespace("dp")
    tap = Tap.open(netns_factory.ifname("dp"), GUEST_MAC, 1500, netns=ns)   # vnet header on
    netns_factory.defer("close tap", tap.close)
    tap.add_address(f"{GUEST_IP}/24")
    tap.up()
    os.set_blocking(tap.fileno(), False)
    host = FakeHost(vnet_hdr=True)
    netns_factory.defer("close fake host", host.close)
    yield ns, tap, host


def test_ping_through_the_c_data_path(tap_host: tuple[str, Tap, FakeHost]) -> None:
    ns, tap, host = tap_host
    exits: list[tuple[RunResult, BaseException | None]] = []
    # host.dp (over the tap socketpair) stays idle; the DataPath under test uses the real tap
    pump = DataPath(tx_ring=host.tx_ring, rx_ring=host.rx_ring, recv_buf=host.recv,
                    recv_section_size=host.recv_section, send_buf=host.send,
                    send_section_size=host.send_section, send_section_count=8, tap_fd=tap.fileno(),
                    irq_fd=host.irq_guest.fileno(), vnet_hdr=True)
    responder = Responder(host)
    responder.start()
    pump.start(lambda d: d.read_control(), on_exit=lambda r, e: exits.append((r, e)), timeout_ms=100)
    try:
        out = ping(ns, PEER_IP, count=3)
    finally:
        pump.stop()
        responder.stop.set()
        responder.join(10)
    assert responder.error is None, responder.error
    assert exits == [(RunResult.STOPPED, None)]
    assert "3 received" in out
    c = pump.counters()
    assert c["tx_packets"] >= 4 and c["rx_packets"] >= 4          # ARP + 3 echo each way
    assert c["tx_packets"] == responder.frames_seen
    assert c["rx_bad_rndis"] == c["rx_tap_drop"] == c["tx_oversize"] == c["tx_runt"] == 0
