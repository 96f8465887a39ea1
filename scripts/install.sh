#!/usr/bin/env bash
# Install kitchen-edge on a Debian/Ubuntu kitchen box: apt packages, a venv under
# /opt/kitchen-edge, the kitchen-edge service user (group lp), the systemd unit, the udev rule
# for receipt printers, the Mosquitto drop-in with its ACL and password file, and
# /etc/kitchen-edge/station.yaml (only if there is none: an operator's file is never touched).
#
# Running it again changes nothing that is already right; see docs/service.md.
#
#   sudo scripts/install.sh                 # the real thing
#   scripts/install.sh --root /tmp/r        # everything under /tmp/r: no apt, no useradd on the
#                                           # host, no systemctl/udevadm (CI uses this)
set -euo pipefail

usage() {
    cat <<'EOF'
usage: install.sh [--root DIR] [--no-apt] [--no-venv] [--from DIR] [--python PYTHON]
                  [--pip-args "ARGS"]
  --root DIR       install into DIR as if it were /; implies --no-apt, touches nothing outside DIR
  --no-apt         do not install Debian packages
  --no-venv        do not create or update /opt/kitchen-edge/venv
  --from DIR       the kitchen-edge source checkout (default: the one holding this script)
  --python PYTHON  interpreter for the venv (default: python3)
  --pip-args ARGS  extra arguments for pip install (e.g. "--no-index --find-links /media/wheels")
EOF
}

ROOT=""
APT=1
VENV=1
FROM=""
PYTHON=python3
PIP_ARGS=""

while [ $# -gt 0 ]; do
    case "$1" in
        --root) ROOT="${2:?--root needs a directory}"; shift 2 ;;
        --root=*) ROOT="${1#*=}"; shift ;;
        --no-apt) APT=0; shift ;;
        --no-venv) VENV=0; shift ;;
        --from) FROM="${2:?--from needs a directory}"; shift 2 ;;
        --from=*) FROM="${1#*=}"; shift ;;
        --python) PYTHON="${2:?--python needs an interpreter}"; shift 2 ;;
        --pip-args) PIP_ARGS="${2-}"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "install.sh: unknown option: $1" >&2; usage >&2; exit 2 ;;
    esac
done

if [ -z "$FROM" ]; then
    FROM="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
fi
FROM="$(cd "$FROM" && pwd)"

REAL=1
if [ -n "$ROOT" ]; then
    REAL=0
    APT=0
    mkdir -p "$ROOT"
    ROOT="$(cd "$ROOT" && pwd)"
    [ "$ROOT" != "/" ] || { echo "install.sh: use no --root to install into /" >&2; exit 2; }
