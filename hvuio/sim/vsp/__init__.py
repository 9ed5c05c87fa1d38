"""The emulated host's runtime: the network VSP served over the emulated kernel's shared memory.

What lives here: `SimHost` and `SimEnvironment` (`host.py`), the NICs' VFs (`vfs.py`), the
per-open worker of one NIC (`session.py`) and its mappings of rings, buffers and the monitor page (`memory.py`), the host
side of a VMBus ring in Python (`ring.py`), the host data path in C (`fastpath.py`, over
`hvuio.sim._simhost`), and the control socket of a running emulator (`control.py`).

What must not live here: protocol rules (`hvuio.sim.host`, sans-IO), kernel semantics
(`hvuio.sim.kernel`, reached through its hooks and host API), the network behind the host
(`hvuio.sim.net`), and any guest code. Import from the modules; nothing is re-exported here.
"""
