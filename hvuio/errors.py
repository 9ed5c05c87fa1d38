"""Every error hvuio raises on purpose.

An `HvuioError` carries one sentence (what went wrong) and a hint (what to do), and the exit code
the CLI returns for it. `cli.main` prints these without a traceback. Anything else that escapes is
a bug and is shown with its traceback only under `--debug`.

`EXIT_CODES` lists every code the `hvuio` command returns with its meaning: `hvuio --help` and the
README show it, and a test holds it equal to the classes below.

No imports from the rest of hvuio: every layer may import this module.
"""

from __future__ import annotations

from typing import Final

#: (exit code, meaning) of every code `hvuio` returns, in order.
EXIT_CODES: Final[tuple[tuple[int, str], ...]] = (
    (0, "success"),
    (1, "failed (no more specific code; e.g. an unreadable trace file)"),
    (2, "usage: a bad option or argument, or a request that cannot be done as asked"),
    (3, "the uio_hv_generic module is missing"),
    (4, "no such VMBus device or interface"),
    (5, "the device is busy (another program holds it)"),
    (6, "the device is not a synthetic NIC"),
    (7, "bind refused: the NIC carries the default route or this SSH session"),
    (8, "a sysfs or /dev file is missing or malformed"),
    (9, "this machine cannot do it (not Hyper-V, no VMBus, ...); 'hvuio doctor': a check failed"),
    (10, "the host rescinded the device"),
    (11, "the host broke the protocol, refused a request or did not answer"),
    (12, "an unsafe path (a directory another user can write)"),
    (13, "the emulator ('hvuio sim') serving the device is gone"),
    (70, "internal error: a bug in hvuio"),
    (77, "permission denied: run as root"),
    (130, "interrupted (Ctrl-C)"),
)


class HvuioError(Exception):
    """Base class: `message` is one sentence, `hint` says what to do next."""

    exit_code = 1
    default_hint = ""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = self.default_hint if hint is None else hint

    def __str__(self) -> str:
        return self.message


class UsageError(HvuioError):
    """The user asked for something that cannot be done as asked."""

    exit_code = 2


class NotRootError(HvuioError):
    exit_code = 77
    default_hint = "Run the command as root (sudo), or give the process CAP_NET_ADMIN and CAP_SYS_ADMIN."


class ModuleMissingError(HvuioError):
    exit_code = 3
    default_hint = "Install the kernel's extra modules (e.g. linux-modules-extra-$(uname -r)) and run 'modprobe uio_hv_generic'."


class DeviceNotFoundError(HvuioError):
    exit_code = 4
    default_hint = "Run 'hvuio list' to see the VMBus devices and their interface names."


class DeviceBusyError(HvuioError):
    exit_code = 5
    default_hint = "Stop the program that holds the device (see 'fuser /dev/uio*'), then retry."


class WrongDeviceError(HvuioError):
    exit_code = 6
    default_hint = "Only synthetic NICs (class f8615163-df3e-46c5-913f-f2d2f965ed0e) can be driven by hvuio."


class UnsafeBindError(HvuioError):
    """Binding would cut the machine off (default route or the SSH session uses the NIC)."""

    exit_code = 7
    default_hint = "Use a secondary NIC, or pass --force if you have console access."


class SysfsError(HvuioError):
    """A sysfs or /dev file is missing or malformed."""

    exit_code = 8
    default_hint = "Run 'hvuio doctor'; the device's sysfs or /dev files are missing or not what uio_hv_generic writes."


class PlatformError(HvuioError):
    """This machine cannot do what was asked (not Hyper-V, no VMBus, no /dev/net/tun...)."""

    exit_code = 9
    default_hint = "Run 'hvuio doctor'; on a machine that is not a Hyper-V guest use the emulator ('hvuio demo')."


class RescindedError(HvuioError):
    """The host rescinded the device (the UIO fd returned EIO)."""

    exit_code = 10
    default_hint = "The host removed the device; wait for it to be offered again and re-run 'hvuio bind'."


class EmulatorGoneError(HvuioError):
    """The emulator's process (`hvuio sim`) that served the device is gone: its uio socket
    reached end of file with nobody holding the emulator's lock (not a rescind)."""

    exit_code = 13
    default_hint = "Start the emulator again with 'hvuio --sysroot DIR sim start' (after 'hvuio --sysroot DIR sim stop')."


class HostError(HvuioError):
    """The host (or the emulator) broke the protocol or refused a request."""

    exit_code = 11


class HostProtocolError(HostError):
    """The host sent something a correct host never sends: the message names field, value and rule."""

    default_hint = "The channel was stopped; rerun with --debug (it logs the protocol messages) and report the log."


class HostRefusedError(HostError):
    """The host answered a request with a failure status (e.g. no common NVSP version)."""

    default_hint = "The host rejected the request; check the VM's host version and the requested settings."


class HostTimeoutError(HostError):
    """The host did not answer within the protocol's time limit."""

    default_hint = "The host did not answer; check 'hvuio doctor' and that no other program drives the device."


class HostStalledError(HostTimeoutError):
    """The host stopped completing what the guest sent (a silently stopped channel)."""


class RingCorruptError(HostProtocolError):
    """A ring header or packet descriptor the host wrote failed validation.

    `field` names what was wrong, `value` is the value read; the channel must not be used again.
    """

    def __init__(self, field: str, value: int, rule: str, hint: str | None = None) -> None:
        super().__init__(f"ring corrupt: {field} = {value:#x} ({rule})", hint)
        self.field = field
        self.value = value
        self.rule = rule


class UnsafePathError(HvuioError):
    """A directory or file hvuio would write as root can be changed by another user."""

    exit_code = 12
    default_hint = ("Use a directory that only root (or you) can write, with no symlink on the way, "
                    "e.g. --sysroot /run/hvsim; hvuio creates it with mode 0700 when it is missing.")


class LocalProtocolError(HvuioError):
    """hvuio called a protocol machine wrongly: a bug in hvuio, not in the host."""

    exit_code = 70
    default_hint = "This is a bug in hvuio; rerun with --debug and report it."


class TraceFileError(HvuioError):
    """A trace file `hvuio trace` cannot read: not pcapng, truncated, or not written by hvuio."""

    default_hint = ("Give 'hvuio trace' a file written by 'hvuio up --trace' or 'hvuio demo --trace'; "
                    "tcpdump -r reads the frames of any pcapng.")
