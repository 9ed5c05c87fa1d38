"""bind/unbind against the emulated kernel on every profile, every refusal, the CLI exit codes,
the rollback of a failed bind (new_id kernels included), a relative sysroot, and the bind guard
(default route, SSH sessions on any address of the NIC) inside network namespaces (root only)."""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from hvuio.device import bind as B
from hvuio.device import guard as G
from hvuio.device.sysfs import VmbusDevice
from hvuio.device.uio import UioHandle
from hvuio.errors import (DeviceBusyError, DeviceNotFoundError, ModuleMissingError, NotRootError, SysfsError,
                          UnsafeBindError, WrongDeviceError)
from hvuio.netdev import netns
from hvuio.sim.kernel import profiles
from hvuio.sim.kernel.bus import SimKernel

from support.cli import run_main
from support.namespaces import NetnsFactory, have_netns


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code, out, err = run_main(capsys, *args)
    return code, out + err


@pytest.mark.parametrize("profile", list(profiles.PROFILES))
def test_bind_unbind_round_trip(tmp_path: Path, profile: str) -> None:
    with SimKernel(tmp_path, profile, nics=2) as k:
        nic, other = k.nics
        res = B.bind_device(tmp_path, "hveth0")
        assert res.changed and res.uio == "uio0"
        assert res.method == ("driver_override" if k.profile.driver_override else "new_id")
        dev = VmbusDevice.from_uuid(tmp_path, nic.guid)
        assert dev.driver == "uio_hv_generic" and (tmp_path / "dev" / "uio0").exists()
        journal = json.loads(B.journal_path(tmp_path, nic.guid).read_text())
        assert journal["previous_driver"] == "hv_netvsc" and journal["netdevs"] == ["hveth0"]
        assert VmbusDevice.from_uuid(tmp_path, other.guid).driver == "hv_netvsc"  # untouched
        again = B.bind_device(tmp_path, nic.guid)
        assert not again.changed and "already bound" in again.message
        back = B.unbind_device(tmp_path, "hveth0")  # the interface name is found via the journal
        assert back.changed and back.driver == "hv_netvsc" and back.netdevs == ("hveth0",)
        assert dev.driver == "hv_netvsc" and dev.uio is None and dev.driver_override is None
        assert not B.journal_path(tmp_path, nic.guid).exists()
        assert not B.unbind_device(tmp_path, "hveth0").changed
        B.bind_device(tmp_path, "hveth0")  # a second cycle works (new_id already present: EEXIST path)
        assert dev.driver == "uio_hv_generic"
        B.unbind_device(tmp_path, nic.guid)
        assert dev.driver == "hv_netvsc"


def test_new_id_path_forced_on_new_kernel(tmp_path: Path) -> None:
    prof = profiles.get_profile("6.17").with_changes(driver_override=False)
    with SimKernel(tmp_path, prof, nics=1) as k:
        assert not (tmp_path / "sys/bus/vmbus/devices" / k.nics[0].guid / "driver_override").exists()
        assert B.bind_device(tmp_path, "hveth0").method == "new_id"
        assert B.unbind_device(tmp_path, "hveth0").driver == "hv_netvsc"
        assert k.dynids["uio_hv_generic"] == set()  # remove_id undid new_id


def test_unbind_without_journal_restores_netvsc(tmp_path: Path) -> None:
    with SimKernel(tmp_path, "6.17", nics=1) as k:
        B.bind_device(tmp_path, "hveth0")
        B.journal_path(tmp_path, k.nics[0].guid).unlink()
        assert B.unbind_device(tmp_path, k.nics[0].guid).driver == "hv_netvsc"


