#!/usr/bin/env bash
# Set up a development/CI machine: system packages when missing, then a venv with the
# package and its test extras. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v mosquitto_pub >/dev/null 2>&1 || need+=(mosquitto-clients)
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf ] || need+=(fonts-dejavu-core)
ldconfig -p 2>/dev/null | grep -q libfribidi || need+=(libfribidi0)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
# The screens' browser tests drive Debian's own Chromium through its chromedriver: nothing is
# downloaded at test time.
[ -x /usr/bin/chromium ] || need+=(chromium)
[ -x /usr/bin/chromedriver ] || need+=(chromium-driver)
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
mkdir -p .venv/log
if ! .venv/bin/python -m pip install -q -e '.[test]' >.venv/log/pip.log 2>&1; then
  cat .venv/log/pip.log
  echo "setup: pip install failed" >&2
  exit 1
fi
.venv/bin/python -c "import edge, aiomqtt, escpos" # fail here, not in the first test
echo "setup: ok ($(.venv/bin/python --version))"
