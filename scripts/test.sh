#!/usr/bin/env bash
# The README's test command: set the machine up, then run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-machine.sh
exec python3 -m pytest "$@"
