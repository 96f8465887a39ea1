#!/usr/bin/env bash
# A production-like venv for the benches: `pip install .` and nothing else, as
# scripts/install.sh makes /opt/kitchen-edge/venv (no test extras: no rich, pygments, click,
# trio or PySocks, which the daemon's libraries import when present and which cost RSS).
#
#   scripts/bench/prod-venv.sh [DIR]      # default: .venv-prod in the checkout
#   .venv/bin/python scripts/bench/resources.py --daemon-python .venv-prod/bin/python ...
#
# The benches themselves stay on the dev venv. The daemon they start runs this checkout's
# edge/ (its cwd is the checkout, first on sys.path under `-m`), so only a change to the
# dependencies in pyproject.toml needs this script run again. Safe to run again: it
# recreates the venv.
set -euo pipefail
cd "$(dirname "$0")/../.."
DEST="${1:-.venv-prod}"
PY=${PYTHON:-python3}

"$PY" -m venv --clear "$DEST"
# Build from a clean copy, as install.sh does: the checkout gets no build/ or *.egg-info.
BUILD="$(mktemp -d)"
trap 'rm -rf "$BUILD"' EXIT
tar --exclude=.venv --exclude=.venv-prod --exclude=.git --exclude=build --exclude=dist \
    --exclude='*.egg-info' --exclude=__pycache__ --exclude='.*_cache' -cf - . \
    | tar -xf - -C "$BUILD"
"$DEST/bin/python" -m pip install --quiet --disable-pip-version-check "$BUILD"
"$DEST/bin/python" -c "import edge, aiomqtt, escpos"
echo "prod-venv: ok ($DEST: $("$DEST/bin/python" -m pip list --format=freeze \
    --disable-pip-version-check | wc -l) distributions)"
