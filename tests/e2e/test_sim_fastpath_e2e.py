"""The emulator's C host data path in the whole stack (root, namespaces; skipped otherwise).

Uses the `running` fixture of tests/conftest.py, as tests/nic/test_up_datapath.py does (guest
engine <-> emulator <-> host tap, all in namespaces the fixture makes). Checks that the session
really switched to the C pump (or did not, with HVUIO_SIM_FASTPATH=0), that traffic crosses it,
and that control traffic the Python host writes while the pump runs (a link flap: RNDIS
indications) reaches the guest in between.
"""

from __future__ import annotations

import pytest
from support.engine_stack import HOST_IP, Running

from hvuio.netdev import netns
from hvuio.sim.vsp import fastpath

pytestmark = pytest.mark.skipif(not fastpath.available(), reason="hvuio.sim._simhost not built")


def _ping(r: Running, count: int = 5) -> None:
    proc = netns.run(r.guest_ns, ["ping", "-c", str(count), "-i", "0.2", "-W", "5", HOST_IP], check=False, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert " 0% packet loss" in proc.stdout


@pytest.fixture(params=["1", "0"], ids=["fast", "python"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(fastpath.ENV, request.param)
    return str(request.param)


@pytest.fixture
def running_mode(mode: str, running: Running) -> tuple[str, Running]:
    return mode, running


def test_ping_uses_the_selected_host_path(running_mode: tuple[str, Running]) -> None:
    mode, r = running_mode
    _ping(r)
    nic = r.env.nics[0]
    c = r.env.host.counters(nic)
    assert c.fastpath == (1 if mode == "1" else 0)
    assert c.frames_to_guest >= 5 and c.frames_from_guest >= 5
    assert r.env.host.fault(nic) is None
    if mode == "1":
        assert r.env.host.nvsp(nic) is not None and c.fastpath_completions_unknown == 0


def test_link_flap_while_the_pump_runs(running: Running) -> None:
    _ping(running, 2)
    nic = running.env.nics[0]
    before = running.env.host.counters(nic).link_indications
    running.env.host.set_link(nic, False)
    running.env.host.set_link(nic, True)
    assert running.env.host.wait_for(lambda: running.env.host.counters(nic).link_indications >= before + 2, 10)

    def carrier() -> bool:
        out = netns.run(running.guest_ns, ["ip", "link", "show", str(running.engine.tap_name)], check=False)
        return "LOWER_UP" in out.stdout and "NO-CARRIER" not in out.stdout

    assert running.env.host.wait_for(carrier, 10)
    _ping(running, 3)
    assert running.env.host.counters(nic).fastpath == 1  # the Python replies went in between
    assert running.env.host.fault(nic) is None
