"""The screens' config keys: the operator token file must be private and a real token; the
display's colour thresholds must make sense. Checked by `kitchen-edge config check`, with
the line and key of each problem."""

from __future__ import annotations

import os
from pathlib import Path

from edge.config import load_config
from tests.test_config import check

BASE = """\
site: ist-kadikoy-01
state_dir: ./state
printers:
  - id: hot
    connection: tcp://192.168.1.50:9100
stations:
  - id: grill
    printer: hot
    categories: [grill]
routing:
  default_station: grill
"""


def test_defaults_and_a_good_token_file(tmp_path: Path) -> None:
    token = tmp_path / "operator.token"
    token.write_text("0123456789abcdef0123\n")
    os.chmod(token, 0o600)
    (tmp_path / "station.yaml").write_text(
        BASE + "http:\n  listen: 127.0.0.1:8765\n  operator_token_file: operator.token\n"
        "kds:\n  warn_minutes: 0.5\n")
    cfg = load_config(tmp_path / "station.yaml")
    assert cfg.http is not None and cfg.http.operator_token_file == token
    assert (cfg.kds.warn_minutes, cfg.kds.late_minutes) == (0.5, 15.0)
    assert load_config(_write(tmp_path, BASE)).kds.warn_minutes == 8.0


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "plain.yaml"
    path.write_text(text)
    return path


def test_every_problem_with_its_line(tmp_path: Path) -> None:
    loose = tmp_path / "loose.token"
    loose.write_text("0123456789abcdef0123\n")
    os.chmod(loose, 0o644)
    code, out = check(tmp_path, BASE + "http:\n  operator_token_file: loose.token\n"
                      "kds:\n  warn_minutes: 10\n  late_minutes: 5\n")
    assert code == 2, out
    assert "station.yaml:13 http.operator_token_file: token file" in out
    assert "readable by others (mode 0644): chmod 600" in out
    assert "station.yaml:14 kds: late_minutes (5) is less than warn_minutes (10)" in out

    short = tmp_path / "short.token"
    short.write_text("secret\n")
    os.chmod(short, 0o600)
    code, out = check(tmp_path, BASE + "http:\n  operator_token_file: short.token\n"
                      "kds:\n  warn_minutes: 0\n")
    assert code == 2
    assert "at least 16 characters" in out
    assert "kds.warn_minutes: Input should be greater than 0" in out
    code, out = check(tmp_path, BASE + "http:\n  operator_token_file: missing.token\n")
    assert code == 2 and "does not exist" in out


def test_a_station_cannot_be_called_all_when_the_screens_run(tmp_path: Path) -> None:
    text = BASE.replace("id: grill", "id: all").replace("default_station: grill",
                                                        "default_station: all")
    code, out = check(tmp_path, text + "http:\n  listen: 127.0.0.1:8765\n")
    assert code == 2 and "stations[0].id: 'all' is the kitchen display's page" in out
    code, out = check(tmp_path, text)
    assert code == 0, out