elif [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: run as root (or use --root DIR for a throwaway root)" >&2
    exit 1
fi

SERVICE_USER=kitchen-edge
OPT="$ROOT/opt/kitchen-edge"
VENV_DIR="$OPT/venv"
ETC="$ROOT/etc/kitchen-edge"
MOSQ="$ROOT/etc/mosquitto"

CHANGED=()
MOSQUITTO_CHANGED=0
UDEV_CHANGED=0

say() { printf 'install: %s\n' "$*"; }
warn() { printf 'install: WARNING: %s\n' "$*" >&2; }
changed() { CHANGED+=("$1"); say "changed $1"; }

# Ownership is only set on a real install: in a throwaway root the service user exists in
# DIR/etc/passwd, not on the host, so the intent is printed instead.
own() {  # own OWNER:GROUP PATH
    local want="$1" path="$2"
    if [ "$REAL" -eq 0 ]; then
        return 0
    fi
    if [ "$(stat -c '%U:%G' "$path")" != "$want" ]; then
        chown "$want" "$path"
        changed "${path#"$ROOT"} owner $want"
    fi
}

ensure_dir() {  # ensure_dir PATH MODE [OWNER:GROUP]
    local path="$1" mode="$2"
    if [ ! -d "$path" ]; then
        mkdir -p "$path"
        changed "${path#"$ROOT"}/"
    fi
    if [ "$(stat -c '%a' "$path")" != "${mode#0}" ]; then
        chmod "$mode" "$path"
    fi
    if [ $# -ge 3 ]; then own "$3" "$path"; fi
}

# Copy only when the content differs, so a second run leaves files (and mtimes) alone.
put() {  # put SRC DEST MODE [OWNER:GROUP] ; returns 0 when DEST changed
    local src="$1" dest="$2" mode="$3" rc=1
    mkdir -p "$(dirname "$dest")"
    if [ ! -f "$dest" ] || ! cmp -s "$src" "$dest"; then
        install -m "$mode" "$src" "$dest"
        changed "${dest#"$ROOT"}"
        rc=0
    elif [ "$(stat -c '%a' "$dest")" != "${mode#0}" ]; then
        chmod "$mode" "$dest"
        changed "${dest#"$ROOT"} mode $mode"
        rc=0
    fi
    if [ $# -ge 4 ]; then own "$4" "$dest"; fi
    return $rc
}

group_exists() {
    if [ "$REAL" -eq 1 ]; then
        getent group "$1" >/dev/null
    else
        grep -q "^$1:" "$ROOT/etc/group" 2>/dev/null
    fi
}

# --- 1. Debian packages ------------------------------------------------------------------------
if [ "$APT" -eq 1 ]; then
    say "apt: installing python3, python3-venv, mosquitto, mosquitto-clients, libusb, fonts"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends \
        python3 python3-venv python3-pip mosquitto mosquitto-clients libusb-1.0-0 ca-certificates \
        fonts-dejavu-core libfribidi0
fi

# --- 2. The service user -----------------------------------------------------------------------
put "$FROM/systemd/kitchen-edge.sysusers" "$ROOT/etc/sysusers.d/kitchen-edge.conf" 0644 || true
if command -v systemd-sysusers >/dev/null 2>&1; then
    if [ "$REAL" -eq 1 ]; then
        systemd-sysusers /etc/sysusers.d/kitchen-edge.conf
    else
        mkdir -p "$ROOT/etc"
        systemd-sysusers --root="$ROOT" "$ROOT/etc/sysusers.d/kitchen-edge.conf"
    fi
elif [ "$REAL" -eq 1 ]; then
    if ! getent passwd "$SERVICE_USER" >/dev/null; then
        useradd --system --user-group --home-dir /var/lib/kitchen-edge --no-create-home \
            --shell /usr/sbin/nologin --comment "kitchen-edge kitchen ticket daemon" "$SERVICE_USER"
        changed "user $SERVICE_USER"
    fi
    if ! id -nG "$SERVICE_USER" | tr ' ' '\n' | grep -qx lp; then
        usermod -a -G lp "$SERVICE_USER"
        changed "user $SERVICE_USER in group lp"
    fi
else
    warn "systemd-sysusers not found: $ROOT/etc/passwd not written (the sysusers.d file is in place)"
fi

# --- 3. The program: a venv under /opt ---------------------------------------------------------
ensure_dir "$OPT" 0755 root:root
ensure_dir "$OPT/docs" 0755 root:root
for doc in "$FROM"/docs/*.md; do
    [ -e "$doc" ] || continue
    put "$doc" "$OPT/docs/$(basename "$doc")" 0644 root:root || true
done

source_fingerprint() {
    # Everything pip would install from: if none of it changed, pip is not run again.
    (cd "$FROM" && find pyproject.toml edge -type f ! -path '*/__pycache__/*' ! -name '*.pyc' \
        -print0 | LC_ALL=C sort -z | xargs -0 sha256sum) | sha256sum | cut -d' ' -f1
}

if [ "$VENV" -eq 1 ]; then
    if [ ! -x "$VENV_DIR/bin/python" ] || ! "$VENV_DIR/bin/python" -c 'import sys' 2>/dev/null; then
        "$PYTHON" -m venv --clear "$VENV_DIR"
        changed "${VENV_DIR#"$ROOT"}"
    fi
    STAMP="$VENV_DIR/.kitchen-edge-source"
    WANT="$(source_fingerprint) $("$VENV_DIR/bin/python" -c 'import sys; print(sys.version.split()[0])')"
    if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ] \
            || [ ! -x "$VENV_DIR/bin/kitchen-edge" ]; then
        # Build from a clean copy so the checkout gets no build/ or *.egg-info litter.
        BUILD="$(mktemp -d)"
        trap 'rm -rf "$BUILD"' EXIT
        (cd "$FROM" && tar --exclude=.venv --exclude=.git --exclude=build --exclude=dist \
            --exclude='*.egg-info' --exclude=__pycache__ --exclude='.*_cache' -cf - .) \
            | tar -xf - -C "$BUILD"
        # shellcheck disable=SC2086  # PIP_ARGS is a list of words on purpose
        "$VENV_DIR/bin/python" -m pip install --quiet --disable-pip-version-check \
            $PIP_ARGS "$BUILD"
        printf '%s\n' "$WANT" > "$STAMP"
        changed "${VENV_DIR#"$ROOT"} kitchen-edge from $FROM"
    fi
fi

# --- 4. Configuration --------------------------------------------------------------------------
ensure_dir "$ETC" 0755 root:root
if [ ! -e "$ETC/station.yaml" ]; then
    if [ -f "$FROM/config/station.example.yaml" ]; then
        install -m 0640 "$FROM/config/station.example.yaml" "$ETC/station.yaml"
        # The shipped Mosquitto config wants a password on 1883: switch the daemon's
        # credentials on in the installed copy (the example keeps them commented so that it
        # validates on a development machine without /etc/kitchen-edge/mqtt.pass).
        sed -i -e 's|^  # username: kitchen-edge$|  username: kitchen-edge|' \
               -e 's|^  # password_file: /etc/kitchen-edge/mqtt.pass$|  password_file: /etc/kitchen-edge/mqtt.pass|' \
               "$ETC/station.yaml"
        own "root:$SERVICE_USER" "$ETC/station.yaml"
        changed "/etc/kitchen-edge/station.yaml (from config/station.example.yaml: edit it)"
    else
        warn "$FROM/config/station.example.yaml missing: write /etc/kitchen-edge/station.yaml by hand"
    fi
fi

# --- 5. Mosquitto ------------------------------------------------------------------------------
ensure_dir "$MOSQ/conf.d" 0755
if put "$FROM/config/mosquitto.conf" "$MOSQ/conf.d/kitchen-edge.conf" 0644; then
    MOSQUITTO_CHANGED=1
fi
MOSQ_GROUP=root
if group_exists mosquitto; then MOSQ_GROUP=mosquitto; fi
# Mosquitto reads these after dropping to its own user: root-owned, group mosquitto.
if put "$FROM/config/mosquitto.acl" "$MOSQ/kitchen-edge.acl" 0640 "root:$MOSQ_GROUP"; then
    MOSQUITTO_CHANGED=1
fi
PWFILE="$MOSQ/kitchen-edge.passwd"
if [ ! -e "$PWFILE" ]; then
    install -m 0640 /dev/null "$PWFILE"
    changed "/etc/mosquitto/kitchen-edge.passwd"
fi
own "root:$MOSQ_GROUP" "$PWFILE"

# The daemon's own MQTT password: generated once, kept in /etc/kitchen-edge/mqtt.pass (which
# station.yaml's mqtt.password_file names) and hashed into Mosquitto's password file.
MQTT_PASS="$ETC/mqtt.pass"
if [ ! -e "$MQTT_PASS" ]; then
    (umask 077 && head -c 24 /dev/urandom | base64 | tr -d '\n/+=' > "$MQTT_PASS")
    chmod 0640 "$MQTT_PASS"
    changed "/etc/kitchen-edge/mqtt.pass"
fi
own "root:$SERVICE_USER" "$MQTT_PASS"
if ! grep -q "^$SERVICE_USER:" "$PWFILE"; then
    if command -v mosquitto_passwd >/dev/null 2>&1; then
        # -U hashes a plain user:password file in place, so the password never shows in argv.
        HASHTMP="$(mktemp)"
        printf '%s:%s\n' "$SERVICE_USER" "$(cat "$MQTT_PASS")" > "$HASHTMP"
        mosquitto_passwd -U "$HASHTMP"
        cat "$HASHTMP" >> "$PWFILE"
        rm -f "$HASHTMP"
        MOSQUITTO_CHANGED=1
        changed "/etc/mosquitto/kitchen-edge.passwd user $SERVICE_USER"
    else
        warn "mosquitto_passwd not found: add user $SERVICE_USER to $PWFILE by hand"
    fi
fi

MAIN_CONF="$MOSQ/mosquitto.conf"
if [ -f "$MAIN_CONF" ]; then
    if ! grep -Eq '^[[:space:]]*include_dir[[:space:]]+/etc/mosquitto/conf\.d/?[[:space:]]*$' \
            "$MAIN_CONF"; then
        warn "${MAIN_CONF#"$ROOT"} has no 'include_dir /etc/mosquitto/conf.d':" \
             "kitchen-edge.conf will not be loaded (see docs/mosquitto.md)"
    fi
    if grep -Eq '^[[:space:]]*(listener|port)[[:space:]]' "$MAIN_CONF"; then
        warn "${MAIN_CONF#"$ROOT"} defines its own listener: it may clash with port 1883/1884"
    fi
fi

# --- 6. systemd unit and udev rule ---------------------------------------------------------------
put "$FROM/systemd/kitchen-edge.service" "$ROOT/etc/systemd/system/kitchen-edge.service" 0644 \
    || true
if put "$FROM/systemd/60-kitchen-edge-printers.rules" \
        "$ROOT/etc/udev/rules.d/60-kitchen-edge-printers.rules" 0644; then
    UDEV_CHANGED=1
fi

if [ "$REAL" -eq 1 ] && [ ! -d /run/systemd/system ]; then
    warn "systemd is not running here: not reloading, enabling or restarting anything"
elif [ "$REAL" -eq 1 ]; then
    systemctl daemon-reload
    if ! systemctl is-enabled --quiet kitchen-edge.service 2>/dev/null; then
        systemctl enable kitchen-edge.service
        changed "kitchen-edge.service enabled"
    fi
    if [ "$UDEV_CHANGED" -eq 1 ] && command -v udevadm >/dev/null 2>&1; then
        udevadm control --reload-rules
        udevadm trigger --subsystem-match=usb --action=change
    fi
    if [ "$MOSQUITTO_CHANGED" -eq 1 ]; then
        # Listeners are not re-read on SIGHUP: a restart it is (sessions are on disk).
        systemctl restart mosquitto.service
    fi
    if [ "${#CHANGED[@]}" -gt 0 ]; then
        systemctl try-restart kitchen-edge.service
    fi
else
    # What `systemctl enable` would do for WantedBy=multi-user.target.
    WANTS="$ROOT/etc/systemd/system/multi-user.target.wants"
    mkdir -p "$WANTS"
    if [ "$(readlink "$WANTS/kitchen-edge.service" 2>/dev/null)" \
            != /etc/systemd/system/kitchen-edge.service ]; then
        ln -sfn /etc/systemd/system/kitchen-edge.service "$WANTS/kitchen-edge.service"
        changed "/etc/systemd/system/multi-user.target.wants/kitchen-edge.service"
    fi
    say "throwaway root: skipped chown, systemctl daemon-reload/enable, udevadm, mosquitto restart"
fi

if [ "${#CHANGED[@]}" -eq 0 ]; then
    say "nothing to change: kitchen-edge is installed"
else
    say "${#CHANGED[@]} change(s)"
    if [ "$REAL" -eq 1 ]; then
        cat <<EOF
install: next steps
  1. edit /etc/kitchen-edge/station.yaml (site, printers, stations);
     /opt/kitchen-edge/venv/bin/kitchen-edge config check /etc/kitchen-edge/station.yaml
  2. give the POS/QR bridges and the operator their MQTT passwords:
     mosquitto_passwd /etc/mosquitto/kitchen-edge.passwd publisher
     mosquitto_passwd /etc/mosquitto/kitchen-edge.passwd operator
     mosquitto_passwd /etc/mosquitto/kitchen-edge.passwd openapp
     systemctl reload mosquitto
  3. systemctl start kitchen-edge; journalctl -u kitchen-edge -f
EOF
    fi
fi
