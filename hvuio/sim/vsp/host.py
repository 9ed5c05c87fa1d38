"""The emulated host's network VSP runner: HostNvsp over the real shared memory of SimKernel.

What lives here: `SimHost`, which plugs into the emulated kernel's host hooks and plays Hyper-V's
side for every simulated NIC (VMBUS.md §5.7–5.12), and `SimEnvironment`, the in-process context
manager tests use to get kernel + host in one line. Per opened NIC a `Session` maps the primary
ring file (TX ring at 0 = the host reads, RX ring at S = size / 2 = the host writes, header page
= PAGE_SIZE) and maps 3/4 (receive / send buffer), runs a `HostNvsp` (sans-IO, hvuio.sim.host) and
one worker thread that
  * wakes on guest signals: the kernel's `on_guest_signal` hook for non-monitored channels, and
    for monitored channels its own poll of trigger_group[id / 32].pending bit id % 32 of the
    monitor page (VMBUS.md §3.12) every `latency` seconds (the guest's latency[id] entry, clamped to
    `monitor_latency`; its ceiling while the device is idle), clearing the bit atomically when consumed
    (`MonitorPage`, memory.py);
  * drains the guest's outbound rings with the strict HostRingReader (a ring violation stops the
    device's channels with a logged reason, as a real host's worker ends), feeds HostNvsp and
    writes every resulting packet into the inbound ring (a full ring queues a control reply or
    completion in order, sets the inbound pending_send_sz and retries when the guest frees space:
    none is dropped; network frames whose packet does not fit are dropped and counted, as
    OpenVMM's process_endpoint_rx does: rx_ring_full);
  * interrupts the guest only as a host does (VMBUS.md §3.11 d, §5.10): empty -> non-empty of an
    inbound ring whose interrupt_mask is 0, and outbound free space crossing pending_send_sz;
    one interrupt per channel per batch;
  * handles HostNvsp events: FrameFromGuest -> network, SubchannelsOffered -> kernel.add_subchannel
    (their rings appear later: attached when present, each time HostNvsp.channels_opened(n)),
    ChannelFault -> stop serving the device with the reason logged and kept in `status()`;
  * delivers frames from the network (one reader thread; every NIC whose RNDIS filter is set
    receives each frame: the network is a hub) with HostNvsp.deliver_batch, each on the channel
    HostNvsp.rx_queue names (the guest's RSS table; the primary without RSS); HostNvsp counts
    what it drops;
  * calls HostNvsp.tick(now) every `tick_interval` (delayed link indications, keep-alives);
  * with `vf=` (a factory of one VfPath per NIC, e.g. net.VethVf) gives each NIC a VF, kept by
    `HostVfs` (vfs.py: the VF path and the kernel tree's PCI pass-through device). HostNvsp
    advertises it (hvuio.sim.host.vf), and while the guest has switched the data path to the VF,
    the network thread hands frames from the network for that NIC to its VF path instead of the
    rings, and frames the guest sends on the VF to the network (HostVfs.to_vf / from_vf).
    `vf_remove` / `vf_add` take it away and bring it back (removal: HostNvsp's switch back and
    association 0 are handed to the NIC's worker first, then the pass-through device is rescinded
    and the VF path closed, without waiting for the guest; addition: path and device first, then
    the association).
A close forgets the session: a reopen starts a fresh HostNvsp, as on Hyper-V.

PUBLIC API (kept small; other people build on it):

    with SimEnvironment(tmp_path, profile="6.17", nics=1, host_profile=HostProfile(),
                        network=None) as env:
        env.sysroot, env.kernel (SimKernel), env.host (SimHost), env.nics (list[SimDevice])
        env.host.set_link(env.nics[0], up=False)       # scripted link change (RNDIS indication)
        env.host.indicate(env.nics[0], "network_change")  # "media_connect" (a repeat while up), or
        env.host.indicate(env.nics[0], "link_speed", 1_000_000_000)  # a new speed in bit/s
        env.host.rescind(env.nics[0])                  # host rescind, passed to the kernel
        env.host.reoffer("hveth0")                     # the rescinded NIC offered again: a new
                                                       # device (new relid), same GUID and MAC
        env.host.stall(env.nics[0])                    # stop serving the open NIC, silently
        env.host.stall(env.nics[0], control=True)      # ... or only leave its control requests
                                                       # unanswered, data still served
        env.host.vf_remove("hveth0"); env.host.vf_add("hveth0")  # accelerated networking (with
                                                       # SimHost(..., vf=factory): each NIC's VF path)
        env.host.deliver(env.nics[0], [frame], inject=None)  # frames without a network; inject
                                                       # = an RxFault name corrupts them (§5.14)
        env.host.status()                              # JSON-able dict per device: counters, fault
        env.host.counters(env.nics[0])                 # VspCounters of one device
        env.host.rndis_control(env.nics[0])            # the guest's filter sets and halts, in order
        env.host.fault(env.nics[0])                    # why the host stopped serving it, or None
        env.host.nvsp(env.nics[0])                     # the live HostNvsp (inspect only), or None
        env.host.wait_for(lambda: ..., timeout=5.0)    # poll helper for tests (no timed asserts)

(HostProfile is hvuio.sim.host.profile.HostProfile; devices may be named by SimDevice, instance
GUID or interface name.)

`SimHost(kernel, profile, network)` alone attaches to a kernel built elsewhere (the CLI daemon);
`close()` stops every worker. The network (a FrameNetwork, see net.py) belongs to the caller and
is not closed here. Extra keyword arguments of SimEnvironment go to SimKernel.

Threads and locks: the kernel hooks run on the kernel thread holding `kernel.lock`. A session's
worker touches shared memory only while holding `session.lock` with `session.stopped` false; it
calls back into the kernel (signal_guest, add_subchannel, ring lookup) only after releasing it,
under `kernel.lock`, re-checking `stopped`. Lock order is kernel.lock -> session.lock, never the
reverse, so on_close can stop a session synchronously without joining its thread.

What must not live here: protocol rules (hvuio.sim.host), ring layout rules (ring.py), kernel
semantics (hvuio.sim.kernel), the per-device worker (session.py), the shared-memory mappings
(memory.py), the control socket (control.py), the NICs' VF paths and their pass-through devices
(vfs.py).
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import select
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from hvuio.errors import LocalProtocolError, UsageError
from hvuio.sim.host import rss
from hvuio.sim.host.nvsp import HostNvsp
from hvuio.sim.host.offload import GsoFrame
from hvuio.sim.host.profile import HostProfile
from hvuio.sim.host.rndis import INDICATIONS
from hvuio.sim.host.receive import RxFault
from hvuio.sim.kernel.bus import SimKernel
from hvuio.sim.kernel.profiles import KernelProfile
from hvuio.sim.kernel.tree import SimDevice
from hvuio.sim.net import FrameNetwork, VfPath
from hvuio.sim.vsp.memory import MonitorPage
from hvuio.sim.vsp.guestmem import MODES as GUEST_MEMORY_MODES
from hvuio.sim.vsp.session import DEFAULT_MONITOR_LATENCY, NET_BATCH, TICK_INTERVAL, Session, VspCounters
from hvuio.sim.vsp.vfs import HostVfs, VfFactory

CONTROL_KEPT = 16  # RNDIS filter sets and halts kept per NIC (rndis_control)

__all__ = ["SimEnvironment", "SimHost", "VfFactory", "VspCounters"]

log = logging.getLogger(__name__)

STALL_REASON = "stalled on demand (sim stall): the channel's worker ended, nothing was sent to the guest"


class SimHost:
    """Hyper-V's side of every simulated NIC of `kernel`; see the module docstring."""

    def __init__(self, kernel: SimKernel, profile: HostProfile | None = None,
                 network: FrameNetwork | None = None, *,
                 monitor_latency: tuple[float, float, float] = DEFAULT_MONITOR_LATENCY,
                 tick_interval: float = TICK_INTERVAL, guest_memory_mode: str = "file",
                 vf: VfFactory | None = None) -> None:
        floor, default, ceiling = monitor_latency
        if vf is not None and network is None:
            raise UsageError("a VF path needs a network behind the host", "Start the emulator with --wire.")
        if not 0 < floor <= default <= ceiling:
            raise UsageError(f"monitor_latency {monitor_latency} must be 0 < floor <= default <= ceiling")
        if guest_memory_mode not in GUEST_MEMORY_MODES:
            raise UsageError(f"guest memory mode {guest_memory_mode!r} is not one of {', '.join(GUEST_MEMORY_MODES)}")
        self.guest_memory_mode = guest_memory_mode  # guestmem.py: "file" (the VM's memory) or "proc" (IOVA = VA)
        self.kernel = kernel
        self.profile = profile if profile is not None else HostProfile()
        self.network = network
        if network is not None and hasattr(network, "deliver_gso"):  # HostNvsp delivers GSO frames itself (vRSC or segments)
            network.deliver_gso = True
        self.monitor_latency = monitor_latency
        self.tick_interval = tick_interval
        self._monitor: MonitorPage | None = None
        self._sessions: dict[str, Session] = {}
        self._counters: dict[str, VspCounters] = {}
        self._control: dict[str, deque[str]] = {}
        self._faults: dict[str, str] = {}
        self._link: dict[str, bool] = {}
        self._rescinded: dict[str, SimDevice] = {}  # removed NICs a re-offer may bring back
        self._retired: list[threading.Thread] = []
        self._closed = False
        self._net_wake_r, self._net_wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.vfs = HostVfs(kernel, vf, self.wake_network)  # each NIC's VF (vfs.py)
        self._net_thread: threading.Thread | None = None
        if network is not None:
            self._net_thread = threading.Thread(target=self._net_run, name="hvuio-sim-vsp-net", daemon=True)
            self._net_thread.start()
        kernel.on_open = self._on_open
        kernel.on_close = self._on_close
        kernel.on_guest_signal = self._on_guest_signal
        try:
            self.give_vfs()
        except BaseException:
            self.close()
            raise

    def give_vfs(self) -> None:
        """With a VF factory: a VF (path and serial) for every NIC offered so far that has none yet
        (SimEnvironment calls it again once its kernel has offered the NICs)."""
        self.vfs.give()

    @property
    def monitor(self) -> MonitorPage:
        if self._monitor is None:
            self._monitor = MonitorPage(self.kernel.monitor_page_path())
        return self._monitor

    def counters(self, dev: SimDevice) -> VspCounters:
        return self._counters.setdefault(dev.guid, VspCounters())

    def rndis_control(self, dev: SimDevice | str) -> list[str]:
        """The guest's last RNDIS filter sets and halts on this NIC, oldest first, over opens
        (`packet_filter 0x...`, `halt`): the order of its teardown steps."""
        return list(self.control_log(self._device(dev)))

    def control_log(self, dev: SimDevice) -> deque[str]:
        return self._control.setdefault(dev.guid, deque(maxlen=CONTROL_KEPT))

    # -- kernel hooks (kernel thread, kernel.lock held) ------------------------------------------

    def _on_open(self, dev: SimDevice) -> None:
        if not dev.is_nic or self._closed:
            return  # only the network VSP is emulated; other devices open but nobody answers
        old = self._sessions.pop(dev.guid, None)
        if old is not None:
            old.stop("reopened")
        self.counters(dev).opens += 1
        self._faults.pop(dev.guid, None)
        profile = self.profile
        if dev.mac is not None:
            profile = dataclasses.replace(profile, mac=bytes.fromhex(dev.mac.replace(":", "")))
        if dev.guid in self._link:
            profile = dataclasses.replace(profile, link_up=self._link[dev.guid])
        profile = dataclasses.replace(profile, vf_serial=self.vfs.serial(dev))
        try:
            _ = self.monitor  # map it now, not on the worker's first pass
            session = Session(self, dev, profile)
        except (OSError, ValueError, LocalProtocolError) as exc:
            # like a host refusing OPENCHANNEL: the kernel fails the guest's open() (VMBUS.md §1.6)
            log.error("%s: sim host cannot serve the device: %s", dev.guid, exc)
            raise OSError(errno.EAGAIN, f"sim host cannot serve {dev.guid}: {exc}") from exc
        self._sessions[dev.guid] = session
        session.thread.start()

    def _on_close(self, dev: SimDevice) -> None:
        self._end(dev, "device closed by the guest")

    def _on_guest_signal(self, dev: SimDevice, relid: int) -> None:
        session = self._sessions.get(dev.guid)
        if session is None:
            return
        session.counters.guest_signals += 1
        chan = dev.channels.get(relid)
        if chan is not None and chan.ring_backing is not None and chan.monitor_id is None:
            try:
                with open(chan.ring_backing, "rb") as f:
                    mask = int.from_bytes(os.pread(f.fileno(), 4, 8), "little")
                if mask:
                    session.counters.guest_signals_masked += 1
            except OSError:
                pass
        session.guest_signal(relid)

    def _end(self, dev: SimDevice, reason: str) -> None:
        session = self._sessions.pop(dev.guid, None)
        if session is None:
            return
        if session.fault is not None:
            self._faults[dev.guid] = session.fault
        session.stop(reason)
        self._retired = [t for t in self._retired if t.is_alive()]
        self._retired.append(session.thread)

    # -- scripted host actions -------------------------------------------------------------------

    def _device(self, device: SimDevice | str) -> SimDevice:
        if isinstance(device, SimDevice):
            return device
        try:
            return self.kernel.device(device)
        except KeyError:
            raise UsageError(f"no simulated device {device!r}",
                             "Name it by instance GUID or interface name ('hvuio sim status').") from None

    def set_link(self, device: SimDevice | str, up: bool) -> None:
        """Link change: an RNDIS media indication now (or after the flap delay), else at next init."""
        dev = self._device(device)
        with self.kernel.lock:
            self._link[dev.guid] = up
            session = self._sessions.get(dev.guid)
        if session is not None:
            session.post(lambda: session.nvsp.set_link(up, time.monotonic()))

    def indicate(self, device: SimDevice | str, kind: str, speed_bps: int | None = None) -> None:
        """A scripted RNDIS indication to an open NIC: "network_change", "media_connect" (a repeat
        while the link is up) or "link_speed" (with `speed_bps`); nothing when RNDIS is not up
        (HostRndis.indicate)."""
        if kind not in INDICATIONS:
            raise UsageError(f"indication {kind!r} is not one the host sends on request",
                             f"Known: {', '.join(sorted(INDICATIONS))}.")
        if (kind == "link_speed") != (speed_bps is not None):
            raise UsageError(f"indication {kind!r} " + ("needs a link speed" if kind == "link_speed"
                                                        else "takes no link speed"),
                             "Give a speed (--mbps N) with link-speed only.")
        if speed_bps is not None and not 0 <= speed_bps <= 0xFFFFFFFF * 100:
            raise UsageError(f"link speed {speed_bps} bit/s does not fit the indication",
                             "Give a speed from 0 to 429496 Mbit/s.")
        dev = self._device(device)
        session = self._sessions.get(dev.guid)
        if session is None:
            raise UsageError(f"{dev.guid} is not open; the host indicates only to an opened NIC")
        session.post(lambda: session.nvsp.indicate(kind, speed_bps))

    def deliver(self, device: SimDevice | str, frames: Sequence[bytes], *, channel: int = 0,
                inject: RxFault | None = None) -> None:
        """Frames for an open NIC as one transfer-page packet, optionally corrupted on purpose
        (`inject`, HostNvsp's RxFault names: VMBUS.md §4 / §5.14 fault injection); no network needed.
        A GsoFrame (hvuio.sim.host.offload) keeps its virtio_net_hdr, as from a tap network."""
        dev = self._device(device)
        session = self._sessions.get(dev.guid)
        if session is None:
            raise UsageError(f"{dev.guid} is not open; the host delivers only to an opened NIC")
        session.post_delivery([f if isinstance(f, GsoFrame) else bytes(f) for f in frames], channel, inject)

    def rescind(self, device: SimDevice | str) -> None:
        """Host rescind of the primary: the host stops serving, then the kernel removes the device;
        the NIC's VF path (if any) goes with it."""
        dev = self._device(device)
        with self.kernel.lock:
            self._end(dev, "rescinded by the host")
            self.kernel.rescind(dev)
            if dev.is_nic and dev.guid not in self.kernel.devices:
                self._rescinded[dev.guid] = dev
        self.vfs.rescinded(dev)  # the NIC's VF goes with it; a re-offer brings both back

    def reoffer(self, device: str) -> SimDevice:
        """Offer a rescinded NIC again: a new VMBus device with a new relid and the same instance
        GUID (hence the same MAC), probed like any fresh offer, with the VF the rescind took, if
        any (docs/EMULATOR.md "Re-offer")."""
        with self.kernel.lock:
            gone = next((d for d in self._rescinded.values() if device in (d.guid, d.ifname)), None)
            if gone is None:
                try:
                    dev = self.kernel.device(device)
                except KeyError:
                    raise UsageError(f"no rescinded simulated NIC {device!r}",
                                     "Rescind it first ('hvuio sim rescind'); name it by instance GUID or "
                                     "interface name.") from None
                if dev.rescinded:
                    raise UsageError(f"{device}: the rescinded device was never removed (this kernel profile "
                                     "oopses on the rescind of an open primary), so no re-offer reaches it",
                                     "Use a kernel profile with the 2024 rescind fixes, e.g. --kernel 6.17.")
                raise UsageError(f"{device} is offered; only a rescinded NIC can be re-offered",
                                 f"Rescind it first ('hvuio sim rescind {device}').")
            del self._rescinded[gone.guid]
            dev = self.kernel.offer(gone.class_id, ifname=gone.ifname, monitored=gone.monitor_id is not None,
                                    guid=gone.guid)
        if self.vfs.reoffered(dev):
            self.vf_add(dev)
        return dev

    def vf_remove(self, device: SimDevice | str) -> None:
        """The host loses the NIC's VF: the guest is told first (HostNvsp: back to synthetic if
        switched, then association 0, handed to the NIC's worker; [OV] `handle_state_change`),
        then the PCI pass-through device is rescinded and the VF path closed (HostVfs.leave)."""
        dev = self._device(device)
        self.vfs.check_remove(dev)
        session = self._sessions.get(dev.guid)
        if session is not None:
            session.post(session.nvsp.vf_remove)
        self.vfs.leave(dev)

    def vf_add(self, device: SimDevice | str) -> None:
        """The host gets the NIC's VF back: a new VF path and PCI pass-through device (HostVfs.add),
        then the association (if the guest may hear it)."""
        dev = self._device(device)
        serial = self.vfs.add(dev)
        session = self._sessions.get(dev.guid)
        if session is not None:
            session.post(lambda: session.nvsp.vf_add(serial))

    def vf_port(self, device: SimDevice | str) -> VfPath | None:
        """The NIC's VF path while the host has a VF (tests inspect it), else None."""
        return self.vfs.port(self._device(device))

    def stall(self, device: SimDevice | str, control: bool = False) -> None:
        """Stop serving an open NIC without telling the guest (as OpenVMM's channel worker ends on
        an NVSP-level error): a fault on demand; only a close and re-open starts a fresh host side.
        With `control`, only its RNDIS control requests go unanswered from now on while data is
        still served (HostNvsp.stall_control: a fault injection of the emulator's own)."""
        dev = self._device(device)
        with self.kernel.lock:
            session = self._sessions.get(dev.guid)
        if session is None:
            raise UsageError(f"{dev.ifname or dev.guid} is not open; only an open NIC's channel can stall",
                             "Open it first (e.g. 'hvuio up'), then stall it.")
        if control:
            session.post(session.nvsp.stall_control)
            return
        session.stall(STALL_REASON)

    def fault(self, device: SimDevice | str) -> str | None:
        """Why the host stopped serving the device's current (or last) open, if it did."""
        dev = self._device(device)
        session = self._sessions.get(dev.guid)
        if session is not None and session.fault is not None:
            return session.fault
        return self._faults.get(dev.guid)

    def nvsp(self, device: SimDevice | str) -> HostNvsp | None:
        """The current HostNvsp of an open NIC (for inspection only: it belongs to the worker)."""
        session = self._sessions.get(self._device(device).guid)
        return session.nvsp if session is not None else None

    def status(self) -> dict[str, Any]:
        """A JSON-able view of every NIC: open state, link, counters, HostNvsp counters, fault."""
        out: dict[str, Any] = {}
        with self.kernel.lock:
            for dev in self.kernel.nics:
                session = self._sessions.get(dev.guid)
                entry: dict[str, Any] = {
                    "ifname": dev.ifname, "uio": dev.uio, "open": session is not None,
                    "link_up": self._link.get(dev.guid, self.profile.link_up), "rx_layout": self.profile.rx_layout,
                    "counters": dataclasses.asdict(self.counters(dev)), "fault": self.fault(dev),
                    "rndis_control": list(self.control_log(dev)),
                }
                if session is not None:
                    entry["nvsp_state"] = session.nvsp.state
                    entry["nvsp_version"] = session.nvsp.version
                    entry["subchannels"] = sorted(c.relid for c in session.channels.values() if c.index)
                    entry["rss"] = rss.status(session.nvsp.rss, session.nvsp.subchannels + 1)
                    entry["nvsp_counters"] = dict(session.nvsp.counters)
                    entry["control_stalled"] = session.nvsp.control_stalled  # `stall(control=True)`
                    entry["rejections"] = list(session.rejections)
                    entry["vf"] = session.nvsp.vf.status()
                elif self.vfs.factory is not None:
                    entry["vf"] = self.vfs.status(dev)
                out[dev.guid] = entry
        return out

    @staticmethod
    def wait_for(predicate: Callable[[], bool], timeout: float = 5.0, interval: float = 0.002) -> bool:
        """Poll `predicate` until true or `timeout`; returns its last value (tests and scripts)."""
        deadline = time.monotonic() + timeout
        while True:
            if predicate():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(interval)

    # -- network ---------------------------------------------------------------------------------

    def wake_network(self) -> None:
        try:
            os.write(self._net_wake_w, b"x")
        except OSError:
            pass

    def _net_run(self) -> None:
        net = self.network
        assert net is not None
        while not self._closed:
            with self.kernel.lock:  # the kernel thread adds and removes sessions
                ready = [s for s in self._sessions.values() if (s.rx_ready or s.vf_data_path) and not s.stopped]
            vf_fds = self.vfs.fds()
            fds = [self._net_wake_r, net.fileno()] if ready else [self._net_wake_r]
            try:
                readable, _, _ = select.select(fds + list(vf_fds), [], [], 0.1)
            except (OSError, ValueError):
                if vf_fds:
                    continue  # a VF path closed under us: take the new list
                return  # the network was closed under us
            for fd in readable:
                if fd in vf_fds:
                    self.vfs.from_vf(*vf_fds[fd], net, self._nic_counters)
            if self._net_wake_r in readable:
                try:
                    os.read(self._net_wake_r, 4096)
                except BlockingIOError:
                    pass
                continue  # a NIC became ready or stopped: take the new list before reading frames
            if ready and net.fileno() in readable:
                try:
                    frames = net.read_frames(NET_BATCH)
                except Exception:  # noqa: BLE001 - keep serving; the network reports its own errors
                    log.exception("sim host: reading the network failed")
                    continue
                for session in ready:
                    if session.vf_data_path:
                        self.vfs.to_vf(session, frames)
                    else:
                        session.post_frames(frames)

    def _nic_counters(self, guid: str) -> VspCounters:
        return self._counters.setdefault(guid, VspCounters())

    def close(self) -> None:
        """Stop every worker and the network reader (the network itself stays the caller's)."""
        with self.kernel.lock:
            self._closed = True
            for dev in list(self.kernel.devices.values()):
                self._end(dev, "emulator stopping")
            if self.kernel.on_open == self._on_open:
                self.kernel.on_open = self.kernel.on_close = self.kernel.on_guest_signal = None
        self.wake_network()
        if self._net_thread is not None:
            self._net_thread.join(timeout=5)
        self.vfs.close()
        for thread in self._retired:
            thread.join(timeout=5)
        self._retired.clear()
        if self._monitor is not None:
            self._monitor.close()
            self._monitor = None
        for fd in (self._net_wake_r, self._net_wake_w):
            os.close(fd)


