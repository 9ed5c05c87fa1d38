"""The emulator (`hvuio sim`): the guest kernel and the Hyper-V host a guest runs against off Hyper-V.

Three subsystems, each a package with its own rules: `kernel/` (the emulated guest kernel: VMBus
bus, driver binding, uio_hv_generic, the sysfs/dev tree), `host/` (the host's NVSP/RNDIS protocol
machines, sans-IO), `vsp/` (the host's runtime: SimHost and its per-NIC workers over the kernel's
shared memory, rings, the C data path, the control socket). Beside them: `net.py` (the network
behind the host), `pcap.py` (that network as pcap files), `daemon.py` (`hvuio sim start` / `stop`)
and `exec.py` (`hvuio sim exec`, with its preload library in `_preload/`). The emulator imports no
guest code.
"""
