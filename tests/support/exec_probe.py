"""What an unchanged uio_hv_generic driver sees under `hvuio sim exec`, printed as one JSON object.

Run inside `sim exec` as `python -P exec_probe.py SYSROOT GUID`: it looks only where a driver on a
real VM looks (/sys/bus/vmbus, /sys/class/uio, /dev/uioN) and compares what it maps with the
tree's backing files, read through SYSROOT (the tests assert on the report; nothing here
asserts). Not imported by tests: a script run in the namespace.
"""

from __future__ import annotations

import json
import mmap
import os
import socket
import stat
import struct
import subprocess
import sys
import tempfile

PAGE = mmap.PAGESIZE


def _mmap_errno(fd: int, length: int, offset: int) -> int:
    try:
        mmap.mmap(fd, length, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=offset).close()
    except OSError as err:
        return err.errno or -1
    return 0


def probe(sysroot: str, guid: str) -> dict[str, object]:
    dev_dir = f"/sys/bus/vmbus/devices/{guid}"
    [uio] = os.listdir(f"{dev_dir}/uio")
    relid = open(f"{dev_dir}/id").read().strip()
    out: dict[str, object] = {
        "uio": uio,
        "class_id": open(f"{dev_dir}/class_id").read().strip(),
        "class_uio_resolves": os.path.realpath(f"/sys/class/uio/{uio}") == os.path.realpath(f"{dev_dir}/uio/{uio}"),
        "driver": os.path.basename(os.readlink(f"{dev_dir}/driver")),
        "ring_resolves": os.path.realpath(f"{dev_dir}/channels/{relid}/ring") == f"/run/hvuio-sim/{uio}/map0",
    }
    out["sys_bus"] = sorted(os.listdir("/sys/bus"))        # the host's entries beside the emulated
    out["sys_class"] = sorted(os.listdir("/sys/class"))
    out["class_net_live"] = sorted(os.listdir("/sys/class/net")) == sorted(n for _, n in socket.if_nameindex())
    st = os.stat(f"/dev/{uio}")
    out["dev_is_chardev"] = stat.S_ISCHR(st.st_mode)
    out["dev_rdev"] = f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
    out["dev_file"] = open(f"/sys/class/uio/{uio}/dev").read().strip()
    out["dev_access"] = os.access(f"/dev/{uio}", os.R_OK | os.W_OK)
    out["missing_dev_errno"] = _stat_errno("/dev/uio77")

    fd = os.open(f"/dev/{uio}", os.O_RDWR | os.O_CLOEXEC)
    same: dict[str, bool] = {}
    sizes: dict[str, int] = {}
    for k in range(5):
        size = int(open(f"/sys/class/uio/{uio}/maps/map{k}/size").read(), 0)
        sizes[str(k)] = size
        m = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=k * PAGE)
        token = f"probe map{k}".encode()
        m[size - len(token):size] = token            # written through the mapping ...
        with open(f"{sysroot}/run/hvuio-sim/{uio}/map{k}", "rb") as f:
            backing = os.pread(f.fileno(), size, 0)  # ... is what the tree's backing file holds
        same[str(k)] = backing == m[:size]
        m.close()
    out["maps_match_backing"] = same
    out["bad_index_errno"] = _mmap_errno(fd, PAGE, 5 * PAGE)
    out["too_long_errno"] = _mmap_errno(fd, sizes["1"] + 2 * PAGE, PAGE)
    dup = os.dup(fd)
    out["dup_maps"] = _mmap_errno(dup, sizes["1"], PAGE) == 0
    os.close(dup)
    os.set_inheritable(dup := os.dup(fd), True)   # a program this one executes maps an inherited fd
    child = subprocess.run([sys.executable, "-P", "-c", _CHILD, str(dup), str(sizes["1"])], pass_fds=[dup],
                           capture_output=True, text=True, check=False)
    out["inherited_maps"] = child.returncode == 0 and child.stdout.strip() == "mapped"
    os.close(dup)
    out["irqcontrol_write"] = os.write(fd, struct.pack("=i", 1))
    second = os.open(f"/dev/{uio}", os.O_RDWR | os.O_NONBLOCK)
    try:
        os.read(second, 4)
        out["nonblocking_read"] = "data"
    except BlockingIOError:
        out["nonblocking_read"] = "EAGAIN"
    os.close(second)
    with tempfile.TemporaryFile() as f:   # a plain file maps as ever
        f.write(b"x" * PAGE)
        f.flush()
        with mmap.mmap(f.fileno(), PAGE) as m:
            out["plain_file_maps"] = m[:1] == b"x"
    os.close(fd)
    return out


_CHILD = ("import mmap, sys\n"
          "m = mmap.mmap(int(sys.argv[1]), int(sys.argv[2]), offset=mmap.PAGESIZE)\n"
          "print('mapped')\n")


def _stat_errno(path: str) -> int:
    try:
        os.stat(path)
    except OSError as err:
        return err.errno or -1
    return 0


if __name__ == "__main__":
    print(json.dumps(probe(sys.argv[1], sys.argv[2]), sort_keys=True))
