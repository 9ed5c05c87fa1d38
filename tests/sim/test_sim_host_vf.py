"""HostNvsp's accelerated networking, sans-IO (hvuio.sim.host.vf): the VF association's fields
and when it is sent, the guest's data-path switch and its empty completion, the order of the
messages on VF removal, and what a channel that may not use a VF hears (nothing)."""

from __future__ import annotations

import struct

import pytest

from hvuio.sim.host.events import ChannelFault, DataPathSwitched
from hvuio.sim.host.nvsp import HostPacket, Step
from hvuio.sim.host.profile import HostProfile
from hvuio.sim.host.vf import SWITCH_DATA_PATH_TID

from support.simhost import COMP, INBAND, NVS_V4, NVS_V5, RC, Env, c, completions, r_init

VFASSOC = c("nvs_msg_type", "NVS_TYPE_VFASSOC_NOTE")  # 128
SET_DATAPATH = c("nvs_msg_type", "NVS_TYPE_SET_DATAPATH")  # 129
VF_TID = 0x8000000000000000


def inband(step: Step) -> list[HostPacket]:
    return [p for p in step.packets if p.type == INBAND]


def fields(pkt: HostPacket, n: int) -> tuple[int, ...]:
    return struct.unpack_from(f"<{n}I", pkt.payload)


def switch(env: Env, active: int, *, flags: int = RC, channel: int = 0) -> Step:
    return env.send_nvsp(struct.pack("<II", SET_DATAPATH, active).ljust(40, b"\0"), flags=flags, channel=channel)


def ready_with_vf(serial: int = 7) -> tuple[Env, HostPacket]:
    env = Env(HostProfile(vf_serial=serial))
    env.bring_up(NVS_V5, rndis=False)
    (assoc,) = inband(env.send_rndis(r_init(1)))
    return env, assoc


def test_association_after_rndis_init_carries_allocated_and_serial() -> None:
    env, assoc = ready_with_vf(0x1234)
    assert fields(assoc, 3) == (VFASSOC, 1, 0x1234)
    assert (assoc.channel, assoc.flags, assoc.trans_id) == (0, RC, VF_TID)
    assert len(assoc.payload) == 28  # padded as every NVSP message below 6.1 (40 from 6.1)
    assert env.host.vf.status() == {"present": True, "serial": 0x1234, "advertised": True,
                                    "data_path": "synthetic", "guest_allowed": True}
    env.ack(assoc)  # a completion of it is accepted and ignored
    assert env.host.state == "ready" and not env.host.rejections


@pytest.mark.parametrize("version", [NVS_V4, NVS_V5])
def test_no_association_without_the_guests_sriov_capability(version: int) -> None:
    """bring_up sets `sriov` only from NVSP 5 on, as Linux does; v4 without it hears nothing."""
    env = Env(HostProfile(vf_serial=3))
    env.bring_up(version, rndis=False)
    if version == NVS_V4:
        assert inband(env.send_rndis(r_init(1))) == []
        assert inband(env.host.vf_add(4)) == [] and inband(env.host.vf_remove()) == []
    else:
        assert [fields(p, 3) for p in inband(env.send_rndis(r_init(1)))] == [(VFASSOC, 1, 3)]


def test_a_vf_arriving_later_is_associated_at_once_and_only_once() -> None:
    env = Env()
    env.bring_up(NVS_V5, rndis=False)
    assert inband(env.host.vf_add(9)) == []  # before RNDIS init: held
    (assoc,) = inband(env.send_rndis(r_init(1)))
    assert fields(assoc, 3) == (VFASSOC, 1, 9)
    assert env.host.vf_add(9).packets == ()  # the host has it already


def test_guest_switch_is_completed_empty_and_moves_the_data_path() -> None:
    env, _ = ready_with_vf()
    step = switch(env, 1)
    (done,) = completions(step)
    assert (done.payload, done.trans_id) == (b"", env.tid)
    assert DataPathSwitched(True, "guest") in step.events and env.host.vf.data_path_vf
    assert switch(env, 1).events == ()  # already there: completed, no event
    step = switch(env, 0)
    assert DataPathSwitched(False, "guest") in step.events and not env.host.vf.data_path_vf
    assert switch(env, 1, flags=0).packets == ()  # DPDK: no completion requested, none sent
    assert env.host.vf.data_path_vf


def test_switch_without_an_advertised_vf_is_completed_but_moves_nothing() -> None:
    env = Env()
    env.bring_up(NVS_V5)
    step = switch(env, 1)
    assert [p.payload for p in completions(step)] == [b""]
    assert not any(isinstance(e, DataPathSwitched) for e in step.events) and not env.host.vf.data_path_vf
    assert env.host.rejections[-1].field == "active_datapath" and env.host.state == "ready"


def test_switch_on_a_subchannel_ends_the_channel() -> None:
    env, _ = ready_with_vf()
    env.host.queues.count = 1  # as if granted
    step = switch(env, 1, channel=1)
    assert any(isinstance(e, ChannelFault) for e in step.events) and env.host.state == "stopped"


def test_removal_on_the_vf_path_switches_back_then_disassociates() -> None:
    env, _ = ready_with_vf(5)
    switch(env, 1)
    step = env.host.vf_remove()
    back, gone = inband(step)
    assert fields(back, 2) == (SET_DATAPATH, 0) and (back.flags, back.trans_id) == (RC, SWITCH_DATA_PATH_TID)
    assert fields(gone, 3) == (VFASSOC, 0, 0) and (gone.flags, gone.trans_id) == (RC, VF_TID)
    assert DataPathSwitched(False, "host") in step.events and not env.host.vf.data_path_vf
    env.ack(back)
    env.ack(gone)  # the guest may complete both; ignored
    assert env.host.state == "ready" and env.host.vf.status()["present"] is False
    assert env.host.vf_remove().packets == ()  # nothing left to remove
    (again,) = inband(env.host.vf_add(6))  # `sim vf add`: associated again
    assert fields(again, 3) == (VFASSOC, 1, 6)


def test_removal_on_the_synthetic_path_only_disassociates() -> None:
    env, _ = ready_with_vf(5)
    step = env.host.vf_remove()
    assert [fields(p, 3) for p in inband(step)] == [(VFASSOC, 0, 0)]
    assert not any(isinstance(e, DataPathSwitched) for e in step.events)


def test_completion_types_are_unchanged_for_other_ids() -> None:
    env, _ = ready_with_vf()
    step = env.send_nvsp(struct.pack("<II", SET_DATAPATH, 0), ptype=COMP, flags=0, tid=0x8000000000000002)
    assert any(isinstance(e, ChannelFault) for e in step.events)  # not one of the host's two ids
