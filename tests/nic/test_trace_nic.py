"""A NIC traced against the emulator (no root): every control packet of bring-up, link changes,
the subchannel request and teardown is in the trace, in order, with its channel and direction, and
`hvuio trace` decodes each one; an untraced NIC writes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hvuio.nic import Nic
from hvuio.sim.host import profile as hp
from hvuio.sim.vsp.host import SimEnvironment
from hvuio.trace.decode import Decoder
from hvuio.trace.pcapng import file_header, read_trace
from hvuio.trace.writer import Trace

from support.bound_sim import bound_sim
from support.waiting import poll_nic_until


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[SimEnvironment]:
    with bound_sim(tmp_path, hp.HostProfile(link_flap_delay=0.0)) as env:
        yield env


def _decoded(path: Path) -> list[dict[str, Any]]:
    dec = Decoder()
    return [{**(d := dec.decode(r)).fields, "line": d.line} for r in read_trace(path.read_bytes())]


def test_bring_up_link_changes_and_teardown_are_traced(sim: SimEnvironment, tmp_path: Path) -> None:
    dev = sim.nics[0]
    with Trace(tmp_path / "nic.pcapng") as trace:
        nic = Nic(sim.sysroot, dev.guid, trace=trace, channels=2)
        try:
            info = nic.open()
            sim.host.set_link(dev, up=False)
            assert poll_nic_until(nic, lambda: info.link_up is False)
            sim.host.set_link(dev, up=True)
            assert poll_nic_until(nic, lambda: info.link_up is True)
        finally:
            nic.close()
        counters = trace.counters()
    recs = _decoded(tmp_path / "nic.pcapng")
    assert counters["trace_control"] == len(recs) and counters["trace_control_capped"] == 0
    assert all(r["kind"] == "control" and r["channel"] == dev.relid for r in recs)
    nvsp = [(r["direction"], r["nvsp"]["type"]) for r in recs]
    assert nvsp[:2] == [("out", "INIT"), ("in", "INIT_COMPLETE")]
    for want in [("out", "NDIS_CONFIG"), ("out", "NDIS_VERSION"), ("out", "RECV_BUF"), ("in", "RECV_BUF_COMPLETE"),
                 ("out", "SEND_BUF"), ("in", "SEND_BUF_COMPLETE"), ("out", "SUBCHANNEL"), ("in", "SUBCHANNEL_COMPLETE"),
                 ("out", "RNDIS_PACKET"), ("in", "RNDIS_PACKET"),
                 ("in", "RNDIS_PACKET_COMPLETE"), ("out", "RNDIS_PACKET_COMPLETE"),
                 ("out", "REVOKE_RECV_BUF"), ("out", "REVOKE_SEND_BUF")]:
        assert want in nvsp, want
    rndis = [m for r in recs for m in r.get("rndis", [])]
    types = {m["type"] for m in rndis}
    assert {"INITIALIZE", "INITIALIZE_COMPLETE", "QUERY", "QUERY_COMPLETE", "SET", "SET_COMPLETE",
            "INDICATE_STATUS", "HALT"} <= types
    mac = next(m for m in rndis if m["type"] == "QUERY_COMPLETE" and m["oid"] == "OID_802_3_PERMANENT_ADDRESS")
    text_mac = ":".join(f"{b:02x}" for b in info.mac or b"")
    assert mac["value"] == text_mac and text_mac
    statuses = [m["status"] for m in rndis if m["type"] == "INDICATE_STATUS"]
    assert statuses[-2:] == ["MEDIA_DISCONNECT", "MEDIA_CONNECT"]
    lines = [r["line"] for r in recs]
    assert lines[0].endswith("-> host NVSP INIT v6.1")
    assert any("RNDIS INITIALIZE req 1 v1.0 max_xfer" in line for line in lines)
    assert any(f"OID_802_3_PERMANENT_ADDRESS -> {text_mac}" in line for line in lines)


def test_an_untraced_nic_writes_nothing(sim: SimEnvironment, tmp_path: Path) -> None:
    with Trace(tmp_path / "unused.pcapng") as trace:
        with Nic(sim.sysroot, sim.nics[0].guid) as nic:
            nic.open()
        assert nic.channel is None
    assert (tmp_path / "unused.pcapng").read_bytes() == file_header()