def test_refusals(tmp_path: Path) -> None:
    with SimKernel(tmp_path, "6.17", nics=1, ifnames=["lo"]) as k:
        with pytest.raises(DeviceNotFoundError, match="nosuch"):
            B.bind_device(tmp_path, "nosuch")
        with pytest.raises(DeviceNotFoundError):
            B.bind_device(tmp_path, str(uuid.uuid4()))
        kbd = next(d for d in k.devices.values() if d.class_id == profiles.KEYBOARD_CLASS)
        with pytest.raises(WrongDeviceError, match="keyboard"):
            B.bind_device(tmp_path, kbd.guid)
        with pytest.raises(NotRootError):
            B.bind_device(tmp_path, "lo", euid=12345)
        ssh = {"SSH_CONNECTION": "192.0.2.9 50000 127.0.0.1 22"}
        with pytest.raises(UnsafeBindError, match="SSH session"):
            B.bind_device(tmp_path, "lo", env=ssh)
        assert VmbusDevice.from_uuid(tmp_path, k.nics[0].guid).driver == "hv_netvsc"
        assert B.bind_device(tmp_path, "lo", env=ssh, force=True).changed
        with UioHandle.open(VmbusDevice.from_uuid(tmp_path, k.nics[0].guid)):
            with pytest.raises(DeviceBusyError):
                B.unbind_device(tmp_path, "lo")
        B.unbind_device(tmp_path, "lo")


def test_owner_of_sim_tree_needs_no_root(tmp_path: Path) -> None:
    with SimKernel(tmp_path, "6.17", nics=1):
        B.check_root(tmp_path, euid=os.stat(tmp_path / "sys").st_uid)
        with pytest.raises(NotRootError):
            B.check_root(tmp_path, euid=os.stat(tmp_path / "sys").st_uid + 1)


def test_module_missing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with SimKernel(tmp_path, "6.17", nics=1, uio_module=False):
        with pytest.raises(ModuleMissingError):
            B.bind_device(tmp_path, "hveth0")
        code, out = run_cli(["--sysroot", str(tmp_path), "bind", "hveth0"], capsys)
        assert code == ModuleMissingError.exit_code and "uio_hv_generic" in out and "Hint:" in out


def test_cli_bind_unbind_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with SimKernel(tmp_path, "6.16", nics=1) as k:
        root = ["--sysroot", str(tmp_path)]
        code, out = run_cli(root + ["bind", "hveth0"], capsys)
        assert code == 0 and "bound to uio_hv_generic" in out
        code, out = run_cli(root + ["bind", "hveth0"], capsys)
        assert code == 0 and "already bound" in out
        code, out = run_cli(root + ["unbind", "hveth0"], capsys)
        assert code == 0 and "restored to hv_netvsc" in out
        code, out = run_cli(root + ["bind", "eth9"], capsys)
        assert code == DeviceNotFoundError.exit_code and out.startswith("Error:") and "Traceback" not in out
        scsi = next(d for d in k.devices.values() if d.class_id == profiles.SCSI_CLASS)
        code, out = run_cli(root + ["bind", scsi.guid], capsys)
        assert code == WrongDeviceError.exit_code


def test_default_route_interfaces_parsing(tmp_path: Path) -> None:
    (tmp_path / "net").mkdir()
    (tmp_path / "net" / "route").write_text(
        "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\n"
        "eth1\t00000000\t0200090A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"
        "eth2\t0000090A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n")
    (tmp_path / "net" / "ipv6_route").write_text(
        "00000000000000000000000000000000 00 00000000000000000000000000000000 00 "
        "fe800000000000000000000000000001 00000400 00000000 00000000 00000003     eth3\n")
    assert G.default_route_interfaces(tmp_path) == {"eth1", "eth3"}


NETNS = f"hvuio-bind{os.getpid()}"


