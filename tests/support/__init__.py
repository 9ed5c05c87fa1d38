"""Helpers the test modules share; no tests and no fixtures live here.

pytest puts tests/ on sys.path (``pythonpath`` in pyproject.toml), so a test module imports these
as ``from support.fakehost import FakeHost``. Fixtures live in the conftest.py files
(tests/conftest.py for every folder, a folder's own conftest.py for that folder), and no test
module imports another one (tests/test_layering.py checks both).

What lives here:
  * paths, golden    the repository root; the golden wire layouts (tests/golden) and accessors.
  * nvsp_host, rndis_host
                     host NVSP / RNDIS messages packed from the golden numbers for the guest's
                     sans-IO machines; `rndis_host.Host`, a scripted host answering by OID.
  * strategies       hypothesis strategies for the bytes a hostile host sends.
  * fakehost         a fake netvsc host around the C data path (rings, buffers, tap, irq);
                     reading a GPA-direct (type 9) packet by page number.
  * guestpool        a fake guest-memory pool (shuffled page numbers) and a platform that
                     hands it out, for the GPA-direct tests.
  * gpa_host         fakehost's FakeHost with such a pool as the C data path's GPA slots,
                     reading type-9 sends by page number.
  * offload_frames, offload_tx
                     reference frames for the C data path's offloads; what the guest sent.
  * sanitizers       the ASan/UBSan build of the C core and a child Python under it.
  * simhost          guest messages and an in-memory environment for the emulated host.
  * sim_offload      reference frames and per-packet info for the emulated host's offloads.
  * ring_guest       `RingGuest`, a minimal guest engine over the emulator's shared memory.
  * namespaces       network namespaces for tests: skip reasons, `NetnsFactory`, a frame bridge.
  * engine_stack     the guest engine and the emulator between two namespaces (`running`).
  * demo_stack       what must be gone after a hvuio.demo.DemoStack was torn down.
  * cli              running `hvuio` in-process or as a child; the user-error contract.
  * waiting          bounded waits that fail the test instead of hanging it.
"""
