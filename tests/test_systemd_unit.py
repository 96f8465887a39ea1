"""systemd/kitchen-edge.service passes `systemd-analyze verify` without a single complaint.

verify needs no running systemd, but it does check that ExecStart's binary exists and that
every unit it depends on can be loaded. The test therefore builds a throwaway root holding the
host's own unit files, /bin/kill, a stand-in for the venv's `kitchen-edge` and our unit, and runs
`systemd-analyze verify --root=...` on it. verify exits 0 even for unknown keys (it only prints
a warning), so any output at all fails the test.
"""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "systemd" / "kitchen-edge.service"
EXEC = "/opt/kitchen-edge/venv/bin/kitchen-edge"

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
HOST_UNITS = next(
    (p for p in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")) if p.is_dir()),
    None,
)


def _fake_root(root: Path, unit_text: str) -> None:
    units = root / "usr/lib/systemd/system"
    assert HOST_UNITS is not None
    shutil.copytree(HOST_UNITS, units, symlinks=True)
    for tool in ("/bin/kill",):
        dest = root / tool.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(Path(tool).resolve(), dest)
    exe = root / EXEC.lstrip("/")
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    etc = root / "etc/systemd/system"
    etc.mkdir(parents=True)
    (etc / "kitchen-edge.service").write_text(unit_text)


def _verify(root: Path) -> subprocess.CompletedProcess[str]:
    assert SYSTEMD_ANALYZE is not None
    return subprocess.run(
        [SYSTEMD_ANALYZE, "verify", f"--root={root}", "--man=no", "kitchen-edge.service"],
        capture_output=True,
        text=True,
        timeout=60,
    )


needs_systemd_analyze = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None or HOST_UNITS is None,
    reason="systemd-analyze or the host's unit directory is missing (apt-get install systemd)",
)


@needs_systemd_analyze
def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    _fake_root(tmp_path, UNIT.read_text())
    result = _verify(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (result.stdout + result.stderr).strip() == ""


@needs_systemd_analyze
def test_verify_would_catch_a_misspelt_key(tmp_path: Path) -> None:
    """The check above can fail: a typo in a hardening key is reported."""
    text = UNIT.read_text().replace("ProtectSystem=strict", "ProtectSytem=strict")
    _fake_root(tmp_path, text)
    result = _verify(tmp_path)
    assert "ProtectSytem" in result.stdout + result.stderr


def _service_section() -> configparser.SectionProxy:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    return parser["Service"]


def test_unit_says_what_the_issue_asks_for() -> None:
    svc = _service_section()
    assert svc["Type"] == "notify"
    assert svc["Restart"] == "on-failure"
    assert svc["WatchdogSec"]
    assert svc["ExecStart"] == f"{EXEC} run --config /etc/kitchen-edge/station.yaml"
    assert svc["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert svc["User"] == "kitchen-edge"
    assert "lp" in svc["SupplementaryGroups"].split()
    assert svc["StateDirectory"] == "kitchen-edge"
    assert svc["ConfigurationDirectory"] == "kitchen-edge"
    assert svc["DevicePolicy"] == "closed"
    assert svc["DeviceAllow"] == "char-usb_device rw"
    assert svc["ProtectSystem"] == "strict"
    # mDNS needs IPv4/IPv6 multicast, interface listing needs netlink.
    families = set(svc["RestrictAddressFamilies"].split())
    assert {"AF_INET", "AF_INET6", "AF_UNIX", "AF_NETLINK"} <= families
    # /dev/bus/usb must stay visible: PrivateDevices would hide it.
    assert "PrivateDevices" not in svc
    unit = UNIT.read_text()
    assert "After=network-online.target mosquitto.service" in unit
    # The kitchen starts without the WAN, so without NTP: never after time-sync.target
    # (docs/clock.md), which would hold it until the WAN came back.
    ordering = [ln for ln in unit.splitlines() if ln.startswith(("After=", "Wants=",
                                                                  "Requires="))]
    assert not any("time-sync.target" in ln or "time-set.target" in ln for ln in ordering)