@pytest.mark.skipif(have_netns() is not None, reason=str(have_netns()))
def test_default_route_in_netns_refuses(tmp_path: Path) -> None:
    """A netns with veth 'hvdflt0' holding the default route; the sim NIC carries that name."""
    def ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True)

    subprocess.run(["ip", "netns", "del", NETNS], capture_output=True)
    try:
        ip("netns", "add", NETNS)
        ip("-n", NETNS, "link", "add", "hvdflt0", "type", "veth", "peer", "name", "hvdflt1")
        ip("-n", NETNS, "addr", "add", "10.77.0.1/24", "dev", "hvdflt0")
        ip("-n", NETNS, "link", "set", "hvdflt0", "up")
        ip("-n", NETNS, "link", "set", "hvdflt1", "up")
        ip("-n", NETNS, "route", "add", "default", "via", "10.77.0.2")
        with SimKernel(tmp_path, "6.17", nics=2, ifnames=["hvdflt0", "hvdflt1"]) as k:
            cmd = ["ip", "netns", "exec", NETNS, sys.executable, "-c",
                   "import sys; from hvuio.cli import main; main(sys.argv[1:])",
                   "--sysroot", str(tmp_path), "bind"]
            env = {k_: v for k_, v in os.environ.items() if k_ != "SSH_CONNECTION"}
            out = subprocess.run(cmd + ["hvdflt0"], capture_output=True, text=True, env=env)
            assert out.returncode == UnsafeBindError.exit_code, out.stderr
            assert "default route" in out.stderr
            assert VmbusDevice.from_uuid(tmp_path, k.nics[0].guid).driver == "hv_netvsc"
            out = subprocess.run(cmd + ["hvdflt1"], capture_output=True, text=True, env=env)
            assert out.returncode == 0, out.stderr
            out = subprocess.run(cmd + ["--force", "hvdflt0"], capture_output=True, text=True, env=env)
            assert out.returncode == 0, out.stderr
    finally:
        subprocess.run(["ip", "netns", "del", NETNS], capture_output=True)


def test_uio_holders_finds_this_process(tmp_path: Path) -> None:
    target = tmp_path / "uio3"
    target.write_bytes(b"")
    with open(target, "rb"):
        assert os.getpid() in B.uio_holders(target)
    assert os.getpid() not in B.uio_holders(target)


def test_stale_sim_tree_does_not_hang(tmp_path: Path) -> None:
    """A tree left behind without its kernel: the control FIFO has no reader -> SysfsError, no hang."""
    k = SimKernel(tmp_path, "6.17", nics=1)
    k.start()
    k.stop(remove_tree=False)
    try:
        with pytest.raises(B.SysfsError, match="nobody reads"):
            B.bind_device(tmp_path, "hveth0")
    finally:
        k.tree.destroy()


def test_refused_probe_rolls_back(tmp_path: Path) -> None:
    """6.9 refuses a non-monitored channel: bind fails with a hint and hv_netvsc gets it back."""
    with SimKernel(tmp_path, "6.9", nics=1, nic_monitored=False) as k:
        with pytest.raises(B.SysfsError) as err:
            B.bind_device(tmp_path, "hveth0", timeout=0.5)
        assert "previous driver was restored" in err.value.message and "6.10" in err.value.hint
        assert any("requires hypercall" in m for m in k.dmesg)
        dev = VmbusDevice.from_uuid(tmp_path, k.nics[0].guid)
        assert dev.driver == "hv_netvsc" and dev.driver_override is None
        assert not B.journal_path(tmp_path, dev.guid).exists()


def _proc_hex(address: str) -> str:
    """`address` as /proc/net/tcp{,6} writes it: each 32-bit word in host (little-endian) order."""
    raw = ipaddress.ip_address(address).packed
    return b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4)).hex().upper()


def _fake_proc(root: Path, comm: str, state: str, v6: bool = False, local_ip: str | None = None) -> Path:
    """A /proc with one process `comm` holding socket inode 4242, and a TCP table where that
    socket's local address is 127.0.0.1:22 (or ::ffff:127.0.0.1, or `local_ip`) in `state`."""
    proc = root / "proc"
    (proc / "net").mkdir(parents=True)
    (proc / "777" / "fd").mkdir(parents=True)
    (proc / "777" / "comm").write_text(comm + "\n")
    os.symlink("socket:[4242]", proc / "777" / "fd" / "3")
    head = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
    local = "0000000000000000FFFF00000100007F:0016" if v6 else "0100007F:0016"
    if local_ip is not None:
        local = _proc_hex(local_ip) + ":0016"
    remote = "0000000000000000FFFF00000900020C:C350" if v6 else "090002C0:C350"
    row = f"   0: {local} {remote} {state} 00000000:00000000 00:00000000 00000000     0        0 4242 1\n"
    (proc / "net" / ("tcp6" if v6 else "tcp")).write_text(head + row)
    (proc / "net" / ("tcp" if v6 else "tcp6")).write_text(head)
    return proc


