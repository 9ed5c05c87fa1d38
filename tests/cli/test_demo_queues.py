"""`hvuio demo --queues N` without root: the ports that steer stream k to queue k under the host's
RSS, and the text report's per-stream and per-queue lines."""

from __future__ import annotations

import pytest

from hvuio.cli.demo import render
from hvuio.demo import GUEST_IP, HOST_IP, TCP_PORT, _tcp_frame, steered_ports
from hvuio.proto.rss import LINUX_KEY, default_table
from hvuio.sim.host.rss import RssState

TCP_TYPES = 0x1701  # Toeplitz, IPV4, TCP_IPV4, IPV6, TCP_IPV6 (what the guest asks of the emulator)


def _rss(queues: int) -> dict[str, object]:
    return {"enabled": True, "key": LINUX_KEY.hex(), "table": list(default_table(128, queues)), "hash_info": TCP_TYPES}


@pytest.mark.parametrize("queues", [2, 3, 4])
def test_each_stream_is_steered_to_its_own_queue(queues: int) -> None:
    ports = steered_ports(_rss(queues), queues, GUEST_IP, HOST_IP)
    state = RssState(LINUX_KEY, default_table(128, queues), TCP_TYPES)
    assert [p for p, _ in ports] == [TCP_PORT + k for k in range(queues)]
    assert len({s for _, s in ports}) == queues and all(s >= 61000 for _, s in ports)
    for k, (port, src) in enumerate(ports):  # frames host -> guest: the guest's source port is their destination
        assert state.queue(_tcp_frame(HOST_IP, GUEST_IP, port, src), queues) == k


def test_without_rss_or_with_one_queue_the_kernel_picks_source_ports() -> None:
    assert steered_ports({"enabled": False}, 2, GUEST_IP, HOST_IP) == [(TCP_PORT, 0), (TCP_PORT + 1, 0)]
    assert steered_ports(_rss(1), 1, GUEST_IP, HOST_IP) == [(TCP_PORT, 0)]


def _stream(port: int, n: int) -> dict[str, object]:
    side = {"bytes": n, "sha256": "ab" * 32, "seconds": 0.5}
    return {"sent": side, "received": side, "exact": True, "mbit_s": 100.0, "port": port, "source_port": 61000}


def test_text_report_names_every_stream_and_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    import hvuio.cli.demo as demo_cli

    monkeypatch.setattr(demo_cli, "render_info", lambda nic: "(negotiated parameters)")
    streams = [_stream(TCP_PORT, 1024), _stream(TCP_PORT + 1, 2048)]
    stats = {f"{d}_queue_{k}_{u}": 10 * k + 1 for k in (0, 1) for d in ("tx", "rx") for u in ("packets", "bytes")}
    result = {"kernel": "6.17", "tap": "g", "guest_netns": "hvu-guest-1", "host_ifname": "hn", "host_netns": "hvu-net-1",
              "nic": {}, "ping": {}, "tcp": streams[0], "tcp_streams": streams, "tcp_mbit_s": 200.0, "stats": stats}
    out = render(result).splitlines()
    assert any(line.startswith(f"TCP stream 0 (port {TCP_PORT}) 1024 bytes") for line in out), out
    assert any(line.startswith(f"TCP stream 1 (port {TCP_PORT + 1}) 2048 bytes") for line in out), out
    assert "TCP  2 streams in parallel: 200.0 Mbit/s together" in out
    assert "Queue 0: tx 1 packets / 1 bytes, rx 1 packets / 1 bytes" in out
    assert "Queue 1: tx 11 packets / 11 bytes, rx 11 packets / 11 bytes" in out
