"""scripts/install.sh into a throwaway root: what lands where, with which mode, and that a
second run changes nothing (same tree, same bytes, same mtimes)."""

from __future__ import annotations

import base64
import hashlib
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.broker import free_port, wait_port
from tests.test_mosquitto_conf import NOT_AUTHORIZED, SUCCESS, Client

REPO = Path(__file__).resolve().parent.parent
SCRIPT = "scripts/install.sh"

Snapshot = dict[str, tuple[str, int, str, int]]

IGNORE = shutil.ignore_patterns(
    ".venv", ".git", "__pycache__", "*.egg-info", ".pytest_cache", ".mypy_cache",
    ".ruff_cache", "build", "dist",
)

MINIMAL_STATION = """\
site: test-site
state_dir: /var/lib/kitchen-edge
mqtt:
  url: mqtt://127.0.0.1:1883
printers:
  - id: hot-line
    connection: tcp://127.0.0.1:9100
stations:
  - id: grill
    printer: hot-line
routing:
  default_station: grill
"""


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A copy of the source tree, so a test may change a file without touching the repo."""
    src = tmp_path / "src"
    shutil.copytree(REPO, src, ignore=IGNORE)
    example = src / "config" / "station.example.yaml"
    if not example.exists():
        example.write_text(MINIMAL_STATION)
    return src


def install(checkout: Path, root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["bash", str(checkout / SCRIPT), "--root", str(root), "--from", str(checkout), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def snapshot(root: Path) -> Snapshot:
    """Every path under root: kind, permission bits, content hash or link target, mtime."""
    out: Snapshot = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            rel = str(path.relative_to(root))
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", 0, os.readlink(path), 0)
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode), "", 0)
            else:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                out[rel] = ("file", stat.S_IMODE(st.st_mode), digest, st.st_mtime_ns)
    return out


def mosquitto_hash_matches(line: str, password: str) -> bool:
    """Check a Mosquitto 2 `$7$` entry: PBKDF2-SHA512 over the password with the given salt."""
    _user, rest = line.split(":", 1)
    _, kind, iterations, salt, digest = rest.strip().split("$")
    assert kind == "7"
    got = hashlib.pbkdf2_hmac(
        "sha512", password.encode(), base64.b64decode(salt), int(iterations)
    )
    return got == base64.b64decode(digest)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_install_into_a_throwaway_root(checkout: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    install(checkout, root, "--no-venv")

    expected = {
        "etc/systemd/system/kitchen-edge.service": ("systemd/kitchen-edge.service", 0o644),
        "etc/udev/rules.d/60-kitchen-edge-printers.rules": (
            "systemd/60-kitchen-edge-printers.rules", 0o644,
        ),
        "etc/sysusers.d/kitchen-edge.conf": ("systemd/kitchen-edge.sysusers", 0o644),
        "etc/mosquitto/conf.d/kitchen-edge.conf": ("config/mosquitto.conf", 0o644),
        "etc/mosquitto/kitchen-edge.acl": ("config/mosquitto.acl", 0o640),
        "opt/kitchen-edge/docs/service.md": ("docs/service.md", 0o644),
        "opt/kitchen-edge/docs/mosquitto.md": ("docs/mosquitto.md", 0o644),
    }
    for dest, (src, want_mode) in expected.items():
        path = root / dest
        assert path.read_bytes() == (checkout / src).read_bytes(), dest
        assert mode(path) == want_mode, f"{dest}: {oct(mode(path))}"

    # The installed station.yaml is the example with the daemon's broker credentials on,
    # and it is a valid config once the password file the install made is in place.
    station = root / "etc/kitchen-edge/station.yaml"
    assert mode(station) == 0o640
    example = (checkout / "config/station.example.yaml").read_text()
    assert station.read_text() == example.replace(
        "  # username: kitchen-edge\n", "  username: kitchen-edge\n").replace(
        "  # password_file: /etc/kitchen-edge/mqtt.pass\n",
        "  password_file: /etc/kitchen-edge/mqtt.pass\n")
    assert "\n  username: kitchen-edge\n" in station.read_text()

    wants = root / "etc/systemd/system/multi-user.target.wants/kitchen-edge.service"
    assert os.readlink(wants) == "/etc/systemd/system/kitchen-edge.service"

    if shutil.which("systemd-sysusers"):
        passwd = (root / "etc/passwd").read_text().splitlines()
        user = next(line for line in passwd if line.startswith("kitchen-edge:"))
        assert user.endswith(":/var/lib/kitchen-edge:/usr/sbin/nologin")
        lp = next(line for line in (root / "etc/group").read_text().splitlines()
                  if line.startswith("lp:"))
        assert "kitchen-edge" in lp.split(":")[3].split(",")

    # The daemon's MQTT password: secret file, and hashed into Mosquitto's password file.
    secret = root / "etc/kitchen-edge/mqtt.pass"
    assert mode(secret) == 0o640
    password = secret.read_text().strip()
    assert len(password) >= 24
    pwfile = root / "etc/mosquitto/kitchen-edge.passwd"
    assert mode(pwfile) == 0o640
    if shutil.which("mosquitto_passwd"):
        (entry,) = pwfile.read_text().splitlines()
        assert entry.startswith("kitchen-edge:")
        assert mosquitto_hash_matches(entry, password)
        assert not mosquitto_hash_matches(entry, password + "x")


def test_second_run_changes_nothing(checkout: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    install(checkout, root, "--no-venv")
    before = snapshot(root)
    again = install(checkout, root, "--no-venv")
    assert snapshot(root) == before
    assert "nothing to change" in again.stdout


def test_operator_files_are_kept_and_updates_touch_only_what_changed(
    checkout: Path, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    install(checkout, root, "--no-venv")
    station = root / "etc/kitchen-edge/station.yaml"
    station.write_text("site: edited-by-the-operator\n")
    secret = (root / "etc/kitchen-edge/mqtt.pass").read_text()
    pw_entry = (root / "etc/mosquitto/kitchen-edge.passwd").read_text()

    unit = checkout / "systemd/kitchen-edge.service"
    unit.write_text(unit.read_text().replace("RestartSec=2s", "RestartSec=3s"))
    before = snapshot(root)
    result = install(checkout, root, "--no-venv")
    after = snapshot(root)

    assert station.read_text() == "site: edited-by-the-operator\n"
    assert (root / "etc/kitchen-edge/mqtt.pass").read_text() == secret
    assert (root / "etc/mosquitto/kitchen-edge.passwd").read_text() == pw_entry
    differing = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    assert differing == {"etc/systemd/system/kitchen-edge.service"}
    assert "changed /etc/systemd/system/kitchen-edge.service" in result.stdout


def test_udev_rule_lines_are_well_formed() -> None:
    """No udevadm here (no udev in CI containers): check each rule's key/operator/value shape."""
    token = re.compile(r'^(?:[A-Z_]+(?:\{[A-Za-z_]+\})?)(==|!=|=|\+=|:=)"[^"]*"$')
    text = (REPO / "systemd/60-kitchen-edge-printers.rules").read_text()
    labels = set(re.findall(r'LABEL="([^"]+)"', text))
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = [p.strip() for p in line.split(", ")]
        for part in parts:
            assert token.match(part), f"bad token {part!r} in {line!r}"
        for target in re.findall(r'GOTO="([^"]+)"', line):
            assert target in labels
    assert 'GROUP="lp"' in text and 'MODE="0660"' in text
    for vendor in ("04b8", "0519", "1d90", "2730", "1504"):
        assert f'ATTR{{idVendor}}=="{vendor}"' in text


