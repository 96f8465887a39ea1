"""`kitchen-edge config check`: every problem, with file, line and key path; exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edge.config import ConfigError, load_config

GOOD = """\
site: ist-kadikoy-01
state_dir: ./state
mqtt:
  url: mqtt://127.0.0.1:1883
printers:
  - id: hot-line
    connection: tcp://192.168.1.50:9100
  - id: bar
    connection: usb://04b8:0202/ABC
  - id: pass
    connection: mdns://Kitchen%20Pass
stations:
  - id: grill
    printer: hot-line
    backup: bar
    categories: [grill, mains]
  - id: drinks
    printer: bar
    categories: [drinks]
routing:
  default_station: grill
"""


def check(tmp_path: Path, text: str) -> tuple[int, str]:
    path = tmp_path / "station.yaml"
    path.write_text(text)
    proc = subprocess.run([sys.executable, "-m", "edge", "config", "check", str(path)],
                          capture_output=True, text=True, timeout=60)
    return proc.returncode, proc.stdout + proc.stderr


def test_valid_file_exits_zero_and_resolves_relative_paths(tmp_path: Path) -> None:
    code, out = check(tmp_path, GOOD)
    assert code == 0, out
    cfg = load_config(tmp_path / "station.yaml")
    assert cfg.state_dir == tmp_path.resolve() / "state"
    assert str(cfg.printer("bar").target) == "usb://04b8:0202/ABC"
    assert cfg.printer("pass").target.service_name == "Kitchen Pass"  # type: ignore[union-attr]


def test_example_config_is_valid() -> None:
    example = Path(__file__).parent.parent / "config" / "station.example.yaml"
    proc = subprocess.run([sys.executable, "-m", "edge", "config", "check", str(example)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("    printer: bar\n    categories: [drinks]",
         "    printer: bar2\n    categories: [drinks]",
         "station.yaml:18 stations[1].printer: unknown printer 'bar2'"),
        ("    backup: bar", "    backup: hot-line",
         "station.yaml:15 stations[0].backup: backup is the same printer as the primary"),
        ("  - id: pass", "  - id: bar", "station.yaml:10 printers[2].id: duplicate id 'bar'"),
        ("tcp://192.168.1.50:9100", "lpt://x",
         "station.yaml:7 printers[0].connection: 'lpt://x': unknown scheme 'lpt'"),
        ("usb://04b8:0202/ABC", "usb://4b8:202",
         "station.yaml:9 printers[1].connection: 'usb://4b8:202': expected usb://VID:PID"),
        ("    categories: [drinks]", "    catgories: [drinks]",
         "station.yaml:19 stations[1].catgories: unknown key"),
        ("site: ist-kadikoy-01", "site: Ist Kadikoy", "station.yaml:1 site: String should match"),
        ("  default_station: grill", "  default_station: fryer",
         "station.yaml:21 routing.default_station: unknown station 'fryer'"),
        ("routing:\n  default_station: grill\n", "",
         "routing.default_station: required: items whose category no station lists"),
        ("    connection: tcp://192.168.1.50:9100",
         "    connection: tcp://192.168.1.50:9100\n    profile: TM-NOPE",
         "station.yaml:8 printers[0].profile: "),
        ("    connection: tcp://192.168.1.50:9100",
         "    connection: tcp://192.168.1.50:9100\n    profile: TM-T88V\n    codepage: KLINGON",
         "station.yaml:9 printers[0].codepage: "),
        ("  url: mqtt://127.0.0.1:1883", "  url: http://127.0.0.1:1883",
         "station.yaml:4 mqtt.url: 'http://127.0.0.1:1883': scheme must be mqtt:// or mqtts://"),
    ],
)
def test_each_problem_is_named_with_line_and_key(tmp_path: Path, old: str, new: str,
                                                  expected: str) -> None:
    assert old in GOOD
    code, out = check(tmp_path, GOOD.replace(old, new))
    assert code == 2
    assert expected in out, out


def test_missing_token_file_and_every_problem_reported_at_once(tmp_path: Path) -> None:
    text = GOOD.replace("    backup: bar", "    backup: hot-line").replace(
        "    printer: bar\n", "    printer: nope\n") + (
        "upstream:\n  url: https://core.example.com/api\n  token_file: missing.token\n")
    code, out = check(tmp_path, text)
    assert code == 2
    assert "stations[0].backup" in out and "stations[1].printer: unknown printer 'nope'" in out
    assert f"station.yaml:24 upstream.token_file: token file {tmp_path.resolve()}/missing.token "\
           "does not exist" in out
    (tmp_path / "missing.token").write_text("secret\n")
    (tmp_path / "missing.token").chmod(0o600)
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "station.yaml")
    assert len(err.value.problems) == 2


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    code, out = check(tmp_path, GOOD.replace("    categories: [grill, mains]",
                                             "    categories: [grill, mains"))
    assert code == 2
    assert "station.yaml:" in out and "YAML syntax error" in out


def test_example_menu_is_valid() -> None:
    from edge.config.load import load_menu

    menu = load_menu(Path(__file__).parent.parent / "config" / "menu.example.yaml")
    assert menu.currency == "TRY"
    adana = menu.product("adana")
    assert adana is not None and adana.price == 42000


MARKETS = """marketplaces:
  - id: yemek
    url: https://partner.example.com/api/
    token_file: yemek.token
    auto_accept: true
    prep_minutes: 25
    lead_minutes: 30
    cancel_reasons: {out_of_stock: 1, busy: 3}
  - id: getir
    url: https://getir.example.com/api
    token_file: /nowhere/getir.token
  - id: yemek
    url: ftp://x
    token_file: open.token
    poll_seconds: 0
