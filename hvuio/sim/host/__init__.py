"""The emulated Hyper-V host's network VSP protocols, sans-IO: bytes in, packets and events out.

What lives here: the host's own wire codecs and packet records (`wire.py`), what the host offers
(`profile.py`), NVSP (`nvsp.py`, `HostNvsp`) with its two data paths, the guest's sends out of the
send buffer (`send.py`) and the host's messages through the receive buffer (`receive.py`), and its
queues (`queues.py`: subchannel grants, the send indirection table, a frame's queue), the RNDIS
device (`rndis.py`, `HostRndis`), the events and rejections both emit (`events.py`), and the
NDIS task offloads on frames (`offload.py`).

What must not live here: I/O of any kind (fds, sockets, mmap, threads, clocks: time comes in as an
argument), the emulated kernel (`hvuio.sim.kernel`), the runtime that feeds these machines from
the rings (`hvuio.sim.vsp`), and any guest code (`hvuio.wire`, `hvuio.proto`): the host is written
from docs/VMBUS.md on its own so one misreading cannot hide on both sides. Import from the modules;
nothing is re-exported here.
"""
