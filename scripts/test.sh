#!/usr/bin/env bash
# The README's test command: set the machine up (scripts/setup-machine.sh), then run the whole
# test suite with the project venv's Python; arguments pass through to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-machine.sh
# PYTHONSAFEPATH (python -P): neither pytest nor the Pythons the tests start put the current
# directory (the clone) first on sys.path, so `import hvuio` is the package installed in .venv/,
# with its compiled C modules, not the clone's ./hvuio sources.
export PYTHONSAFEPATH=1
exec .venv/bin/python -P -m pytest "$@"
