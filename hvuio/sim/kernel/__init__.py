"""The emulated guest kernel: VMBus bus and driver model, uio_hv_generic and hv_netvsc semantics.

What lives here: the sysfs/dev tree a guest reads and writes (`tree.py`), the kernel-version
profiles (`profiles.py`), the bus with its driver binding, the kernel thread and the host API
(`bus.py`, `SimKernel`), uio_hv_generic's probe/remove, `/dev/uioN` opens, irqcontrol and the
device interrupt (`uio.py`), and the names, sockets and shared-memory accessors of the sim/real
seam (`shm.py`).

What must not live here: the host's protocols (`hvuio.sim.host`) or its runtime (`hvuio.sim.vsp`);
the kernel knows the host only through the hooks SimKernel calls. No guest code either: the guest's
half of the seam is `hvuio.device.platform`. Import from the modules; nothing is re-exported here.
"""
