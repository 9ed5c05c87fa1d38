#!/usr/bin/env bash
# Smoke test on a real Hyper-V / Azure VM: doctor, bind, up twice, unbind, on a secondary NIC.
#   sudo HVUIO_TEST_NIC=eth1 scripts/vm_smoke.sh
# Exits with pytest's status; 1 when every test was skipped (nothing was tested), saying why.
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
report="$(mktemp)"
trap 'rm -f "$report"' EXIT
status=0
python3 -m pytest -m real_vm -v -rs --junitxml="$report" tests/e2e/test_real_vm.py || status=$?
if [ "$status" -ne 0 ]; then
    exit "$status"
fi
ran="$(python3 - "$report" <<'PY'
import sys
import xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
print(sum(int(s.get("tests", 0)) - int(s.get("skipped", 0)) for s in suites))
PY
)"
if [ "$ran" -eq 0 ]; then
    echo "Error: every real-VM test was skipped: nothing was tested." >&2
    echo "Hint: run it on a Hyper-V / Azure VM as root with a secondary NIC; the skip reasons are listed above." >&2
    exit 1
fi
