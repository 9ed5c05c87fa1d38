#!/usr/bin/env bash
# The README's main-job command: set the machine up (scripts/setup-machine.sh), then run the
# emulator demo (`hvuio demo`; options pass through, e.g. --mtu 4000, --keep, --json).
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then
    echo "Error: scripts/demo.sh must run as root: the demo creates network namespaces and tap devices." >&2
    echo "Hint: sudo scripts/demo.sh $*" >&2
    exit 77
fi
cd "$(dirname "$0")/.."
scripts/setup-machine.sh
# PYTHONSAFEPATH (python -P): the demo and the `hvuio up` it starts import the hvuio installed
# in .venv/, not the clone's ./hvuio sources from the current directory.
export PYTHONSAFEPATH=1
exec .venv/bin/python -P -m hvuio demo "$@"
