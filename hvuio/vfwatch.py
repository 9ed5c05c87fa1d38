"""When a NIC's traffic rides its accelerated-networking VF, as Linux's netvsc decides it: a pure policy.

What lives here: `VfWatch`, which takes what the host says (the NVSP 4 VF association, its own
switch back to synthetic, the completions of the guest's switches), what the netdev side reports
(the VF netdev found, or gone) and the time, and returns what to do, in order: `LookForVf` (find
the VF's netdev now: by serial = PCI slot, then by MAC), `JoinVf` (bring it up and take what it
receives into the NIC's interface), `SwitchDatapath` (NVSP SWITCH_DATA_PATH), `TxOnVf` (send the
interface's frames through the VF, or stop) and `LeaveVf`. The facts are netvsc spec B
(torvalds/linux drivers/net/hyperv/netvsc.c `netvsc_send_vf`, `netvsc_switch_datapath`,
netvsc_drv.c `netvsc_vf_changed`, `netvsc_unregister_vf`; microsoft/openvmm
vm/devices/net/netvsp/src/lib.rs `handle_state_change` for the host's removal order):

* The data path moves to the VF only when the host associated a VF (allocated 1), its netdev was
  found and joined; then SWITCH_DATA_PATH(VF), and the interface's frames go to the VF once the
  host completed it (Linux sets data_path_is_vf after the completion; netvsc_xmit checks it).
* Leaving the VF (association 0, the VF netdev gone, the host's own switch to synthetic, or
  stopping): the interface stops sending on the VF first ("Block sending traffic to VF if it's
  about to be gone"), then SWITCH_DATA_PATH(synthetic) unless the host already switched, then
  the VF is left once the path is synthetic (or at once when its netdev is gone).
* One switch at a time (NVSP allows one outstanding): what is wanted meanwhile is sent after
  the completion. The completion never says whether the host moved (B.3 item 42); a host switch
  to synthetic while ours to the VF is in flight wins.
* After the host's own switch to synthetic (OpenVMM sends it, then association 0) the VF is not
  used again until the host associates a VF anew: switching back in between would only be
  refused by a host that is taking the VF away.
* Every value the host sends is checked: an association with another serial replaces the VF
  (the joined one is left, the new one looked for);
  a host switch to the VF (no host does that) and a switch while the guest had no VF change
  nothing and are counted (`vf_host_switches_ignored`); repeated associations are idempotent.
* A switch to the VF that cannot be sent (a host that associates a VF on a channel below NVSP 4)
  leaves the VF until the next association (`refused`).
* Bounded wait: the VF netdev may appear after the association (OpenVMM offers the PCI device
  1 s later, a MANA probe may take minutes): it is looked for on every tick for `VF_WAIT`
  seconds, then given up with a warning (`vf_not_found`) until the next association or VF
  arrival; the NIC stays on the synthetic path meanwhile. A VF netdev that leaves while the VF
  is still associated is looked for again (Azure servicing removes and returns it).

`VfPort` names what performs the netdev actions. What must not live here: I/O (netlink, sysfs:
hvuio/netdev/vfpath.py does the actions; the Nic sends the switch), clocks (callers pass `now`), the protocol's bytes (proto/).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Protocol

__all__ = ["JoinVf", "LeaveVf", "LookForVf", "SwitchDatapath", "TxOnVf", "VF_WAIT", "VfAction", "VfPort",
           "VfWatch"]

#: Seconds the VF netdev is looked for after an association (or after it left) before giving up.
VF_WAIT: Final = 60.0


@dataclass(frozen=True, slots=True)
class LookForVf:
    """Find the VF netdev of `serial` now (PCI slot name = serial, then the NIC's MAC); report
    it with `VfWatch.found`."""

    serial: int


@dataclass(frozen=True, slots=True)
class JoinVf:
    """Bring netdev `name` up beside the NIC's interface and take what it receives into it."""

    name: str


@dataclass(frozen=True, slots=True)
class SwitchDatapath:
    """Send NVSP SWITCH_DATA_PATH (to the VF, or back to synthetic); report the completion with
    `VfWatch.switched`."""

    vf: bool


@dataclass(frozen=True, slots=True)
class TxOnVf:
    """Send the interface's frames through the VF (`on`), or stop doing so."""

    on: bool


@dataclass(frozen=True, slots=True)
class LeaveVf:
    """Stop taking what netdev `name` receives (`gone`: it no longer exists)."""

    name: str
    gone: bool = False


VfAction = LookForVf | JoinVf | SwitchDatapath | TxOnVf | LeaveVf


class VfPort(Protocol):
    """What performs the netdev actions (hvuio/netdev/vfpath.py's VfPath); errors are HvuioError."""

    def look(self, serial: int) -> str | None: ...
    def join(self, name: str) -> None: ...
    def tx(self, on: bool) -> None: ...
    def leave(self, name: str, gone: bool = False) -> None: ...
    def present(self) -> bool: ...
    def counters(self) -> dict[str, int]: ...


@dataclass
class VfWatch:
    """One NIC's VF state (see the module docstring). `enabled` False: every host message is
    only counted (the guest did not offer SR-IOV, so a host should send none)."""

    enabled: bool = True
    #: seconds the VF netdev is looked for (VF_WAIT)
    wait: float = VF_WAIT
    #: the associated VF's serial (None: no VF associated)
    serial: int | None = None
    #: the joined VF netdev (None: none)
    vf: str | None = None
    #: the data path the host completed or announced
    path_vf: bool = False
    #: the target of the switch in flight (None: none in flight)
    switching: bool | None = None
    #: the interface's frames go to the VF
    tx_vf: bool = False
    stopping: bool = False
    _withdrawn: bool = False  # the host switched to synthetic: no VF until a new association
    _vf_serial: int | None = None  # the serial the joined VF was found for
    _look_until: float | None = None
    _now: float = 0.0
    counters: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("vf_associations", "vf_switches", "vf_removals", "vf_host_switches", "vf_host_switches_ignored",
         "vf_not_found", "vf_netdev_lost", "vf_messages_ignored"), 0))
    #: one line per thing worth logging, taken by the caller (`take_notes`)
    notes: list[str] = field(default_factory=list)

    # ---- what the host says ------------------------------------------------------------------

    def association(self, allocated: bool, serial: int, now: float) -> list[VfAction]:
        """NVSP 4 VF association (type 128)."""
        if not self.enabled:
            self.counters["vf_messages_ignored"] += 1
            self.notes.append(f"ignored a VF association (serial {serial}): SR-IOV was not offered (--vf off)")
            return []
        self.counters["vf_associations"] += 1
        self._now = now
        if allocated:
            self.notes.append(f"VF slot {serial} added")
            self.serial, self._withdrawn = serial, False
            if self.vf is None:
                self._look(now)
        else:
            self.notes.append(f"VF slot {self.serial if self.serial is not None else serial} removed")
            self.serial, self._look_until = None, None
        return self._reconcile()

    def host_switched(self, vf: bool) -> list[VfAction]:
        """The host's own type-129 message."""
        if not self.enabled or vf or not (self.path_vf or self.switching):
            self.counters["vf_host_switches_ignored"] += 1
            what = "to the VF" if vf else "to synthetic while the guest was not on the VF"
            self.notes.append(f"ignored the host's data path switch {what}")
            return []
        self.counters["vf_host_switches"] += 1
        self.notes.append("the host switched the data path back to synthetic")
        self._withdrawn = True
        self._left_vf()
        return self._reconcile()

    def switched(self, vf: bool) -> list[VfAction]:
        """The host completed the guest's SWITCH_DATA_PATH (to `vf`)."""
        self.switching = None
        if vf and not self._withdrawn:
            if not self.path_vf:
                self.counters["vf_switches"] += 1
                self.notes.append(f"data path switched to VF {self.vf}")
            self.path_vf = True
        elif not vf:
            self._left_vf()
        return self._reconcile()

    def refused(self) -> list[VfAction]:
        """The switch to the VF could not be sent (NVSP below 4, or not taking requests): the VF
        is left and not used until the host associates one anew."""
        self.switching = None
        self._withdrawn = True
        self.counters["vf_messages_ignored"] += 1
        self.notes.append("cannot switch the data path to the VF on this channel; staying on synthetic")
        return self._reconcile()

    # ---- what the netdev side finds ------------------------------------------------------------

    def found(self, name: str) -> list[VfAction]:
        """LookForVf found netdev `name`."""
        if self.serial is None or self.vf is not None or self.stopping or self._withdrawn:
            return []
        self.vf, self._vf_serial, self._look_until = name, self.serial, None
        return [JoinVf(name), *self._reconcile()]

    def gone(self, now: float) -> list[VfAction]:
        """The joined VF netdev no longer exists (removed before the host said so)."""
        name = self.vf
        self._now = now
        if name is None:
            return []
        self.counters["vf_netdev_lost"] += 1
        self.notes.append(f"VF {name} went away")
        out: list[VfAction] = [TxOnVf(False)] if self.tx_vf else []
        self.tx_vf = False
        self.vf = self._vf_serial = None
        out.append(LeaveVf(name, gone=True))
        if self.serial is not None:
            self._look(now)  # it may come back while the VF stays associated
        return out + self._reconcile()

    def stop(self) -> list[VfAction]:
        """The NIC is going down: back to synthetic, VF left."""
        self.stopping = True
        return self._reconcile()

    def tick(self, now: float) -> list[VfAction]:
        """Time: look for the VF netdev while waiting for it; give up after VF_WAIT."""
        self._now = now
        if self._look_until is None or self.serial is None or self.vf is not None or self.stopping:
            return []
        if now >= self._look_until:
            self._look_until = None
            self.counters["vf_not_found"] += 1
            self.notes.append(f"no VF netdev matches serial {self.serial} or the NIC's MAC after {self.wait:g} s; "
                              "staying on the synthetic path")
            return []
        return [LookForVf(self.serial)]

    @property
    def idle(self) -> bool:
        """Nothing in flight and nothing of the VF in use (after `stop`: the teardown is done)."""
        return self.switching is None and not self.tx_vf and not self.path_vf and self.vf is None

    def take_notes(self) -> list[str]:
        notes, self.notes = self.notes, []
        return notes

    def status(self) -> dict[str, object]:
        """The paired VF as `status` and `stats --json` show it."""
        return {"serial": self.serial, "netdev": self.vf, "data_path": "vf" if self.path_vf else "synthetic",
                "tx_on_vf": self.tx_vf}

    # ---- the rules -------------------------------------------------------------------------------

    def _look(self, now: float) -> None:
        self._look_until = now + self.wait

    def _left_vf(self) -> None:
        if self.path_vf:
            self.counters["vf_removals"] += 1
            self.notes.append("data path switched to synthetic")
        self.path_vf = False

    def _want_vf(self) -> bool:
        return (self.enabled and not self.stopping and not self._withdrawn and self.serial is not None
                and self.vf is not None and self._vf_serial == self.serial)

    def _reconcile(self) -> list[VfAction]:
        """The actions that bring the state to what is wanted, in the safe order."""
        want = self._want_vf()
        out: list[VfAction] = []
        if self.tx_vf and not (want and self.path_vf):
            self.tx_vf = False
            out.append(TxOnVf(False))  # stop sending on the VF before anything else
        if self.switching is None and want != self.path_vf:
            self.switching = want
            out.append(SwitchDatapath(want))
        if want and self.path_vf and self.switching is None and not self.tx_vf:
            self.tx_vf = True
            out.append(TxOnVf(True))
        if self.vf is not None and not want and not self.path_vf and self.switching is None:
            out.append(LeaveVf(self.vf))
            self.vf = self._vf_serial = None
            if self.serial is not None and not self.stopping and not self._withdrawn:
                self._look(self._now)  # another serial was associated: look for its VF
        return out
