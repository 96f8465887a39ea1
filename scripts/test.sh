#!/usr/bin/env bash
# The README's test command: set up what is missing, then run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Two workers (the CI machine has two cores): most tests wait on real processes and sockets.
# Files that share the multicast DNS port stay in one worker (tests/conftest.py).
exec .venv/bin/pytest -q -p no:cacheprovider -n "${TEST_WORKERS:-2}" --dist loadgroup "$@"
