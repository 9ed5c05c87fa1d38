"""hvuio.sim.net: the wire side in its own namespace (ping and TCP from the guest tap's namespace
through a frame bridge standing in for the emulator), and hvuio.sim.pcap: the pcap sink/source."""

from __future__ import annotations

import pathlib
import select
import struct
import sys

import pytest
from support.namespaces import (
    Endpoint,
    FrameBridge,
    NetnsFactory,
    ping,
    single_reader,
)

from hvuio.netdev import netns
from hvuio.errors import UsageError
from hvuio.sim.net import DEFAULT_GUEST_ADDRESS, DEFAULT_HOST_ADDRESS, HostNetwork
from hvuio.sim.pcap import PcapNetwork, PcapSink, PcapSource
from hvuio.netdev.tap import Tap

GUEST_MAC = bytes.fromhex("02ee00000001")
HOST_IP = DEFAULT_HOST_ADDRESS.split("/")[0]


def make_host_network(f: NetnsFactory) -> HostNetwork:
    net = HostNetwork.create()
    f.namespaces.append(net.netns)  # leak-checked at teardown
    f.defer("close host network", net.close)
    return net


def test_host_network_owns_a_namespace_with_an_addressed_tap(netns_factory: NetnsFactory) -> None:
    net = make_host_network(netns_factory)
    assert net.netns.startswith("hvu-net-") and netns.exists(net.netns)
    assert net.ifname == "hvunet0"
    out = netns.ip("-n", net.netns, "-o", "addr", "show", "dev", "hvunet0").stdout
    assert DEFAULT_HOST_ADDRESS in out
    assert "hvunet0" not in netns.list_links(prefix="")  # not in the root namespace
    assert net.read_frames(8) == []  # IPv6 off: nothing queued, and the call does not block
    ns = net.netns
    net.close()
    assert not netns.exists(ns)


def test_write_frame_counts_drops(netns_factory: NetnsFactory) -> None:
    net = make_host_network(netns_factory)
    assert net.write_frame(b"\x00" * 10) is False
    assert net.write_frame(b"\x02" * 12 + b"\x08\x00" + bytes(2000)) is False  # over MTU 1500
    ok = b"\xff" * 6 + GUEST_MAC + b"\x88\xb5" + bytes(46)  # local experimental ethertype
    assert net.write_frame(ok) is True
    c = net.counters
    assert (c.to_net_drops, c.to_net_frames, c.to_net_bytes) == (2, 1, len(ok))
    with pytest.raises(UsageError):
        net.read_frames(0)