@pytest.mark.parametrize("comm, state, v6, found", [
    ("sshd", "01", False, True),
    ("sshd-session", "01", True, True),
    ("sshd", "0A", False, False),          # listening, not a session
    ("nginx", "01", False, False),         # not sshd's socket
])
def test_ssh_sessions_are_found_from_the_kernel_view(tmp_path: Path, comm: str, state: str, v6: bool,
                                                     found: bool) -> None:
    """`sudo` drops SSH_CONNECTION: the guard also reads sshd's established sockets."""
    proc = _fake_proc(tmp_path, comm, state, v6)
    assert G.ssh_session_interfaces(proc) == ({"lo"} if found else set())
    if found:
        with pytest.raises(UnsafeBindError, match="SSH session"):
            G.check_safe(["lo"], env={}, proc=proc)
    else:
        G.check_safe(["lo"], env={}, proc=proc)


def test_ctrl_c_during_bind_gives_the_nic_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with SimKernel(tmp_path, "6.17", nics=1) as k:
        guid = k.nics[0].guid
        real_wait = B._wait_for

        def interrupted(what: str, cond: object, timeout: float) -> None:
            real_wait(what, cond, timeout)  # type: ignore[arg-type]
            if what.endswith("to be bound to uio_hv_generic with its /dev/uioN"):
                raise KeyboardInterrupt   # Ctrl-C as the bind completes (the emulated kernel is settled)

        monkeypatch.setattr(B, "_wait_for", interrupted)
        with pytest.raises(KeyboardInterrupt):
            B.bind_device(tmp_path, "hveth0")
        monkeypatch.setattr(B, "_wait_for", real_wait)
        B._wait_for("the rollback", lambda: VmbusDevice.from_uuid(tmp_path, guid).driver == "hv_netvsc", 5)
        assert B.read_journal(tmp_path, guid) is None


_GUARD_PROBE = """
import json, sys
from pathlib import Path
from hvuio.device import guard as G
from hvuio.errors import UnsafeBindError

nic, other, empty = sys.argv[1], sys.argv[2], Path(sys.argv[3])
report = {}
for spec in sys.argv[4:]:
    address, proc = spec.split("=", 1)
    env = {"SSH_CONNECTION": f"192.0.2.9 50000 {address} 22"}
    refusals = []
    for name in (nic, other):
        try:
            G.check_safe([name], env=env, proc=empty)
            refusals.append(None)
        except UnsafeBindError as err:
            refusals.append(err.message)
    report[address] = {"holders": sorted(G.interfaces_of_address(address)), "refusals": refusals,
                       "sshd": sorted(G.ssh_session_interfaces(Path(proc)))}
print(json.dumps(report))
"""


