"""uio_hv_generic in the emulated guest kernel: probe/remove, /dev/uioN opens, irqcontrol, interrupts.

What lives here: `GuestIrq`, a device's emulated uio interrupt (its event count and the open
/dev/uioN sockets, in C: _native/simhost/irq.c, which a host pump also raises without the GIL),
and `UioDriver`, the uio_hv_generic half of `SimKernel` (VMBUS.md §1.6, §1.10):

* probe: maps 0..4 (ring, int page, monitor page, receive / send buffer with their GPADL
  handles), the backing files, the listening /dev/uioN socket and the primary `ring` file (late
  on 6.15+); remove undoes it and gives EOF to every open fd.
* /dev/uioN (shm.py has the sockets): one connection = one open(); each connect is answered with
  a 4-byte open status (0 or -errno) before any event, so open() is synchronous as on a real
  kernel; opens are counted (first = channel open: ring headers reinitialised, the connecting
  process's SO_PEERCRED pid kept as `SimDevice.opener_pid` for the host's "proc" guest-memory
  mode, then the host's `on_open`; last close = subchannels closed, then the primary and `on_close`); a 4-byte write is
  irqcontrol (mask / unmask per profile, a signal to the host for non-monitored channels); an
  interrupt (`signal_guest`, or a host pump from C) sends the event count to every open fd.
* the kernel's periodic views of the shared memory: ring snapshot attributes, the sysfs `event`
  count, and with `monitor_poll` the monitor page's trigger bits reported as guest signals.

Everything here runs on the kernel thread, or under the kernel lock, called by SimKernel (bus.py);
the host hooks are read from the SimKernel at call time, so a caller may swap them.

What must not live here: the bus, driver binding, device offers, timers and the kernel thread
(bus.py), the tree's layout (tree.py), sizes and switches per kernel version (profiles.py), any
host code.
"""

from __future__ import annotations

import errno
import os
import selectors
import socket
import struct
from typing import TYPE_CHECKING, Any

from hvuio.errors import LocalProtocolError, UsageError
from hvuio.sim.kernel import profiles as P
from hvuio.sim.kernel.shm import (init_ring_headers, map_backing, ring_snapshot, seqpacket_listen,
                                  set_inbound_mask, take_monitor_bits)
from hvuio.sim.kernel.tree import SimChannel, SimDevice

try:
    from hvuio.sim import _simhost  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - the build without a C compiler
    _simhost = None

if TYPE_CHECKING:
    from hvuio.sim.kernel.bus import SimKernel


class GuestIrq:
    """The emulated uio interrupt of one device (irq.c): its event count and the open
    /dev/uioN sockets that receive it. The kernel owns it; a HostPump raises it without the GIL.

    `set_conns` must be called with the new list *before* a listed socket is closed, so a pump
    never sends to a closed or reused descriptor."""

    def __init__(self) -> None:
        if _simhost is None:
            raise UsageError("the emulator's C core (hvuio.sim._simhost) is not built",
                             "Reinstall with a C compiler: pip install -e .")
        self._ffi, self._lib = _simhost.ffi, _simhost.lib
        self._irq = self._ffi.new("struct hvu_sim_irq *")
        self.max_conns = int(self._lib.HVU_SIM_IRQ_MAX_CONNS)

    @property
    def cptr(self) -> Any:
        return self._irq

    def set_conns(self, fds: list[int]) -> None:
        if len(fds) > self.max_conns:
            raise LocalProtocolError(f"{len(fds)} opens of one uio device; the emulator serves {self.max_conns}")
        arr = self._ffi.new("int[]", fds or [0])
        if self._lib.hvu_sim_irq_set_conns(self._irq, arr, len(fds)) != 0:
            raise LocalProtocolError(f"uio connection list {fds} refused")

    def raise_(self, in_ring: Any | None = None) -> int:
        """Interrupt: mask `in_ring` (a writable buffer of the inbound ring) if given, count, wake
        every open fd. Returns the new event count, or 0 when nobody has the device open."""
        ring = self._ffi.NULL if in_ring is None else self._ffi.from_buffer("uint8_t[]", in_ring,
                                                                           require_writable=True)
        return int(self._lib.hvu_sim_irq_raise(self._irq, ring))

    @property
    def event(self) -> int:
        return int(self._lib.hvu_sim_irq_event(self._irq))

    @property
    def raised(self) -> int:
        return int(self._irq.raised)

    @property
    def send_failed(self) -> int:
        return int(self._irq.send_failed)


