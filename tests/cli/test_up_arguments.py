"""`hvuio up` refuses options that cannot work before it touches the host: one sentence + hint,
exit code 2, no traceback, and the emulated NIC exactly as it was (still bound, never opened, no
status record). An interface name that exists is never met with a hint to delete it."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hvuio.device.sysfs import VmbusDevice
from hvuio.errors import UsageError
from hvuio.netdev import netns
from hvuio.sim.vsp.host import SimEnvironment
from hvuio.status import read_status

from support.bound_sim import bound_sim
from support.cli import assert_user_error, run_main
from support.namespaces import NetnsFactory


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[SimEnvironment]:
    with bound_sim(tmp_path) as env:
        yield env


def _state(env: SimEnvironment) -> dict[str, Any]:
    """What a refused `up` must leave as it was: the binding, the channel, the host's view."""
    guid = env.nics[0].guid
    dev = VmbusDevice.from_uuid(env.sysroot, guid)
    host = env.host.status()[guid]
    return {"driver": dev.driver, "uio": dev.uio.name if dev.uio else None, "state": dev.state,
            "open": host["open"], "counters": host["counters"], "records": read_status(env.sysroot)}


def _refused(env: SimEnvironment, capsys: pytest.CaptureFixture[str], *options: str) -> str:
    """Run `up` with `options`; check it was refused as a user error and nothing changed; the hint."""
    before = _state(env)
    code, out, err = run_main(capsys, "--sysroot", str(env.sysroot), "up", env.nics[0].guid, *options)
    assert_user_error(subprocess.CompletedProcess([], code, out, err), UsageError.exit_code)
    assert not out, out
    assert _state(env) == before
    hint = next(line for line in err.splitlines() if line.startswith("Hint: "))
    assert " del" not in hint and "remove" not in hint.lower(), hint
    return err


@pytest.mark.parametrize("options, says", [
    (["--no-datapath", "--ifname", "hvx0"], "--ifname place the tap, and --no-datapath runs no tap"),
    (["--once", "--netns", "somewhere"], "--netns place the tap, and --once runs no tap"),
    (["--once", "--ifname", "hvx0", "--netns", "x"], "--ifname and --netns place the tap, and --once"),
    (["--once", "--persist"], "--persist keeps a tap through a rescind or a stopped channel, and --once runs no tap"),
    (["--no-datapath", "--persist"], "and --no-datapath runs no tap"),
    (["--netns", "hvu-none-such"], "network namespace 'hvu-none-such' does not exist"),
    (["--netns", "../x"], "is not a name under"),
    (["--ifname", "a/b"], "--ifname: interface name 'a/b' must not"),
    (["--ifname", "x" * 16], "must be 1 to 15 characters long"),
    (["--ifname", "lo"], "--ifname lo: an interface of that name already exists"),
])
def test_up_refuses_before_touching_the_host(sim: SimEnvironment, capsys: pytest.CaptureFixture[str],
                                             options: list[str], says: str) -> None:
    err = _refused(sim, capsys, *options)
    assert says in err, err


def test_existing_ifname_hint_offers_another_name(sim: SimEnvironment, capsys: pytest.CaptureFixture[str]) -> None:
    err = _refused(sim, capsys, "--ifname", "lo")
    assert "Pick another name" in err and f"'hvuio --sysroot {sim.sysroot} status'" in err


def test_up_refuses_an_ifname_that_exists_in_its_netns(sim: SimEnvironment, capsys: pytest.CaptureFixture[str],
                                                       netns_factory: NetnsFactory) -> None:
    ns = netns_factory.namespace("upargs")
    netns.add_veth("hvtaken0", ns, "hvtaken1", ns)
    err = _refused(sim, capsys, "--netns", ns, "--ifname", "hvtaken0")
    assert f"already exists in network namespace '{ns}'" in err, err
    assert netns.list_links(prefix="hvtaken", netns=ns) == ["hvtaken0", "hvtaken1"]