def test_guard_sees_secondary_and_ipv6_addresses(tmp_path: Path, netns_factory: NetnsFactory) -> None:
    """A NIC whose SSH session arrives on its secondary IPv4 address or an IPv6 address is
    refused like one whose primary address carries it, from SSH_CONNECTION and from sshd's
    sockets alike; the other end of the veth is not."""
    ns = netns_factory.namespace("guard", ipv6=True)
    netns.add_veth("hvgd0", ns, "hvgd1", ns)
    addresses = {"10.71.0.1": "10.71.0.1/24", "10.71.0.2": "10.71.0.2/24",   # first, secondary
                 "10.72.5.9": "10.72.5.9/16", "fd71::7": "fd71::7/64"}         # a second IPv4 net, IPv6
    for cidr in addresses.values():
        netns.ip("-n", ns, "addr", "add", cidr, "dev", "hvgd0", *(("nodad",) if ":" in cidr else ()))
    netns.ip("-n", ns, "addr", "add", "10.71.0.3/24", "dev", "hvgd1")
    for link in ("hvgd0", "hvgd1"):
        netns.set_up(ns, link)
    primary = netns.ip("-n", ns, "-4", "-o", "addr", "show", "dev", "hvgd0").stdout.splitlines()
    assert [line.split()[3] for line in primary if "secondary" in line] == ["10.71.0.2/24"]
    empty = tmp_path / "noproc"
    empty.mkdir()
    specs = []
    for address in addresses:
        proc = _fake_proc(tmp_path / address, "sshd", "01", v6=":" in address, local_ip=address)
        specs.append(f"{address}={proc}")
    out = netns.run(ns, netns.python_argv("-c", _GUARD_PROBE, "hvgd0", "hvgd1", str(empty), *specs))
    report = json.loads(out.stdout)
    for address in addresses:
        seen = report[address]
        assert seen["holders"] == ["hvgd0"], (address, seen)
        assert seen["sshd"] == ["hvgd0"], (address, seen)
        refused, other = seen["refusals"]
        assert refused is not None and "hvgd0 carries an SSH session" in refused, (address, seen)
        assert other is None, (address, seen)


def _failing_write(monkeypatch: pytest.MonkeyPatch, k: SimKernel, name: str, late: bool) -> list[str]:
    """Make the first sysfs write to a file called `name` fail: after the kernel carried it out
    (as a real kernel has when write(2) returns), or, `late`, while the kernel has still to act on
    it (a slow probe that completes after the bind gave up; the emulated kernel reads its FIFOs
    in its own time)."""
    real = B._write
    written: list[str] = []

    def write(path: Path, text: str, ignore: tuple[int, ...] = ()) -> None:
        entry = f"{path.parent.name}/{path.name} <- {text!r}"
        seen = k.trace.count(entry)
        real(path, text, ignore)
        if path.name == name and not late:
            B._wait_for(f"the kernel to act on {entry}", lambda: k.trace.count(entry) > seen, 5)
            k.wait_idle()   # takes the kernel's lock: the write's handler has finished
        written.append(f"{path.parent.name}/{path.name}")
        if path.name == name and [w.endswith("/" + name) for w in written].count(True) == 1:
            raise SysfsError(f"writing {text!r} to {path} failed: injected", "Injected.")

    monkeypatch.setattr(B, "_write", write)
    return written