def _pip_can_fetch_build_backend(tmp_path: Path) -> bool:
    probe = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
         "--dest", str(tmp_path / "probe"), "setuptools>=68", "wheel"],
        capture_output=True,
        timeout=120,
    )
    return probe.returncode == 0


@pytest.mark.slow
def test_venv_is_created_and_not_rebuilt(checkout: Path, tmp_path: Path) -> None:
    """The venv step, without the runtime dependencies (they would need the network)."""
    if not _pip_can_fetch_build_backend(tmp_path):
        pytest.skip("pip cannot fetch setuptools/wheel to build kitchen-edge (no index)")
    root = tmp_path / "root"
    install(checkout, root, "--pip-args", "--no-deps")
    venv = root / "opt/kitchen-edge/venv"
    assert os.access(venv / "bin/kitchen-edge", os.X_OK)
    probe = subprocess.run(
        [str(venv / "bin/python"), "-c", "import edge, edge.service; print(edge.__file__)"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    assert probe.returncode == 0, probe.stderr
    assert str(venv) in probe.stdout  # installed, not picked up from the checkout
    assert not (checkout / "build").exists()
    assert not list(checkout.glob("*.egg-info"))

    before = snapshot(root)
    again = install(checkout, root, "--pip-args", "--no-deps")
    assert snapshot(root) == before
    assert "nothing to change" in again.stdout


DEBIAN_MAIN_CONF = """\
# Debian's /etc/mosquitto/mosquitto.conf, paths moved into the throwaway root
pid_file {root}/run/mosquitto.pid
persistence true
persistence_location {root}/var/lib/mosquitto/
log_dest file {root}/var/log/mosquitto.log
user {user}
include_dir {root}/etc/mosquitto/conf.d
"""


@pytest.mark.skipif(shutil.which("mosquitto_passwd") is None, reason="mosquitto not installed")
def test_installed_dropin_runs_under_debians_main_conf(checkout: Path, tmp_path: Path) -> None:
    """The drop-in loads next to Debian's main file (no clashing option), and the generated
    daemon password logs in while anonymous LAN clients are refused."""
    root = tmp_path / "root"
    install(checkout, root, "--no-venv")
    for sub in ("run", "var/lib/mosquitto", "var/log"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    main = root / "etc/mosquitto/mosquitto.conf"
    main.write_text(
        DEBIAN_MAIN_CONF.format(root=root, user=pwd.getpwuid(os.geteuid()).pw_name)
    )
    dropin = root / "etc/mosquitto/conf.d/kitchen-edge.conf"
    lan, loopback = free_port(), free_port()
    text = dropin.read_text()
    text = re.sub(r"^listener 1883$", f"listener {lan} 127.0.0.1", text, flags=re.M)
    text = re.sub(r"^listener 1884 ", f"listener {loopback} ", text, flags=re.M)
    text = re.sub(r"^(password_file|acl_file) /", rf"\1 {root}/", text, flags=re.M)
    dropin.write_text(text)

    proc = subprocess.Popen(
        [shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(main)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    clients: list[Client] = []
    try:
        try:
            wait_port(lan)
        except TimeoutError:
            proc.kill()
            raise AssertionError(proc.communicate()[1].decode()) from None
        password = (root / "etc/kitchen-edge/mqtt.pass").read_text().strip()
        daemon = Client("kitchen-edge-test")
        clients.append(daemon)
        assert daemon.connect(lan, "kitchen-edge", password)[0] == SUCCESS
        anon = Client("anon")
        clients.append(anon)
        assert anon.connect(lan)[0] == NOT_AUTHORIZED
    finally:
        for c in clients:
            c.close()
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