def test_create_failure_leaves_no_namespace(netns_factory: NetnsFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[str] = []
    real_create = netns.create

    def recording_create(role: str = "ns", *, ipv6: bool = True) -> str:
        made.append(real_create(role, ipv6=ipv6))
        netns_factory.namespaces.append(made[-1])  # leak-checked at teardown as well
        return made[-1]

    monkeypatch.setattr(netns, "create", recording_create)
    with pytest.raises(UsageError, match="not an IP address"):
        HostNetwork.create(address="198.18.0.1/99")
    assert len(made) == 1 and made[0].startswith("hvu-net-")
    assert not netns.exists(made[0])


def test_given_namespace_is_left_in_place(netns_factory: NetnsFactory) -> None:
    ns = netns_factory.namespace("n")
    net = HostNetwork.create(netns=ns, ifname="wire0", address="198.18.3.1/24", mtu=9000)
    try:
        assert net.netns == ns and net.ifname == "wire0"
        assert netns.list_links(prefix="wire", netns=ns) == ["wire0"]
        assert net.tap.state().mtu == 9000 and net.tap.state().admin_up
    finally:
        net.close()
    assert netns.exists(ns)
    assert netns.list_links(prefix="wire", netns=ns) == []


TCP_ECHO = """
import socket, sys
srv = socket.create_server((sys.argv[1], int(sys.argv[2])))
srv.settimeout(30)
print("ready", flush=True)
conn, _ = srv.accept()
conn.settimeout(30)
data = b""
while not data.endswith(b"\\n"):
    chunk = conn.recv(65536)
    if not chunk:
        break
    data += chunk
conn.sendall(data.upper())
conn.close()
"""
TCP_CLIENT = """
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=30)
c.sendall(b"x" * 20000 + b"\\n")
data = b""
while True:
    chunk = c.recv(65536)
    if not chunk:
        break
    data += chunk
print(len(data), data[:3].decode(), data.count(b"X"))
"""


def test_guest_tap_reaches_host_network_through_a_bridge(netns_factory: NetnsFactory) -> None:
    """The plumbing the emulator uses: guest tap (vnet header) ⇄ bridge ⇄ HostNetwork."""
    ns_guest = netns_factory.namespace("g")
    net = make_host_network(netns_factory)
    guest = Tap.open("hvuguest0", GUEST_MAC, 1500, netns=ns_guest)
    netns_factory.defer("close guest tap", guest.close)
    guest.up()
    guest.add_address(DEFAULT_GUEST_ADDRESS)

    server = netns.popen(net.netns, [sys.executable, "-c", TCP_ECHO, HOST_IP, "7777"])
    netns_factory.defer("stop server", lambda: (server.kill(), server.communicate()))
    assert server.stdout is not None and server.stdout.readline().strip() == "ready"

    guest_end = Endpoint(guest.fileno(), single_reader(guest.read_frame), guest.write_frame)
    net_end = Endpoint(net.fileno(), net.read_frames, net.write_frame)
    with FrameBridge(guest_end, net_end):
        out = ping(ns_guest, HOST_IP, count=3)
        tcp = netns.run(ns_guest, [sys.executable, "-c", TCP_CLIENT, HOST_IP, "7777"]).stdout.split()
    assert "3 packets transmitted, 3 received" in out
    assert tcp == ["20001", "XXX", "20000"]

    c = net.counters
    # 3 echo requests + ARP + TCP segments went out; replies came back; nothing dropped.
    assert c.to_net_frames >= 5 and c.from_net_frames >= 5
    assert c.to_net_drops == 0 and c.from_net_drops == 0
    assert guest_end.frames_in == c.to_net_frames
    assert net_end.frames_in == c.from_net_frames
    assert c.to_net_bytes > 20000 and c.from_net_bytes > 20000


# ------------------------------------------------------------------ pcap (no root needed)

FRAMES = [
    b"\xff" * 6 + GUEST_MAC + b"\x08\x06" + bytes(28) + bytes(18),
    bytes(range(256)) * 6,  # 1536 bytes, arbitrary content
    b"\x02" * 12 + b"\x88\xb5" + b"tail",
]


def test_pcap_sink_writes_a_valid_file(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "out.pcap"
    with PcapSink(path, snaplen=1000) as sink:
        for i, frame in enumerate(FRAMES):
            sink.write(frame, timestamp_ns=1_700_000_000_123_456_789 + i * 1000)
    raw = path.read_bytes()
    magic, major, minor, zone, sigfigs, snaplen, linktype = struct.unpack_from("<IHHiIII", raw)
    assert (magic, major, minor, zone, sigfigs, snaplen, linktype) == (0xA1B2C3D4, 2, 4, 0, 0, 1000, 1)
    off, got = 24, []
    while off < len(raw):
        sec, usec, incl, orig = struct.unpack_from("<IIII", raw, off)
        got.append((sec, usec, raw[off + 16 : off + 16 + incl], orig))
        off += 16 + incl
    assert off == len(raw)
    assert [g[0] for g in got] == [1_700_000_000] * 3
    assert [g[1] for g in got] == [123_456, 123_457, 123_458]
    assert [g[2] for g in got] == [FRAMES[0], FRAMES[1][:1000], FRAMES[2]]
    assert [g[3] for g in got] == [len(f) for f in FRAMES]

    records = list(PcapSource(path))
    assert [r.data for r in records] == [FRAMES[0], FRAMES[1][:1000], FRAMES[2]]
    assert records[1].orig_len == 1536
    assert records[0].timestamp_ns == 1_700_000_000_123_456_000


def test_pcap_source_reads_big_endian_nanosecond_files(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "be.pcap"
    body = struct.pack(">IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 65535, 1)
    body += struct.pack(">IIII", 5, 999_999_999, len(FRAMES[2]), len(FRAMES[2])) + FRAMES[2]
    path.write_bytes(body)
    (rec,) = list(PcapSource(path))
    assert rec.data == FRAMES[2]
    assert rec.timestamp_ns == 5_999_999_999


@pytest.mark.parametrize(
    ("blob", "words"),
    [
        (b"\x00" * 10, "global header"),
        (struct.pack("<IHHiIII", 0x12345678, 2, 4, 0, 0, 65535, 1), r"magic \(read little-endian\) = 0x12345678"),
        (struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 101), "linktype = 0x65"),
        (struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 100, 1) + struct.pack("<IIII", 0, 0, 101, 101) + bytes(101), "incl_len = 0x65"),
        (struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 100, 1) + struct.pack("<IIII", 0, 0, 50, 60) + bytes(10), "past end of file"),
        (struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 100, 1) + struct.pack("<IIII", 0, 0, 20, 10) + bytes(20), "orig_len = 0xa"),
        (struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 100, 1) + b"\x00" * 7, "record header"),
        (struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 100, 1) + struct.pack("<IIII", 0, 1_000_000, 0, 0), "ts_usec"),
    ],
)
def test_pcap_source_rejects_malformed_files(tmp_path: pathlib.Path, blob: bytes, words: str) -> None:
    path = tmp_path / "bad.pcap"
    path.write_bytes(blob)
    with pytest.raises(UsageError, match=words):
        list(PcapSource(path))


def test_pcap_files_that_cannot_be_opened(tmp_path: pathlib.Path) -> None:
    with pytest.raises(UsageError, match="cannot read pcap file"):
        PcapSource(tmp_path / "missing.pcap")
    with pytest.raises(UsageError, match="cannot write pcap file"):
        PcapSink(tmp_path / "no-such-dir" / "out.pcap")


def readable(fd: int) -> bool:
    p = select.poll()
    p.register(fd, select.POLLIN)
    return bool(p.poll(0))


def test_pcap_network_injects_source_and_records_sink(tmp_path: pathlib.Path) -> None:
    src = tmp_path / "in.pcap"
    with PcapSink(src) as s:
        for frame in FRAMES + [b"short"]:
            s.write(frame)
    with PcapNetwork(tmp_path / "out.pcap", src) as net:
        assert readable(net.fileno())
        assert net.read_frames(2) == FRAMES[:2]
        assert readable(net.fileno())
        assert net.read_frames(10) == FRAMES[2:]  # the 5-byte record is dropped
        assert not readable(net.fileno())
        assert net.read_frames() == []
        assert net.write_frame(FRAMES[0]) is True
        assert net.write_frame(b"tiny") is False
        c = net.counters
        assert (c.from_net_frames, c.from_net_drops, c.to_net_frames, c.to_net_drops) == (3, 1, 1, 1)
    assert [r.data for r in PcapSource(tmp_path / "out.pcap")] == [FRAMES[0]]
