#!/usr/bin/env bash
# Smoke test on a real Hyper-V / Azure VM: doctor, bind, up twice, unbind, on a secondary NIC.
#   sudo HVUIO_TEST_NIC=eth1 scripts/vm_smoke.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
    echo "Error: the VM smoke test binds a VMBus device and needs root." >&2
    echo "Hint: sudo HVUIO_TEST_NIC=eth1 scripts/vm_smoke.sh" >&2
    exit 77
fi
if [ -z "${HVUIO_TEST_NIC:-}" ]; then
    echo "Error: HVUIO_TEST_NIC is not set." >&2
    echo "Hint: name a secondary synthetic NIC the test may take from hv_netvsc, e.g. HVUIO_TEST_NIC=eth1." >&2
    exit 2
fi
scripts/setup-machine.sh
exec python3 -m pytest -m real_vm -v -rs tests/e2e/test_real_vm.py