def _failing_wait(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make the wait for /dev/uioN fail once the kernel has settled (a bind that timed out)."""
    real = B._wait_for

    def wait(what: str, cond: object, timeout: float) -> None:
        real(what, cond, timeout)  # type: ignore[arg-type]
        if what.endswith("with its /dev/uioN"):
            raise SysfsError(f"timed out waiting for {what}", "Injected.")

    monkeypatch.setattr(B, "_wait_for", wait)
    return []


@pytest.mark.parametrize("fail", ["new_id", "unbind", "bind", "bind-late", "wait"])
def test_failed_new_id_bind_rolls_back_completely(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail: str) -> None:
    """A kernel without driver_override: whichever step after new_id fails, the dynamic id is
    removed (a NIC offered later goes to hv_netvsc, not uio_hv_generic), the NIC is back with
    hv_netvsc with its interface, the journal is gone, and a bind afterwards works."""
    with SimKernel(tmp_path, "4.17", nics=1) as k:
        assert not k.profile.driver_override
        guid = k.nics[0].guid
        if fail == "wait":
            _failing_wait(monkeypatch)
        else:
            _failing_write(monkeypatch, k, fail.removesuffix("-late"), late=fail.endswith("-late"))
        with pytest.raises(SysfsError) as err:
            B.bind_device(tmp_path, "hveth0", timeout=2)
        assert "previous driver was restored" in err.value.message
        monkeypatch.undo()
        dev = VmbusDevice.from_uuid(tmp_path, guid)
        # the emulated kernel acts on the rollback's last writes in its own time
        B._wait_for("the dynamic id to be removed", lambda: k.dynids["uio_hv_generic"] == set(), 5)
        B._wait_for("hv_netvsc to have the NIC back", lambda: bool(dev.netdevs()), 5)
        assert dev.driver == "hv_netvsc" and [n for n, _ in dev.netdevs()] == ["hveth0"]
        assert B.read_journal(tmp_path, guid) is None and not B.journal_path(tmp_path, guid).exists()
        later = k.offer(profiles.NIC_CLASS, ifname="hveth9")
        B._wait_for("the new NIC's probe", lambda: VmbusDevice.from_uuid(tmp_path, later.guid).driver is not None, 5)
        assert VmbusDevice.from_uuid(tmp_path, later.guid).driver == "hv_netvsc"
        assert B.bind_device(tmp_path, "hveth0").method == "new_id"
        B.unbind_device(tmp_path, "hveth0")
        assert k.dynids["uio_hv_generic"] == set()


def test_failed_rollback_says_so_and_keeps_the_journal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """When the NIC cannot be given back (the unbind from uio_hv_generic never takes effect), the
    error says so, names the unbind command with its --sysroot, and the journal stays for it; the
    dynamic id is removed all the same."""
    with SimKernel(tmp_path, "4.17", nics=1) as k:
        guid = k.nics[0].guid
        _failing_wait(monkeypatch)
        real = B._write

        def write(path: Path, text: str, ignore: tuple[int, ...] = ()) -> None:
            if path.parent.name == "uio_hv_generic" and path.name == "unbind":
                return   # lost: the device stays with uio_hv_generic
            real(path, text, ignore)

        monkeypatch.setattr(B, "_write", write)
        with pytest.raises(SysfsError) as err:
            B.bind_device(tmp_path, "hveth0", timeout=0.3)
        assert "giving the NIC back to its previous driver failed too" in err.value.message
        assert f"'hvuio --sysroot {tmp_path} unbind {guid}'" in err.value.hint
        monkeypatch.undo()
        B._wait_for("the dynamic id to be removed", lambda: k.dynids["uio_hv_generic"] == set(), 5)
        assert B.read_journal(tmp_path, guid) is not None
        assert B.unbind_device(tmp_path, guid).driver == "hv_netvsc"
        assert B.read_journal(tmp_path, guid) is None


def test_relative_sysroot_finds_holders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """/proc/PID/fd names files by absolute path: a relative /dev/uioN path still finds them."""
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / "uio0").write_bytes(b"")
    monkeypatch.chdir(tmp_path.parent)
    relative = Path(tmp_path.name) / "dev" / "uio0"
    with open(relative, "rb"):
        assert os.getpid() in B.uio_holders(relative)
        assert B.uio_holders(relative) == B.uio_holders(tmp_path / "dev" / "uio0")


def test_relative_sysroot_is_the_absolute_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """Every command gets the sysroot as an absolute path: a relative --sysroot binds, refuses an
    open device's unbind, and unbinds exactly as the absolute one, with the same messages."""
    sysroot = tmp_path / "root"
    sysroot.mkdir(mode=0o700)
    monkeypatch.chdir(tmp_path)
    with SimKernel(sysroot, "4.17", nics=1) as k:
        dev = VmbusDevice.from_uuid(sysroot, k.nics[0].guid)
        outputs = []
        for root in ("root", str(sysroot)):
            code, out = run_cli(["--sysroot", root, "bind", "hveth0"], capsys)
            assert code == 0, out
            with UioHandle.open(dev):
                busy_code, busy = run_cli(["--sysroot", root, "unbind", "hveth0"], capsys)
            assert busy_code == DeviceBusyError.exit_code, busy
            code, back = run_cli(["--sysroot", root, "unbind", "hveth0"], capsys)
            assert code == 0 and dev.driver == "hv_netvsc", back
            outputs.append((out, busy, back))
        assert outputs[0] == outputs[1]
        assert str(sysroot) in outputs[0][1]