class SimEnvironment:
    """SimKernel + SimHost in this process, for tests: `with SimEnvironment(tmp_path) as env:`."""

    def __init__(self, sysroot: Path | str, profile: str | KernelProfile = "6.17", nics: int = 1, *,
                 host_profile: HostProfile | None = None, network: FrameNetwork | None = None,
                 guest_memory_mode: str = "file", vf: VfFactory | None = None, **kernel_options: Any) -> None:
        self.sysroot = Path(sysroot)
        self._vf = vf
        self.kernel = SimKernel(self.sysroot, profile, nics=nics, **kernel_options)
        self._host_profile = host_profile
        self._guest_memory_mode = guest_memory_mode
        self._network = network
        self._host: SimHost | None = None

    @property
    def host(self) -> SimHost:
        if self._host is None:
            raise LocalProtocolError("SimEnvironment.host used outside its 'with' block")
        return self._host

    @property
    def nics(self) -> list[SimDevice]:
        return self.kernel.nics

    def __enter__(self) -> SimEnvironment:
        self._host = SimHost(self.kernel, self._host_profile, self._network,
                             guest_memory_mode=self._guest_memory_mode, vf=self._vf)
        try:
            self.kernel.start()
            self._host.give_vfs()
        except BaseException:
            self._host.close()
            raise
        return self

    def __exit__(self, t: type[BaseException] | None, v: BaseException | None, tb: TracebackType | None) -> None:
        try:
            if self._host is not None:
                self._host.close()
        finally:
            self.kernel.stop()