def _peer_pid(sock: socket.socket) -> int | None:
    """The pid of the process at the other end of a /dev/uioN connection (SO_PEERCRED: the
    process that connected, i.e. called open()); None when the kernel gives none."""
    try:
        pid, _uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                              struct.calcsize("3i")))
    except OSError:
        return None
    return pid if pid > 0 else None


class Conn:
    """One open() of a simulated /dev/uioN."""

    def __init__(self, sock: socket.socket, dev: SimDevice) -> None:
        self.sock = sock
        self.dev = dev
        self.ready = False  # open status sent: from now on it receives interrupt counts


class UioDriver:
    """uio_hv_generic of one SimKernel; see the module docstring. Registers its sockets in the
    kernel's selector as ("listen", device) and ("conn", Conn), which the kernel thread hands back
    to `accept` and `readable`."""

    def __init__(self, kernel: SimKernel, selector: selectors.BaseSelector) -> None:
        self._kernel = kernel
        self._sel = selector
        self._listeners: dict[str, socket.socket] = {}
        self._conns: dict[int, Conn] = {}
        self._next_gpadl = P.FIRST_GPADL

    def close(self) -> None:
        """Kernel stop: every fd gets EOF, every listening socket goes (the kernel lock is held)."""
        for dev in self._kernel.devices.values():
            if dev.irq is not None:
                dev.irq.set_conns([])
        for conn in list(self._conns.values()):
            conn.sock.close()
        self._conns.clear()
        for sock in self._listeners.values():
            sock.close()
        self._listeners.clear()

    def _gpadl(self) -> int:
        handle = self._next_gpadl
        self._next_gpadl += 1
        return handle

    # -- uio_hv_generic probe/remove (VMBUS.md §1.6) -------------------------------------------------

    def probe(self, dev: SimDevice) -> bool:
        kernel = self._kernel
        prof = kernel.profile
        if prof.refuse_unmonitored and dev.monitor_id is None:
            kernel.printk(f"{dev.guid}: vmbus channel requires hypercall (probe refused, ENOTSUPP)")
            return False
        used = {d.uio for d in kernel.devices.values() if d.uio}
        number = next(n for n in range(len(used) + 1) if f"uio{n}" not in used)
        size = P.primary_ring_size(prof, dev.class_id)
        m12 = P.map12_size(prof)
        dev.maps = [("txrx_rings", 2 * size), ("int_page", m12), ("monitor_page", m12)]
        if P.has_buffers(prof, dev.class_id):
            dev.maps.append((f"recv:{self._gpadl()}", P.RECV_BUFFER_SIZE))
            dev.maps.append((f"send:{self._gpadl()}", P.SEND_BUFFER_SIZE))
        backing = [max(s, P.ring_file_size(prof, 2 * size)) if k == 0 else s for k, (_, s) in enumerate(dev.maps)]
        kernel.tree.add_uio(dev, number, backing)
        assert dev.uio is not None
        chan = dev.primary
        chan.ring_size = size
        chan.ring_backing = map_backing(kernel.sysroot, dev.uio, 0)
        sock = seqpacket_listen(kernel.tree.dev / dev.uio)
        sock.setblocking(False)
        self._listeners[dev.guid] = sock
        self._sel.register(sock, selectors.EVENT_READ, ("listen", dev))
        dev.state = 2
        if prof.ring_after_dev:
            kernel.after(kernel.ring_delay, lambda: kernel.tree.show_ring(dev, chan))
        else:
            kernel.tree.show_ring(dev, chan)
        return True

    def remove(self, dev: SimDevice) -> None:
        tree = self._kernel.tree
        self.close_fds(dev)
        dev.opens = 0
        sock = self._listeners.pop(dev.guid, None)
        if sock is not None:
            self._sel.unregister(sock)
            sock.close()
        for chan in list(dev.channels.values()):
            if chan.subchannel_id:
                tree.remove_channel(dev, chan)
        tree.hide_ring(dev, dev.primary)
        dev.primary.ring_backing = None
        tree.remove_uio(dev)
        dev.maps = []

    def close_fds(self, dev: SimDevice) -> None:
        """EOF to every open fd of `dev`, without the close semantics (remove, rescind)."""
        for fd, conn in list(self._conns.items()):
            if conn.dev is dev:
                self._drop_conn(fd, run_close=False)

    # -- open / close / irqcontrol / events ------------------------------------------------------

    def accept(self, dev: SimDevice) -> None:
        sock = self._listeners.get(dev.guid)
        if sock is None:
            return
        try:
            conn_sock, _ = sock.accept()
        except BlockingIOError:
            return
        conn_sock.setblocking(False)
        # close(2) of /dev/uioN is synchronous on a real kernel: finish what older fds of this
        # device already sent (irqcontrol writes, EOF = close) before this open counts.
        for older in [c for c in self._conns.values() if c.dev is dev]:
            while older.sock.fileno() in self._conns:
                try:
                    older.sock.recv(64, socket.MSG_PEEK | socket.MSG_DONTWAIT)
                except BlockingIOError:
                    break
                except OSError:
                    pass
                self._on_conn(older)
        if dev.rescinded:
            conn_sock.send(struct.pack("=i", -errno.ENODEV))
            conn_sock.close()
            return
        conn = Conn(conn_sock, dev)
        self._conns[conn_sock.fileno()] = conn
        self._sel.register(conn_sock, selectors.EVENT_READ, ("conn", conn))
        dev.opens += 1
        if dev.opens == 1:
            dev.opener_pid = _peer_pid(conn_sock)  # for the host's "proc" guest-memory mode
            try:
                self._channel_open(dev)
            except OSError as err:
                self._kernel.printk(f"{dev.guid}: open refused by the host: {os.strerror(err.errno or errno.EAGAIN)}")
                self._conns.pop(conn_sock.fileno(), None)
                self._sel.unregister(conn_sock)
                dev.opens = 0
                dev.state = 2
                self._kernel.tree.set_state(dev)
                conn_sock.send(struct.pack("=i", -(err.errno or errno.EAGAIN)))
                conn_sock.close()
                return
        conn_sock.send(struct.pack("=i", 0))  # open() returns only now: the open status
        conn.ready = True  # only now: an interrupt count must not arrive before the open status
        self._sync_irq(dev)

    def init_ring(self, chan: SimChannel, mask: int) -> None:
        assert chan.ring_backing is not None
        init_ring_headers(chan.ring_backing, chan.ring_size, mask, self._kernel.profile.header_full_clear)

    def _channel_open(self, dev: SimDevice) -> None:
        kernel = self._kernel
        self.init_ring(dev.primary, kernel.profile.mask_at_open)
        dev.state = 3
        kernel.tree.set_state(dev)
        self.snapshot(dev)
        if kernel.on_open is not None:
            kernel.on_open(dev)

    def _channel_close(self, dev: SimDevice) -> None:
        kernel = self._kernel
        for chan in list(dev.channels.values()):
            if not chan.subchannel_id:
                continue
            if kernel.rescind_subchannels_on_close:
                kernel.tree.remove_channel(dev, chan)
            else:  # closed, ring freed, directory kept until a rescind that never comes (VMBUS.md §6.1)
                kernel.tree.hide_ring(dev, chan)
                if chan.ring_backing is not None:
                    chan.ring_backing.unlink(missing_ok=True)
                    chan.ring_backing = None
        dev.state = 2
        if kernel.tree.device_dir(dev).is_dir():
            kernel.tree.set_state(dev)
        if kernel.on_close is not None:
            kernel.on_close(dev)

    def _drop_conn(self, fd: int, run_close: bool = True) -> None:
        conn = self._conns.pop(fd, None)
        if conn is None:
            return
        self._sel.unregister(conn.sock)
        self._sync_irq(conn.dev)  # before close: a pump must never send to a closed fd number
        conn.sock.close()
        if run_close:
            conn.dev.opens -= 1
            if conn.dev.opens == 0:
                self._channel_close(conn.dev)

    def readable(self, conn: Conn) -> None:
        """The kernel thread saw `conn` readable: an irqcontrol write or the fd's close."""
        if conn.sock.fileno() in self._conns:
            self._on_conn(conn)

    def _on_conn(self, conn: Conn) -> None:
        try:
            data = conn.sock.recv(64)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop_conn(conn.sock.fileno())
            return
        if len(data) != 4:
            self._kernel.printk(f"{conn.dev.uio}: write of {len(data)} bytes: EINVAL")
            return
        self._irqcontrol(conn.dev, struct.unpack("=i", data)[0])

    def _set_in_mask(self, chan: SimChannel, value: int) -> None:
        if chan.ring_backing is not None and chan.ring_backing.exists():
            set_inbound_mask(chan.ring_backing, chan.ring_size, value)

    def _irqcontrol(self, dev: SimDevice, value: int) -> None:
        """write(4 bytes): 0 masks, non-zero unmasks (and signals non-monitored channels) per profile."""
        kernel = self._kernel
        prof = kernel.profile
        chans = [c for c in dev.channels.values() if c.subchannel_id == 0 or prof.irqcontrol_all_channels]
        for chan in chans:
            self._set_in_mask(chan, 0 if value else 1)
            may_signal = prof.signal_unmonitored if chan.subchannel_id == 0 else prof.irqcontrol_all_channels
            if value and chan.monitor_id is None and may_signal:
                chan.events += 1
                if kernel.on_guest_signal is not None:
                    kernel.on_guest_signal(dev, chan.relid)
        self.snapshot(dev)

    def signal_guest(self, dev: SimDevice, relid: int) -> bool:
        """Host interrupt on channel `relid`: auto-mask per profile, event++, wake readers."""
        with self._kernel.lock:
            chan = dev.channels.get(relid)
            if chan is None or dev.opens == 0 or dev.rescinded:
                return False
            if self._kernel.profile.auto_mask:
                self._set_in_mask(chan, 1)
            if not dev.irq.raise_():
                return False
            chan.interrupts += 1
            self._sync_event(dev)
            return True

    def _sync_irq(self, dev: SimDevice) -> None:
        """Hand the device's ready connections to its interrupt (which C pumps also raise)."""
        dev.irq.set_conns([c.sock.fileno() for c in self._conns.values() if c.dev is dev and c.ready])

    def _sync_event(self, dev: SimDevice) -> None:
        """sysfs `event` follows the live count: at once for Python's raises, at the next
        snapshot for a host pump's (it raises from C without the kernel lock)."""
        event = dev.irq.event
        if event != dev.event:
            dev.event = event
            self._kernel.tree.set_event(dev)

    # -- monitor page (guest -> host signals of monitored channels, VMBUS.md §3.12) -------------------

    def scan_monitor_page(self) -> None:
        """Report trigger bits of opened monitored channels (consumed) as guest signals."""
        kernel = self._kernel
        wanted = {c.monitor_id: (d, c) for d in kernel.devices.values() if d.opens
                  for c in d.channels.values() if c.monitor_id is not None}
        for mid in take_monitor_bits(kernel.monitor_page_path(), set(wanted)):
            dev, chan = wanted[mid]
            if kernel.on_guest_signal is not None:
                kernel.on_guest_signal(dev, chan.relid)

    # -- ring snapshots --------------------------------------------------------------------------

    def snapshot(self, dev: SimDevice) -> None:
        self._sync_event(dev)
        for chan in list(dev.channels.values()):
            if chan.ring_backing is not None and chan.ring_backing.exists():
                self._kernel.tree.write_channel_counters(dev, chan, ring_snapshot(chan.ring_backing, chan.ring_size))
