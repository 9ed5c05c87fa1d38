"""`hvuio up` and hvuio.nic.Nic against the emulator (SimEnvironment), no root needed.

Every expected value comes from the emulated host's profile or device, never from a constant
written here; waits are bounded polls, not timed assertions.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hvuio.device.bind import bind_device
from hvuio.linkwatch import LINKCHANGE_INT
from hvuio.nic import Nic
from hvuio.errors import HostRefusedError, SysfsError
from hvuio.proto import limits
from hvuio.sim.host import profile as hp
from hvuio.sim.host import wire as hw
from hvuio.sim.vsp.host import SimEnvironment
from hvuio.wire import nvsp as wn

from support.bound_sim import bound_sim
from support.cli import run_main as run_cli
from support.waiting import poll_nic_until



@pytest.fixture
def sim(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[SimEnvironment]:
    """One NIC, bound to uio_hv_generic; `@pytest.mark.parametrize("sim", [HostProfile(...)],
    indirect=True)` picks the host profile."""
    profile = getattr(request, "param", None)
    with bound_sim(tmp_path, profile) as env:
        yield env


def host_saw_close(env: SimEnvironment, guid: str) -> bool:
    """Wait until the emulated kernel processed our last close. The emulator handles a close
    asynchronously (a real kernel's release() runs inside close(2)); reopening before it did would
    be counted as a second open of a still-open channel."""
    return env.host.wait_for(lambda: not env.host.status()[guid]["open"])


def json_lines(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


@pytest.mark.parametrize("cap", hw.NVSP_VERSIONS, ids=[f"{v:#x}" for v in hw.NVSP_VERSIONS])
def test_up_once_json_negotiates_the_host_cap(tmp_path: Path, capsys: pytest.CaptureFixture[str], cap: int) -> None:
    profile = hp.HostProfile(max_version=cap)
    with SimEnvironment(tmp_path, profile="6.17", nics=1, host_profile=profile) as env:
        dev = env.nics[0]
        bind_device(env.sysroot, dev.guid, force=True)
        code, out, err = run_cli(capsys, "--sysroot", str(env.sysroot), "up", dev.guid, "--once", "--json")
        assert code == 0, err
        lines = json_lines(out)
        assert [line["event"] for line in lines] == ["ready", "down"]
        nic = lines[0]["nic"]
        assert nic["nvsp_version"] == cap
        assert nic["ndis_version"] == wn.ndis_version_for(cap)
        assert dev.mac is not None and nic["mac"] == dev.mac.lower()
        assert nic["mtu"] == 1500
        assert nic["link_up"] is profile.link_up
        assert nic["link_speed_bps"] == profile.link_speed_bps
        assert nic["send_section_size"] == profile.send_section_size
        ndis_mtu = 1500 + 14 if cap >= hw.NVSP_VERSION_2 else hp.DEFAULT_NDIS_MTU
        assert nic["recv_section_size"] == profile.recv_section_for_mtu(ndis_mtu)
        assert nic["device"] == dev.guid
        # the device was closed: the host saw one open and the guest's revoke
        assert env.host.counters(dev).opens == 1
        assert env.host.wait_for(lambda: not env.host.status()[dev.guid]["open"])


def test_up_prints_a_readable_block(sim: SimEnvironment, capsys: pytest.CaptureFixture[str]) -> None:
    dev = sim.nics[0]
    code, out, err = run_cli(capsys, "--sysroot", str(sim.sysroot), "up", dev.guid, "--once")
    assert code == 0, err
    assert "NVSP     6.1 (0x60001), NDIS 6.30" in out
    assert f"MAC      {dev.mac.lower() if dev.mac else ''}" in out
    assert "Link     up, 10 Gbit/s" in out


def test_run_up_reports_events_and_returns_down(sim: SimEnvironment) -> None:
    """hvuio.up.run_up without the CLI: Ready, then Down, which is also its result; with `once`
    no status file is left."""
    from hvuio.status import read_status
    from hvuio.up import Down, Ready, UpEvent, UpOptions, run_up

    dev = sim.nics[0]
    events: list[UpEvent] = []
    down = run_up(sim.sysroot, UpOptions(device=dev.guid, once=True), events.append)
    assert [type(e) for e in events] == [Ready, Down] and events[-1] is down
    ready = events[0]
    assert isinstance(ready, Ready) and ready.nic["device"] == dev.guid
    assert json.loads(ready.json_line() or "")["event"] == "ready"
    assert down.signal is None and down.counters["channel_acks_sent"] >= 1
    assert read_status(sim.sysroot) == []
    assert sim.host.wait_for(lambda: not sim.host.status()[dev.guid]["open"])


@pytest.mark.parametrize("sim", [hp.HostProfile(min_version=hw.NVSP_VERSION_61)], indirect=True)
def test_host_refusing_every_version_is_one_sentence_and_a_hint(
        sim: SimEnvironment, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "--sysroot", str(sim.sysroot), "up", sim.nics[0].guid, "--once",
                             "--max-nvsp", "6")
    assert code == HostRefusedError.exit_code
    lines = [line for line in err.splitlines() if line.startswith(("Error: ", "Hint: "))]  # not the host's log
    assert lines[0].startswith("Error: NVSP INIT: the host refused every version offered (0x60000, 0x50000")
    assert lines[1].startswith("Hint: ") and "--max-nvsp" in lines[1]
    assert "Traceback" not in err
    # the failed bring-up closed the device: it opens again
    assert host_saw_close(sim, sim.nics[0].guid)
    code, out, err = run_cli(capsys, "--sysroot", str(sim.sysroot), "up", sim.nics[0].guid, "--once", "--json")
    assert code == 0, err


def test_unknown_device(sim: SimEnvironment, capsys: pytest.CaptureFixture[str]) -> None:
    missing = str(uuid.uuid4())
    code, out, err = run_cli(capsys, "--sysroot", str(sim.sysroot), "up", missing, "--once")
    assert code == 4
    assert err.startswith(f"Error: no VMBus device {missing}")
    assert "\nHint: " in err


def test_device_not_bound_to_uio(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with SimEnvironment(tmp_path, profile="6.17", nics=1) as env:
        dev = env.nics[0]
        code, out, err = run_cli(capsys, "--sysroot", str(env.sysroot), "up", dev.guid, "--once")
        assert code == 8
        assert err.startswith(f"Error: {dev.guid} is not bound to uio_hv_generic (driver: hv_netvsc)")
        assert f"Hint: Run 'hvuio --sysroot {env.sysroot} bind {dev.guid}' first." in err
        # an interface name resolves to the same device
        assert dev.ifname is not None
        code, out, err = run_cli(capsys, "--sysroot", str(env.sysroot), "up", dev.ifname, "--once")
        assert code == 8 and dev.guid in err


@pytest.mark.parametrize("sim", [hp.HostProfile(link_up=False)], indirect=True)
def test_link_down_at_bring_up(sim: SimEnvironment, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "--sysroot", str(sim.sysroot), "up", sim.nics[0].guid, "--once", "--json")
    assert code == 0, err
    assert json_lines(out)[0]["nic"]["link_up"] is False


@pytest.mark.parametrize("sim", [hp.HostProfile(link_flap_delay=0.0)], indirect=True)
def test_link_indications_follow_the_host(sim: SimEnvironment) -> None:
    dev = sim.nics[0]
    seen: list[bool] = []
    with Nic(sim.sysroot, dev.guid) as nic:
        nic.link_side.on_link = seen.append
        info = nic.open()
        assert info.link_up is True
        sim.host.set_link(dev, up=False)
        assert poll_nic_until(nic, lambda: info.link_up is False)
        sim.host.set_link(dev, up=True)
        assert poll_nic_until(nic, lambda: info.link_up is True)
        assert seen[-2:] == [False, True]
        assert nic.counters["link_changes"] == 2


class StepClock:
    """The Nic's clock, moved by the test (the 2 s reconnect is reached without sleeping)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset


def test_network_change_drops_the_carrier_and_restores_it_later(sim: SimEnvironment) -> None:
    dev = sim.nics[0]
    seen: list[bool] = []
    clock = StepClock()
    with Nic(sim.sysroot, dev.guid, clock=clock) as nic:
        nic.link_side.on_link = seen.append
        info = nic.open()
        sim.host.indicate(dev, "network_change")
        assert poll_nic_until(nic, lambda: nic.counters["network_changes"] == 1)
        # the bring-up query set the carrier on; the host's link itself did not change
        assert seen == [True, False] and info.link_up is True
        nic.poll(0)
        assert seen == [True, False]                          # not before LINKCHANGE_INT
        clock.offset += LINKCHANGE_INT
        nic.tick()
        assert seen == [True, False, True]
        assert nic.counters["link_changes"] == 0 and nic.counters["peer_notifications"] == 0


def test_repeated_media_connect_notifies_the_peers(sim: SimEnvironment) -> None:
    dev = sim.nics[0]
    notified: list[int] = []
    seen: list[bool] = []
    with Nic(sim.sysroot, dev.guid) as nic:
        nic.link_side.on_link = seen.append
        nic.link_side.on_notify_peers = lambda: notified.append(1)
        nic.open()
        sim.host.indicate(dev, "media_connect")
        assert poll_nic_until(nic, lambda: nic.counters["peer_notifications"] == 1)
        assert notified == [1] and seen == [True]             # the carrier is left as bring-up set it
        sim.host.indicate(dev, "media_connect")
        assert poll_nic_until(nic, lambda: nic.counters["peer_notifications"] == 2)


@pytest.mark.parametrize("sim", [hp.HostProfile(indicate_at_init=("network_change", "media_disconnect",
                                                                  "media_connect", "media_connect"))], indirect=True)
def test_link_indications_during_bring_up_are_counted_and_left_to_the_query(sim: SimEnvironment) -> None:
    """As Linux before its netdev is registered: the carrier starts as the media query says; a
    media connect before it is no repeat (no peer notification), a network change no flap."""
    dev = sim.nics[0]
    seen: list[bool] = []
    notified: list[int] = []
    clock = StepClock()
    with Nic(sim.sysroot, dev.guid, clock=clock) as nic:
        nic.link_side.on_link = seen.append
        nic.link_side.on_notify_peers = lambda: notified.append(1)
        info = nic.open()
        assert info.link_up is True and seen == [True]
        assert nic.counters["link_indications_ignored"] == 4
        assert (nic.counters["network_changes"], nic.counters["link_changes"], nic.counters["peer_notifications"]) == (0, 0, 0)
        clock.offset += LINKCHANGE_INT                          # no reconnect was left pending either
        nic.tick()
        assert seen == [True] and notified == []
        sim.host.indicate(dev, "media_connect")                 # once up, a repeat is one again
        assert poll_nic_until(nic, lambda: nic.counters["peer_notifications"] == 1)
        assert notified == [1] and nic.counters["link_indications_ignored"] == 4


def test_link_speed_changes_replace_the_bring_up_speed(sim: SimEnvironment) -> None:
    dev = sim.nics[0]
    with Nic(sim.sysroot, dev.guid) as nic:
        info = nic.open()
        assert info.link_speed_bps == 10_000_000_000 and nic.counter_snapshot()["link_speed_mbps"] == 10_000
        sim.host.indicate(dev, "link_speed", 1_000_000_000)
        assert poll_nic_until(nic, lambda: nic.counters["link_speed_changes"] == 1)
        assert info.link_speed_bps == 1_000_000_000 and info.to_dict()["link_speed_bps"] == 1_000_000_000
        assert nic.counter_snapshot()["link_speed_mbps"] == 1_000
        sim.host.indicate(dev, "link_speed", 1_000_000_000)    # the same speed again: no change
        sim.host.indicate(dev, "link_speed", 40_000_000_000)
        assert poll_nic_until(nic, lambda: info.link_speed_bps == 40_000_000_000)
        assert nic.counters["link_speed_changes"] == 2 and nic.counters["indications_dropped"] == 0
        assert nic.ready and nic.broken is None


def test_up_down_up_in_one_process(sim: SimEnvironment) -> None:
    dev = sim.nics[0]
    infos = []
    for _ in range(3):
        nic = Nic(sim.sysroot, dev.guid)
        infos.append(nic.open().to_dict())
        nic.close()
        assert nic.channel is None and nic.handle is None
        assert host_saw_close(sim, dev.guid)
    same = Nic(sim.sysroot, dev.guid)  # one object, opened twice
    for _ in range(2):
        infos.append(same.open().to_dict())
        same.close()
        assert host_saw_close(sim, dev.guid)
    assert infos[0] == infos[1] == infos[2] == infos[3] == infos[4]
    assert sim.host.counters(dev).opens == 5
    assert sim.host.fault(dev) is None


def test_close_sets_the_packet_filter_to_0_then_halts(sim: SimEnvironment) -> None:
    dev = sim.nics[0]
    nic = Nic(sim.sysroot, dev.guid)
    nic.open()
    assert sim.host.rndis_control(dev) == ["packet_filter 0xd"]
    nic.close()
    assert host_saw_close(sim, dev.guid)
    # the host recorded the teardown in Linux's order: filter 0 answered, then the halt
    assert sim.host.rndis_control(dev) == ["packet_filter 0xd", "packet_filter 0x0", "halt"]
    assert sim.host.status()[dev.guid]["rndis_control"][-2:] == ["packet_filter 0x0", "halt"]
    assert sim.host.fault(dev) is None and nic.counters["requests_failed"] == 0


def test_control_sends_use_reserved_sections_only(sim: SimEnvironment) -> None:
    with Nic(sim.sysroot, sim.nics[0].guid) as nic:
        info = nic.open()
        assert info.send_section_count is not None and info.control_sections is not None
        assert nic.data_sections == info.send_section_count - info.control_sections
        assert nic.guest is not None and nic.guest.sections is not None
        # every RNDIS control send of the bring-up was completed and its section returned
        assert nic.guest.sections.queued == 0
        assert not nic.guest.sections.in_flight


def _subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    return env


_UP = "from hvuio.cli import main; main()"


def test_sigterm_stops_a_running_up_cleanly(sim: SimEnvironment, capsys: pytest.CaptureFixture[str]) -> None:
    dev = sim.nics[0]
    proc = subprocess.Popen([sys.executable, "-c", _UP, "--sysroot", str(sim.sysroot), "up", dev.guid,
                             "--no-datapath", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=_subprocess_env())
    try:
        assert proc.stdout is not None
        first = json.loads(proc.stdout.readline())
        assert first["event"] == "ready"
        assert sim.host.status()[dev.guid]["open"]
        code, out, err = run_cli(capsys, "--sysroot", str(sim.sysroot), "status", "--json")
        assert code == 0, err
        (record,) = json.loads(out)
        assert record["pid"] == proc.pid and record["device"] == dev.guid
        assert record["nic"]["nvsp_version"] == first["nic"]["nvsp_version"]
        assert record["counters"]["channel_acks_sent"] >= 1
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    last = json_lines(out)[-1]
    assert last["event"] == "down" and last["signal"] == signal.SIGTERM
    assert last["counters"]["channel_acks_sent"] >= 1
    assert sim.host.wait_for(lambda: not sim.host.status()[dev.guid]["open"])
    assert run_cli(capsys, "--sysroot", str(sim.sysroot), "status")[1] == "No running 'hvuio up'.\n"
    with Nic(sim.sysroot, dev.guid) as nic:  # re-openable
        assert nic.open().nvsp_version == first["nic"]["nvsp_version"]


def test_host_rescind_while_running_is_reported_and_stops(sim: SimEnvironment) -> None:
    dev = sim.nics[0]
    proc = subprocess.Popen([sys.executable, "-c", _UP, "--sysroot", str(sim.sysroot), "up", dev.guid,
                             "--no-datapath", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=_subprocess_env())
    try:
        assert proc.stdout is not None
        assert json.loads(proc.stdout.readline())["event"] == "ready"
        sim.host.rescind(dev)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 10, err
    lines = err.strip().splitlines()
    assert lines[-2].startswith("Error: ") and "rescinded" in lines[-2]
    assert lines[-1].startswith("Hint: ")
    assert "Traceback" not in err


def test_host_refusing_the_channel_open(sim: SimEnvironment, capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(dev: Any) -> None:  # the kernel's host hook: OPENCHANNEL answered with a failure
        raise OSError(11, "host refuses OPENCHANNEL")

    monkeypatch.setattr(sim.kernel, "on_open", refuse)
    code, out, err = run_cli(capsys, "--sysroot", str(sim.sysroot), "up", sim.nics[0].guid, "--once")
    assert code == HostRefusedError.exit_code
    lines = err.strip().splitlines()
    assert lines[0] == f"Error: the host refused to open channel {sim.nics[0].relid} of {sim.nics[0].guid}"
    assert lines[1].startswith("Hint: ")


def test_silent_host_is_a_timeout_not_a_hang(sim: SimEnvironment, capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sim.kernel, "on_open", lambda dev: None)  # channel opens, no VSP behind it
    code, out, err = run_cli(capsys, "--sysroot", str(sim.sysroot), "up", sim.nics[0].guid, "--once")
    assert code == 11
    newest, limit = wn.SUPPORTED_NVSP_VERSIONS[0], limits.NVSP_REPLY_TIMEOUT_S
    assert err.startswith(f"Error: NVSP: no reply to NVSP INIT (version {newest:#x}) within {limit:g} s")
    assert "\nHint: " in err


@pytest.mark.parametrize("kernel", ["4.17", "6.9", "6.12", "6.16", "6.17"])
@pytest.mark.parametrize("monitored", [True, False], ids=["monitored", "irq-signal"])
def test_bring_up_on_every_kernel_profile(tmp_path: Path, kernel: str, monitored: bool) -> None:
    """Kernels up to 6.16 mask the inbound ring on every interrupt, 6.17 never does; monitored
    channels are signalled through the monitor page, others by write(1) (VMBUS.md §1.10, §3.12)."""
    if kernel in ("4.17", "6.9") and not monitored:
        pytest.skip("kernels before 6.10 refuse to bind non-monitored channels (VMBUS.md §1.6 item 20)")
    with SimEnvironment(tmp_path, profile=kernel, nics=1, nic_monitored=monitored) as env:
        dev = env.nics[0]
        bind_device(env.sysroot, dev.guid, force=True)
        for _ in range(2):
            with Nic(env.sysroot, dev.guid) as nic:
                info = nic.open()
                assert info.monitored is monitored
                assert info.nvsp_version == wn.SUPPORTED_NVSP_VERSIONS[0]
                assert info.link_up is True
            assert host_saw_close(env, dev.guid)
        assert env.host.counters(dev).opens == 2
        assert env.host.fault(dev) is None


@pytest.mark.parametrize("sim", [hp.HostProfile(keepalive_interval=0.1)], indirect=True)
def test_host_keepalives_are_dropped_unanswered(sim: SimEnvironment) -> None:
    # the host answers a KEEPALIVE_CMPLT with a fault (as OpenVMM): none may be sent (VMBUS.md §4 item 21)
    dev = sim.nics[0]
    with Nic(sim.sysroot, dev.guid) as nic:
        nic.open()
        assert poll_nic_until(nic, lambda: nic.counters["keepalives_dropped"] >= 3)
        sections = nic.guest.sections if nic.guest is not None else None
        assert sections is not None and sections.in_flight == 0
        assert sim.host.fault(dev) is None
        assert not sim.host.status()[dev.guid]["rejections"]


def test_up_by_interface_name_after_bind(sim: SimEnvironment, capsys: pytest.CaptureFixture[str]) -> None:
    dev = sim.nics[0]
    assert dev.ifname is not None  # the interface hv_netvsc had; gone now, found via the bind journal
    code, out, err = run_cli(capsys, "--sysroot", str(sim.sysroot), "up", dev.ifname, "--once", "--json")
    assert code == 0, err
    assert json_lines(out)[0]["nic"]["device"] == dev.guid


def test_sigint_during_bring_up_aborts_and_closes(sim: SimEnvironment, monkeypatch: pytest.MonkeyPatch) -> None:
    dev = sim.nics[0]
    monkeypatch.setattr(sim.kernel, "on_open", lambda d: None)  # nobody answers: bring-up waits
    proc = subprocess.Popen([sys.executable, "-c", _UP, "--sysroot", str(sim.sysroot), "up", dev.guid, "--once"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_subprocess_env())
    try:
        assert sim.host.wait_for(lambda: dev.opens == 1, timeout=20)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err  # not 11: the 5 s reply timeout did not have to pass
    assert "Traceback" not in err
    assert sim.host.wait_for(lambda: dev.opens == 0)


@pytest.mark.parametrize("sim", [hp.HostProfile(max_subchannels=63, recv_section_size=1 << 20)], indirect=True)
def test_refused_subchannels_warn_once_and_the_nic_comes_up(sim: SimEnvironment,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    # 64 queues, but too few receive sections to give each one: the host answers FAILURE
    dev = sim.nics[0]
    with caplog.at_level("WARNING", logger="hvuio.nicinfo"), Nic(sim.sysroot, dev.guid, channels=64) as nic:
        info = nic.open()
        assert nic.ready and info.link_up is True
        assert nic.guest is not None and nic.guest.channels == 1
        refusals = [r for r in caplog.records if r.name == "hvuio.nicinfo" and "subchannel" in r.getMessage()]
        assert [r.levelname for r in refusals] == ["WARNING"]
        assert "primary channel only" in refusals[0].getMessage()
        assert sim.host.fault(dev) is None
        assert not [c for c in dev.channels.values() if c.subchannel_id]


@pytest.mark.parametrize("sim", [hp.HostProfile(max_subchannels=3)], indirect=True)
def test_subchannels_asked_no_more_than_the_host_queues_allow(sim: SimEnvironment,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    dev = sim.nics[0]
    with caplog.at_level("WARNING", logger="hvuio.nicinfo"), Nic(sim.sysroot, dev.guid, channels=8) as nic:
        nic.open()
        assert nic.guest is not None and nic.guest.host_queues == 4 and nic.guest.channels == 4
        assert not [r for r in caplog.records if r.name == "hvuio.nicinfo" and "subchannel" in r.getMessage()]
        assert sim.host.fault(dev) is None
        assert not sim.host.status()[dev.guid]["rejections"]


@pytest.mark.parametrize("sim", [hp.HostProfile(max_subchannels=3)], indirect=True)
def test_rss_the_host_holds_is_what_the_guest_set(sim: SimEnvironment) -> None:
    dev = sim.nics[0]
    with Nic(sim.sysroot, dev.guid, channels=3) as nic:
        nic.open()
        guest = nic.guest
        assert guest is not None and guest.channels == 3 and guest.rss is not None
        state = sim.host.status()[dev.guid]["rss"]
        assert state["enabled"] and state["queues"] == 3
        assert state["key"] == guest.rss.key.hex() and tuple(state["table"]) == guest.rss.table
        assert state["table"] == [i % 3 for i in range(sim.host.profile.rss_table_entries)]
        assert state["hash_info"] == guest.rss.hash_info and set(state["hash_types"]) == {
            "IPV4", "TCP_IPV4", "IPV6", "TCP_IPV6"}
        assert not sim.host.status()[dev.guid]["rejections"] and sim.host.fault(dev) is None
        assert nic.counters["send_table_fixed"] == 0 and nic.counters["requests_failed"] == 0


def test_no_rss_on_one_channel(sim: SimEnvironment) -> None:
    dev = sim.nics[0]
    with Nic(sim.sysroot, dev.guid, channels=1) as nic:
        nic.open()
        assert nic.guest is not None and nic.guest.rss is None
        assert sim.host.status()[dev.guid]["rss"]["enabled"] is False


@pytest.mark.parametrize("sim", [hp.HostProfile(max_subchannels=3)], indirect=True)
def test_granted_subchannels_are_mapped_in_index_order(sim: SimEnvironment) -> None:
    dev = sim.nics[0]
    with Nic(sim.sysroot, dev.guid, channels=4) as nic:
        nic.open()
        assert nic.negotiated.queues == 4 and len(nic.subchannels) == 3
        ids = [dev.channels[c.relid].subchannel_id for c in nic.subchannels]
        assert ids == [1, 2, 3]
        for c in nic.subchannels:  # a whole ring file: half TX, half RX; the mask is never cleared
            assert not c.may_unmask and c.tx.direction.name == "TX" and c.rx.direction.name == "RX"
    assert nic.subchannels == []


@pytest.mark.parametrize("sim", [hp.HostProfile(max_subchannels=3)], indirect=True)
def test_a_subchannel_ring_that_never_appears_is_a_clear_error(sim: SimEnvironment) -> None:
    dev = sim.nics[0]
    sim.kernel.ring_delay = 3600.0  # the kernel makes the directory, never the ring
    nic = Nic(sim.sysroot, dev.guid, channels=2, subchannel_timeout=0.3)
    with pytest.raises(SysfsError) as caught:
        nic.open()
    err = caught.value
    assert "subchannel(s) 1 of" in err.message and "got no ring file within 0.3 s" in err.message
    assert "--queues 1" in (err.hint or "")
    assert nic.channel is None and nic.subchannels == []  # closed again: the device can be reopened
    assert host_saw_close(sim, dev.guid)
