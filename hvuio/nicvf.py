"""The NIC's accelerated-networking side: what the Nic does with the host's VF messages.

What lives here: `NicVf`, which a Nic (hvuio/nic.py) owns and feeds with the VF events of its
protocol machines (the VF association, the host's own data-path switch, the completion of the
guest's switch, VF messages dropped for values outside the protocol) and with a tick; it asks
hvuio/vfwatch.py's `VfWatch` what to do and does it: the NVSP switch through the Nic's `switch`
callback (which sends SWITCH_DATA_PATH while NVSP may take it), the netdev actions through the
`VfPort` the engine gives it while its tap runs (hvuio/netdev/vfpath.py). A netdev action that
fails is counted (`vf_errors`) and logged (a repeat of the same failure at debug level); a
failed join or redirect is treated as the VF gone. It keeps the VF netdev's
counters as last read (`vf_rx_packets`, ...) for the status record, and hands the VF's state to
the Nic's `publish` (NicInfo.vf) after every change. It keeps the rhythm of the liveness query:
while the data path is on the VF the synthetic channel carries no sends, so the engine's
watchdog (sends left uncompleted) cannot see a host that stopped the channel without a word
(OpenVMM's worker on an NVSP-level error) until the VF leaves and the traffic falls back onto a
dead channel; so every LIVENESS_PERIOD the Nic sends a link query (`liveness_due`, `probed`),
which the host must answer within the RNDIS reply limit, else the Nic's tick raises
HostTimeoutError and with `up --persist` hvuio/lifecycle.py re-initialises the NIC (counted as
watchdog_control); `liveness_probes` and `liveness_answers` count them. It holds the Nic's
callbacks weakly, so the Nic is in no reference cycle. Everything runs in the thread that owns the
rings (the primary's pump thread while the engine runs, the caller's at teardown).

What must not live here: the rules of when to switch (vfwatch.py), netlink and sysfs (the port),
the protocol machines and the link query's packets (proto/), rings.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from typing import Any, Final

from hvuio.errors import HvuioError
from hvuio.proto import events as ev
from hvuio.vfwatch import VF_WAIT, JoinVf, LookForVf, SwitchDatapath, TxOnVf, VfAction, VfPort, VfWatch
from hvuio.wire import rndis as wr

log = logging.getLogger(__name__)

#: While the data path is on the VF: seconds between the link queries that check the host still
#: serves the synthetic channel; each must be answered within the RNDIS reply limit.
LIVENESS_PERIOD: Final = 5.0

def _weak(fn: Callable[..., Any]) -> Callable[[], Callable[..., Any] | None]:
    """A weak reference to a bound method (a plain function is held as it is)."""
    if hasattr(fn, "__self__"):
        return weakref.WeakMethod(fn)
    return lambda: fn


VfEvent = ev.VfAssociation | ev.HostDatapathSwitched | ev.DatapathSwitched | ev.VfMessageDropped


class NicVf:
    """One NIC's VF side (see the module docstring)."""

    def __init__(self, *, enabled: bool, switch: Callable[[bool], bool], clock: Callable[[], float],
                 publish: Callable[[dict[str, Any] | None], None]) -> None:
        #: SR-IOV offered (`up --vf auto`); False: VF messages are only counted
        self.enabled = enabled
        #: seconds the VF netdev is looked for after an association (VF_WAIT)
        self.wait = VF_WAIT
        self.watch = VfWatch(enabled=enabled, wait=self.wait)
        #: the netdev side while the engine's tap runs (None: no netdev actions)
        self.port: VfPort | None = None
        # weak: the Nic owns this object, and a Nic in a reference cycle would be freed by the
        # garbage collector with its mapped buffers in an order that crashes (see engine._pump_error)
        self._switch_ref, self._publish_ref = _weak(switch), _weak(publish)
        self._clock = clock
        self._errors = 0
        self._last_error = ""  # the last netdev error logged as a warning (a repeat is logged at debug)
        self._traffic: dict[str, int] = {}
        self._liveness = {"liveness_probes": 0, "liveness_answers": 0}
        self._probed_at: float | None = None  # the last liveness query
        self._due_at = 0.0  # when `liveness_due` last said yes

    def _switch(self, vf: bool) -> bool:
        switch = self._switch_ref()
        return switch is not None and switch(vf)

    def _publish(self, status: dict[str, Any] | None) -> None:
        publish = self._publish_ref()
        if publish is not None:
            publish(status)

    def reset(self) -> None:
        """A fresh VfWatch for a new open (the host starts on the synthetic path too)."""
        self.watch = VfWatch(enabled=self.enabled, wait=self.wait)
        self._probed_at = None
        self._publish(self.watch.status() if self.enabled else None)

    def event(self, e: VfEvent) -> None:
        """One VF event of the protocol machines."""
        watch = self.watch
        if isinstance(e, ev.VfAssociation):
            self.do(watch.association(e.allocated, e.serial, self._clock()))
        elif isinstance(e, ev.HostDatapathSwitched):
            self.do(watch.host_switched(e.vf))
        elif isinstance(e, ev.DatapathSwitched):
            self.do(watch.switched(e.vf))
        else:
            watch.counters["vf_messages_ignored"] += 1
            log.warning("dropped a VF message of type %d from the host: %s", e.msg_type, e.reason)

    def tick(self) -> None:
        """Is the joined VF netdev still there, is the one waited for there yet; its counters."""
        port, watch = self.port, self.watch
        if port is None:
            return
        try:
            if watch.vf is not None and not port.present():
                self.do(watch.gone(self._clock()))
            self.do(watch.tick(self._clock()))
            self._traffic = port.counters()
        except (HvuioError, OSError) as err:
            self._error(err)

    def _error(self, err: HvuioError | OSError) -> None:
        """A netdev action that failed: counted (`vf_errors`); logged as a warning unless it is the
        same failure as the last one (a VF that cannot be joined is found and tried again every
        tick: one warning, then debug lines)."""
        self._errors += 1
        text = err.message if isinstance(err, HvuioError) else str(err)
        (log.debug if text == self._last_error else log.warning)("VF: %s", text)
        self._last_error = text

    def liveness_due(self) -> bool:
        """The data path is on the VF and the last liveness query is LIVENESS_PERIOD old (or
        there is none yet): the Nic sends one, and calls `probed` when it did."""
        if not self.on_vf:
            self._probed_at = None
            return False
        self._due_at = now = self._clock()
        return self._probed_at is None or now - self._probed_at >= LIVENESS_PERIOD

    def probed(self) -> None:
        """The Nic sent the liveness query `liveness_due` asked for."""
        self._probed_at = self._due_at
        self._liveness["liveness_probes"] += 1

    def answered(self, e: ev.QueryResult) -> None:
        """A query's result (only the Nic's liveness query asks one): a link query answered."""
        if e.oid == wr.Oid.GEN_MEDIA_CONNECT_STATUS:
            self._liveness["liveness_answers"] += 1

    def stop(self) -> None:
        """Teardown: back to synthetic (the caller waits while `switching`)."""
        self.do(self.watch.stop())

    @property
    def on_vf(self) -> bool:
        """The data path is on the VF (the host completed the switch)."""
        return self.watch.path_vf

    @property
    def switching(self) -> bool:
        return self.watch.switching is not None

    def counters(self) -> dict[str, int]:
        return {**self.watch.counters, "vf_errors": self._errors, **self._liveness, **self._traffic}

    def do(self, actions: list[VfAction]) -> None:
        """Perform what VfWatch decided, in order."""
        watch, port = self.watch, self.port
        for action in actions:
            if isinstance(action, SwitchDatapath):
                if not self._switch(action.vf):  # NVSP cannot take it (below 4, closing, broken)
                    self.do(watch.switched(False) if not action.vf else watch.refused())
                continue
            if port is None:
                continue
            try:
                if isinstance(action, LookForVf):
                    name = port.look(action.serial)
                    if name is not None:
                        self.do(watch.found(name))
                elif isinstance(action, JoinVf):
                    port.join(action.name)
                elif isinstance(action, TxOnVf):
                    port.tx(action.on)
                else:
                    port.leave(action.name, action.gone)
            except (HvuioError, OSError) as err:
                self._error(err)
                if isinstance(action, (JoinVf, TxOnVf)) and watch.vf is not None:
                    self.do(watch.gone(self._clock()))
        for note in watch.take_notes():
            log.info("%s", note)
        self._publish(watch.status() if self.enabled else None)
