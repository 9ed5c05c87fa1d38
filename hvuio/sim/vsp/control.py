"""Control socket of a running emulator: `hvuio sim link|indicate|status|rescind|reoffer|stall|vf`
talk to SimHost here.

What lives here: `ControlServer`, a thread serving `<sysroot>/run/hvuio-sim/vsp.sock` (AF_UNIX
SOCK_SEQPACKET, one JSON request per connection, one JSON reply), `request()` for the client
side, and `run_host()`, which the `hvuio sim start` daemon uses to start SimHost (with an
optional network) and the server next to the emulated kernel.

Protocol (documented in docs/EMULATOR.md): a request is a JSON object with "cmd":
  {"cmd": "status"}                               -> {"ok": true, "devices": {guid: {...}}}
  {"cmd": "link", "device": NAME, "up": bool}     -> {"ok": true}
  {"cmd": "indicate", "device": NAME, "status": "network_change" | "media_connect" | "link_speed",
   "mbps": N (link_speed only)}                   -> {"ok": true}
  {"cmd": "rescind", "device": NAME}              -> {"ok": true}
  {"cmd": "reoffer", "device": NAME}              -> {"ok": true, "guid": ..., "relid": N, "mac": ...}
  {"cmd": "stall", "device": NAME, "control": bool (optional: only control requests unanswered)}
                                                  -> {"ok": true}
  {"cmd": "vf", "device": NAME, "op": "add"|"remove"} -> {"ok": true}
NAME is an instance GUID or an interface name. A failure is {"ok": false, "error": "...",
"hint": "..."}, which `request()` raises as UsageError. Only the sim's own user can reach the
socket (mode 0600).

What must not live here: host behaviour (host.py), click (hvuio/cli/sim.py).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import shlex
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

from hvuio.errors import HvuioError, UsageError
from hvuio.sim.host.profile import HostProfile
from hvuio.sim.kernel.bus import SimKernel
from hvuio.sim.kernel.shm import seqpacket_connect, seqpacket_listen, state_dir
from hvuio.sim.net import FrameNetwork
from hvuio.sim.vsp.host import SimHost
from hvuio.sim.vsp.vfs import VfFactory

log = logging.getLogger(__name__)

SOCKET_NAME: Final = "vsp.sock"
MAX_MESSAGE: Final = 1 << 20  # a status reply of 64 NICs stays far below this
REQUEST_TIMEOUT: Final = 5.0
COMMANDS: Final = ("status", "link", "indicate", "rescind", "reoffer", "stall", "vf")


def socket_path(sysroot: Path | str) -> Path:
    return state_dir(sysroot) / SOCKET_NAME


class ControlServer:
    """Serves control requests for `host` on `socket_path(sysroot)` until `close()`."""

    def __init__(self, host: SimHost, sysroot: Path | str) -> None:
        self.host = host
        self.path = socket_path(sysroot)
        self.path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._sock = seqpacket_listen(self.path)
        self._stop_r, self._stop_w = os.pipe2(os.O_CLOEXEC)
        self._thread = threading.Thread(target=self._run, name="hvuio-sim-control", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            readable, _, _ = select.select([self._sock.fileno(), self._stop_r], [], [])
            if self._stop_r in readable:
                return
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(REQUEST_TIMEOUT)
                try:
                    reply = self.handle(json.loads(conn.recv(MAX_MESSAGE) or b"null"))
                except (OSError, ValueError) as exc:
                    reply = {"ok": False, "error": f"bad control request: {exc}", "hint": ""}
                with contextlib.suppress(OSError):
                    conn.send(json.dumps(reply).encode())

    def handle(self, req: Any) -> dict[str, Any]:
        """One request -> one reply (also callable directly, e.g. from tests)."""
        if not isinstance(req, dict) or not isinstance(req.get("cmd"), str):
            return {"ok": False, "error": "a control request is a JSON object with a string 'cmd'", "hint": ""}
        try:
            cmd = req["cmd"]
            if cmd == "status":
                return {"ok": True, "devices": self.host.status()}
            device = req.get("device")
            if not isinstance(device, str):
                raise UsageError(f"control command {cmd!r} needs a 'device' (GUID or interface name)")
            if cmd == "link":
                up = req.get("up")
                if not isinstance(up, bool):
                    raise UsageError("control command 'link' needs 'up': true or false")
                self.host.set_link(device, up)
            elif cmd == "indicate":
                status = req.get("status")
                if not isinstance(status, str):
                    raise UsageError("control command 'indicate' needs a 'status' string")
                mbps = req.get("mbps")
                if mbps is not None and (not isinstance(mbps, int) or isinstance(mbps, bool)):
                    raise UsageError("control command 'indicate' needs 'mbps' as a whole number")
                self.host.indicate(device, status, None if mbps is None else mbps * 1_000_000)
            elif cmd == "rescind":
                self.host.rescind(device)
            elif cmd == "stall":
                control = req.get("control", False)
                if not isinstance(control, bool):
                    raise UsageError("control command 'stall' takes 'control' as true or false")
                self.host.stall(device, control=control)
            elif cmd == "vf":
                op = req.get("op")
                if op == "add":
                    self.host.vf_add(device)
                elif op == "remove":
                    self.host.vf_remove(device)
                else:
                    raise UsageError("control command 'vf' needs 'op': \"add\" or \"remove\"")
            elif cmd == "reoffer":
                dev = self.host.reoffer(device)
                return {"ok": True, "guid": dev.guid, "relid": dev.relid, "mac": dev.mac}
            else:
                raise UsageError(f"unknown control command {cmd!r}", f"Known: {', '.join(COMMANDS)}.")
        except HvuioError as err:
            return {"ok": False, "error": err.message, "hint": err.hint}
        return {"ok": True}

    def close(self) -> None:
        os.write(self._stop_w, b"x")
        self._thread.join(timeout=5)
        self._sock.close()
        for fd in (self._stop_r, self._stop_w):
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def request(sysroot: Path | str, req: dict[str, Any], timeout: float = REQUEST_TIMEOUT) -> dict[str, Any]:
    """Send one request to the emulator running under `sysroot`; its reply, or UsageError."""
    path = socket_path(sysroot)
    try:
        sock = seqpacket_connect(path)
    except PermissionError as exc:
        raise UsageError(f"permission denied on the emulated host's control socket {path} ({exc.strerror})",
                         "Run the command as root, or as the user who started the emulator.") from None
    except OSError as exc:
        root = shlex.quote(os.path.abspath(sysroot))
        raise UsageError(f"no emulated host answers at {path}: {exc.strerror}",
                         f"Start it with 'hvuio --sysroot {root} sim start' (the host runs unless --no-host); "
                         f"after a crash, 'hvuio --sysroot {root} sim stop' first.") from None
    with sock:
        sock.settimeout(timeout)
        try:
            sock.send(json.dumps(req).encode())
            data = sock.recv(MAX_MESSAGE)
        except OSError as exc:
            raise UsageError(f"control request to {path} failed: {exc}",
                             "A stopped (SIGSTOP) or stuck emulator does not answer: resume it (kill -CONT), "
                             "or stop it and start it again ('sim stop', 'sim start').") from None
    try:
        reply = json.loads(data)
    except ValueError:
        raise UsageError(f"the emulator at {path} sent a malformed reply ({len(data)} bytes)",
                         "Another program may hold the control socket; stop it, or stop and start the emulator "
                         "again ('sim stop', 'sim start').") from None
    if not isinstance(reply, dict) or not reply.get("ok"):
        error = reply.get("error", "unknown error") if isinstance(reply, dict) else "malformed reply"
        hint = reply.get("hint") if isinstance(reply, dict) else None
        raise UsageError(str(error), str(hint) if hint else None)
    return reply


@contextlib.contextmanager
def run_host(kernel: SimKernel, sysroot: Path | str, *, profile: HostProfile | None = None,
             network: FrameNetwork | None = None, guest_memory_mode: str = "file",
             vf: VfFactory | None = None) -> Iterator[SimHost]:
    """SimHost + ControlServer for a kernel that runs elsewhere in this process (the CLI daemon).

    Start it before the guest opens a device (a host attached later misses that open). The
    network, if any, is closed on the way out: the daemon hands it over.
    """
    try:
        host = SimHost(kernel, profile, network, guest_memory_mode=guest_memory_mode, vf=vf)
    except BaseException:
        if network is not None:
            network.close()
        raise
    try:
        server = ControlServer(host, sysroot)
    except BaseException:
        host.close()
        raise
    try:
        yield host
    finally:
        server.close()
        host.close()
        if network is not None:
            network.close()