"""


def test_marketplaces_each_once_with_a_private_token_relative_to_the_file(
        tmp_path: Path) -> None:
    (tmp_path / "yemek.token").write_text("s3cret\n")
    (tmp_path / "yemek.token").chmod(0o600)
    (tmp_path / "open.token").write_text("s3cret\n")
    (tmp_path / "open.token").chmod(0o640)
    code, out = check(tmp_path, GOOD + MARKETS)
    assert code == 2
    assert "station.yaml:32 marketplaces[1].token_file: token file /nowhere/getir.token " \
           "does not exist" in out
    assert "station.yaml:33 marketplaces[2].id: duplicate id 'yemek'" in out
    assert "station.yaml:34 marketplaces[2].url: 'ftp://x': must be an http:// or https://" in out
    assert f"station.yaml:35 marketplaces[2].token_file: token file {tmp_path.resolve()}/" \
           "open.token is readable by others (mode 0640): chmod 600 it" in out
    assert "station.yaml:36 marketplaces[2].poll_seconds: Input should be greater than 0" in out
    good = GOOD + MARKETS[:MARKETS.index("  - id: getir")]
    code, out = check(tmp_path, good)
    assert code == 0, out
    market = load_config(tmp_path / "station.yaml").marketplaces[0]
    assert market.token_file == tmp_path.resolve() / "yemek.token"
    assert market.url == "https://partner.example.com/api"
    assert (market.poll_seconds, market.auto_accept, market.prep_minutes,
            market.lead_minutes) == (15, True, 25, 30)
    assert market.cancel_reasons == {"out_of_stock": 1, "busy": 3}


AGGREGATOR = """\
aggregator:
  listen: 0.0.0.0:8766
  token_file: aggregator.token
  webhook_url: https://platform.example.com/hooks/
  webhook_token_file: secrets/platform.token
  auto_accept: true
  prep_minutes: 25
"""


def test_the_aggregator_section(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    for name in ("aggregator.token", "secrets/platform.token"):
        (tmp_path / name).write_text("t\n")
        (tmp_path / name).chmod(0o600)
    path = tmp_path / "station.yaml"
    path.write_text(GOOD + AGGREGATOR)
    agg = load_config(path).aggregator
    assert agg is not None
    assert agg.token_file == tmp_path.resolve() / "aggregator.token"
    assert agg.webhook_token_file == tmp_path.resolve() / "secrets/platform.token"
    assert (agg.host, agg.port, agg.tls, agg.auto_accept, agg.prep_minutes) == (
        "0.0.0.0", 8766, False, True, 25)
    assert agg.webhook_url == "https://platform.example.com/hooks"
    assert load_config(tmp_path / "station.yaml").aggregator is not None

    broken = (AGGREGATOR.replace("0.0.0.0:8766", "localhost")
              .replace("https://platform", "ftp://platform")
              .replace("  prep_minutes: 25\n", "  prep_minutes: 25\n  tls_cert_file: api.crt\n"
                                                "  auto_accep: true\n"))
    path.write_text(GOOD + broken)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    problems = [str(p) for p in err.value.problems]
    assert "station.yaml:23 aggregator.listen: 'localhost': expected HOST:PORT" in problems
    assert any(p.startswith("station.yaml:25 aggregator.webhook_url: 'ftp://") for p in problems)
    assert "station.yaml:30 aggregator.auto_accep: unknown key" in problems
    assert any(p.startswith("station.yaml:29 aggregator.tls_cert_file: certificate file ")
               and p.endswith("api.crt does not exist") for p in problems)

    (tmp_path / "api.crt").write_text("x")
    path.write_text(GOOD + AGGREGATOR + "  tls_cert_file: api.crt\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert [p.message for p in err.value.problems] == [
        "tls_cert_file and tls_key_file go together: set both or neither"]
    path.write_text(GOOD + AGGREGATOR.replace("token_file: aggregator.token",
                                              "token_file: gone.token"))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert [p.path for p in err.value.problems] == ["aggregator.token_file"]
