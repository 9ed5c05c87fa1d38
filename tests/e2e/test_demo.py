"""`hvuio demo` and scripts/demo.sh: run as a user would, as subprocesses (root; skipped otherwise),
plus the not-root refusal (no root needed).

The demo prints the names of what it made (namespaces, taps, sysroot): each test checks they are
gone afterwards, and that no `hvuio up` child survived. Waits are bounded subprocess timeouts.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from support.namespaces import require_netns as _need_root
from support.paths import ROOT

from hvuio.netdev import netns
from hvuio.cli import main
from hvuio.errors import NotRootError

DEMO = [sys.executable, "-c", "from hvuio.cli import main; main()", "demo"]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    return env


def _up_children(sysroot: str, parent: int | None = None) -> list[str]:
    """Command lines of live processes that run `hvuio up` on this sysroot (children of `parent`)."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if sysroot in cmd and " up " in cmd and (parent is None or ppid == parent):
                out.append(cmd)
    return out


def _stop(proc: subprocess.Popen[str]) -> None:
    """Stop a demo the test gave up on the way a user would (Ctrl-C: it cleans up), kill if stuck."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_demo_json_runs_and_leaves_nothing() -> None:
    _need_root()
    proc = subprocess.run([*DEMO, "--json", "--tcp-mib", "16", "--queues", "1"], capture_output=True, text=True,
                          env=_env(), timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["ping"]["received"] == 5 and result["ping"]["ok"]
    assert result["tcp"]["exact"] and result["tcp"]["received"]["bytes"] == 16 * 1024 * 1024
    assert result["tcp"]["received"]["sha256"] == result["tcp"]["sent"]["sha256"]
    assert result["datapath_counters"]["tx_packets"] > 0 and result["datapath_counters"]["rx_packets"] > 0
    assert result["host_counters"]["frames_from_guest"] == result["datapath_counters"]["tx_packets"]
    assert result["host_counters"]["frames_to_guest"] == result["datapath_counters"]["rx_packets"]
    # the names `hvuio stats` uses (the kernel's ethtool -S names), from the same counters
    assert result["stats"]["tx_queue_0_packets"] == result["datapath_counters"]["tx_packets"]
    assert result["stats"]["rx_queue_0_bytes"] == result["datapath_counters"]["rx_bytes"]
    assert result["nic"]["mtu"] == 1500 and result["nic"]["link_up"] is True
    left = netns.leaks([result["guest_netns"], result["host_netns"]], [result["tap"], result["host_ifname"]])
    assert not left, left
    assert not Path(result["sysroot"]).exists()
    assert not _up_children(result["sysroot"])


def test_demo_two_queues_carry_every_stream_byte_exact_both_ways() -> None:
    """`hvuio demo --queues 2 --json`: two parallel TCP streams, each byte-exact, and each queue
    carried packets both ways (stream k is steered to queue k)."""
    _need_root()
    proc = subprocess.run([*DEMO, "--json", "--queues", "2", "--tcp-mib", "8"], capture_output=True, text=True,
                          env=_env(), timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["nic"]["queues"] == 2
    streams = result["tcp_streams"]
    assert len(streams) == 2 and len({t["port"] for t in streams}) == 2
    for t in streams:
        assert t["exact"] and t["received"]["bytes"] == t["sent"]["bytes"] == 8 * 1024 * 1024, t
        assert t["received"]["sha256"] == t["sent"]["sha256"]
    stats = result["stats"]
    for k in (0, 1):
        assert stats[f"tx_queue_{k}_packets"] > 0 and stats[f"rx_queue_{k}_packets"] > 0, stats
    counters = result["datapath_counters"]
    assert stats["tx_queue_0_packets"] + stats["tx_queue_1_packets"] == counters["tx_packets"]
    assert stats["rx_queue_0_packets"] + stats["rx_queue_1_packets"] == counters["rx_packets"]
    assert result["host_counters"]["frames_to_guest"] == counters["rx_packets"]
    assert not netns.leaks([result["guest_netns"], result["host_netns"]], [result["tap"], result["host_ifname"]])


def test_demo_jumbo_mtu_goes_gpa_direct() -> None:
    """`hvuio demo --mtu 9000 --json` (two queues, the default): full-MTU pings and the TCP streams
    cross byte-exact, and the frames larger than a send section went GPA-direct from the guest's
    memory."""
    _need_root()
    proc = subprocess.run([*DEMO, "--json", "--mtu", "9000", "--tcp-mib", "16"], capture_output=True, text=True,
                          env=_env(), timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["nic"]["mtu"] == 9000 and result["nic"]["tx_path"].startswith("gpa-direct")
    full = result["ping_full"]
    assert full["ok"] and full["received"] == 3 and full["payload"] == 9000 - 28
    assert result["tcp"]["exact"] and result["tcp"]["received"]["bytes"] == 16 * 1024 * 1024
    assert result["nic"]["queues"] == 2 and all(t["exact"] for t in result["tcp_streams"])  # the default
    counters = result["datapath_counters"]
    assert counters["tx_gpa"] > 0 and counters["channel_control_gpa"] > 0, counters
    assert counters["tx_oversize"] == 0 and counters["tx_errors"] == 0
    assert result["host_counters"]["frames_from_guest"] == counters["tx_packets"]


def test_demo_text_output_has_the_summary() -> None:
    _need_root()
    proc = subprocess.run([*DEMO, "--tcp-mib", "8", "--mtu", "4000", "--queues", "1"], capture_output=True, text=True,
                          env=_env(), timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "NVSP     6.1 (0x60001)" in out and "MTU      4000" in out
    assert re.search(r"5 sent, 5 received; rtt min/avg/max/mdev = [\d.]+/[\d.]+/[\d.]+/[\d.]+ ms", out), out
    assert re.search(r"TCP  8388608 bytes in [\d.]+ s = [\d.]+ Mbit/s, byte-exact \(sha256 match\)", out), out
    assert "Data path counters (hvuio up):" in out and "Emulated host counters:" in out
    guest = re.search(r"in (hvu-guest-[0-9a-f]+)", out)
    host = re.search(r"in (hvu-net-[0-9a-f]+)", out)
    assert guest and host
    assert not netns.leaks([guest.group(1), host.group(1)])


def test_demo_keep_waits_for_ctrl_c_then_cleans_up() -> None:
    _need_root()
    proc = subprocess.Popen([*DEMO, "--keep", "--tcp-mib", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=_env())
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        stdout = proc.stdout
        reader = threading.Thread(target=lambda: lines.extend(iter(stdout.readline, "")), daemon=True)
        reader.start()
        deadline = time.monotonic() + 120
        while not any("Press Ctrl-C" in line for line in list(lines)):
            assert time.monotonic() < deadline and reader.is_alive(), "".join(lines)
            time.sleep(0.1)
        text = "".join(lines)
        guest = re.search(r"ip netns exec (hvu-guest-[0-9a-f]+) ping", text)
        host = re.search(r"ip netns exec (hvu-net-[0-9a-f]+) ping", text)
        sysroot = re.search(r"hvuio --sysroot (\S+) status", text)
        assert guest and host and sysroot, text
        # it really is left running: the commands it printed work
        assert netns.run(guest.group(1), ["ping", "-c", "1", "-W", "5", "198.18.0.1"], check=False).returncode == 0
        assert _up_children(sysroot.group(1))
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)  # stdout belongs to the reader thread; stderr is small
        err = proc.stderr.read() if proc.stderr is not None else ""
        reader.join(10)
        out = "".join(lines)
    finally:
        _stop(proc)
    assert proc.returncode == 0, err
    assert "byte-exact (sha256 match)" in out
    assert not netns.leaks([guest.group(1), host.group(1)])
    assert not Path(sysroot.group(1)).exists()
    assert not _up_children(sysroot.group(1))


def test_demo_not_root_is_one_sentence_and_a_hint(monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(SystemExit) as exc:
        main(["demo"])
    assert exc.value.code == NotRootError.exit_code
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == "Error: hvuio demo needs root: it creates network namespaces and tap devices"
    assert err[1].startswith("Hint: Run it with sudo")
    assert len(err) == 2


def test_demo_sh_refuses_without_root() -> None:
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        pytest.skip("needs root and setpriv (util-linux) to run the script as an unprivileged user")
    proc = subprocess.run([setpriv, "--reuid=65534", "--regid=65534", "--clear-groups",
                           str(ROOT / "scripts" / "demo.sh")], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 77
    assert proc.stderr.startswith("Error: scripts/demo.sh must run as root")
    assert "Hint: sudo scripts/demo.sh" in proc.stderr


def test_demo_interrupted_mid_transfer_cleans_up() -> None:
    """SIGINT (what Ctrl-C sends) while the TCP transfer runs: exit 130, nothing left behind."""
    _need_root()
    before = set(netns.list_namespaces("hvu-net-"))
    proc = subprocess.Popen([*DEMO, "--tcp-mib", "4096"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=_env())
    try:
        children: list[str] = []
        deadline = time.monotonic() + 120
        while not children:  # `hvuio up` runs once the stack is built: the transfer follows
            assert time.monotonic() < deadline and proc.poll() is None, "demo did not start"
            time.sleep(0.2)
            children = [c for c in _up_children("hvuio-demo-", proc.pid) if "--netns" in c]
        argv = children[0].split()
        sysroot, guest = argv[argv.index("--sysroot") + 1], argv[argv.index("--netns") + 1]
        ours = [n for n in set(netns.list_namespaces("hvu-net-")) - before
                if any(link.startswith("hvu-hn-") for link in netns.list_links(prefix="", netns=n))]
        assert netns.exists(guest) and ours
        time.sleep(1.5)  # into the 4 GiB transfer (ping takes 1 s)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        _stop(proc)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert not netns.leaks([guest, *ours])
    assert not Path(sysroot).exists()
    assert not _up_children(sysroot)


def test_demo_mtu_above_a_send_section_is_refused_without_gpa(capsys: pytest.CaptureFixture[str]) -> None:
    from hvuio.demo import max_guest_mtu
    from hvuio.sim.host.profile import SEND_SECTION_SIZE

    limit = max_guest_mtu(SEND_SECTION_SIZE)
    assert limit == SEND_SECTION_SIZE - 44 - 14
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--no-gpa", "--mtu", str(limit + 1)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"Error: --mtu {limit + 1} is larger than the {limit} bytes")
    assert f"Hint: Use --mtu {limit} or less, or leave GPA-direct on." in err


def test_demo_mtu_above_the_emulated_hosts_largest_frame_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    from hvuio.sim.host.profile import ETH_HEADER_LEN, MAX_NDIS_MTU

    limit = MAX_NDIS_MTU - ETH_HEADER_LEN
    assert limit == 9202
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--mtu", str(limit + 1)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"Error: --mtu {limit + 1} is larger than the {limit} bytes the emulated host allows")
    assert f"Hint: Use --mtu {limit} or less." in err


def test_demo_unknown_kernel_profile(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--kernel", "2.6"])
    assert exc.value.code == 2
    assert capsys.readouterr().err.startswith("Error: unknown kernel profile '2.6'")


def test_demo_mtu_below_the_protocol_minimum_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--mtu", "67"])
    assert exc.value.code == 2
    assert capsys.readouterr().err.startswith("Error: --mtu 67 is below 68")


def test_demo_lifecycle_every_event_holds_on_the_same_tap() -> None:
    """`hvuio demo --lifecycle --json`: one line per event as it ends, in the order they are played,
    each with ping and the TCP connection opened before the first
    event working again on the same tap with the same addresses; the final document has them all
    and nothing is left behind."""
    _need_root()
    proc = subprocess.run([*DEMO, "--json", "--lifecycle", "--tcp-mib", "2"], capture_output=True, text=True,
                          env=_env(), timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    streamed = [line["lifecycle"] for line in lines if "lifecycle" in line and isinstance(line["lifecycle"], dict)]
    result = lines[-1]
    assert [s["event"] for s in streamed] == ["mtu", "network_change", "link_flap", "vf", "rescind", "silent_stop"]
    assert result["lifecycle"] == streamed
    for step in streamed:
        assert step["ok"] and step["ping"] and step["same_tap"] and step["tcp"]["ok"], step
        assert step["tcp"]["bytes"] == 256 * 1024 and step["recovery_s"] >= step["taken_s"] > 0, step
    counters = result["datapath_counters"]
    assert counters["reinits_mtu"] == 1 and counters["reinits_rescind"] == 1 and counters["reinits_stall"] == 1
    assert not netns.leaks([result["guest_netns"], result["host_netns"]], [result["tap"], result["host_ifname"]])
    assert not Path(result["sysroot"]).exists() and not _up_children(result["sysroot"])
