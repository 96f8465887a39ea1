#!/usr/bin/env bash
# The README's test command: set up what is missing, then run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/pytest -q -p no:cacheprovider "$@"
