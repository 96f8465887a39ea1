"""The menu through the running daemon: `kitchen-edge menu show|stock|86|unlist`, the
`products` part of the retained availability topic after every change, an order taking
portions, an edited menu file reloaded by itself with the running counts kept, and OpenApp
hearing OUT_OF_STOCK after an 86."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx

from tests.broker import Broker, free_port
from tests.daemon import ROOT, Listener, created
from tests.screens_env import TOKEN, write_token
from tests.test_openapp_e2e import MENU, dining_room, dish, item
from tests.test_operator_cli import edge, edge_json


def hup(k: Any) -> None:
    assert k.daemon.proc is not None
    os.kill(k.daemon.proc.pid, signal.SIGHUP)


def products(seen: Listener, check: Any) -> dict[str, Any]:
    body = seen.wait_for(lambda _t, b: isinstance(b, dict) and check(b["products"]),
                         timeout=15)
    return dict(body["products"])


def test_stock_commands_orders_and_a_reload_that_keeps_the_counts(tmp_path: Path,
                                                                  broker: Broker) -> None:
    with dining_room(tmp_path, broker) as (k, sim):
        seen = Listener(broker.port, f"{ROOT}/menu/availability")
        try:
            first = products(seen, lambda p: "adana" in p)
            assert first == {"adana": {"stock": 3, "listed": True},
                             "ayran": {"stock": None, "listed": True},
                             "baklava": {"stock": None, "listed": False},
                             "kunefe": {"stock": 1, "listed": True},
                             "cay": {"stock": 0, "listed": True}}
            shown = {r["product_id"]: r for r in edge_json(k.daemon, "menu", "show")}
            assert (shown["adana"]["price"], shown["adana"]["stock"]) == (42000, 3)
            assert shown["cay"]["out"] is True

            # A waiter's order takes two portions; the topic says so.
            k.pos.order(created("t1", [dish("1", 2, "Adana", product_id="adana")]))
            products(seen, lambda p: p["adana"]["stock"] == 1)

            out = edge(k.daemon, "menu", "stock", "ayran", "40")
            assert "ayran: stock 40, listed" in out.stdout
            products(seen, lambda p: p["ayran"]["stock"] == 40)
            out = edge(k.daemon, "menu", "86", "kunefe")
            assert "kunefe: stock 0" in out.stdout
            products(seen, lambda p: p["kunefe"]["stock"] == 0)
            refused = sim.submit("4", [item("kunefe", 1, 18000)])
            assert refused["rejected"][0]["reason"] == "OUT_OF_STOCK"
            bad = edge(k.daemon, "menu", "stock", "pizza", "3", code=1)
            assert "product_id: 'pizza' is not on the menu" in bad.stderr

            # The operator changes a price in the file: the daemon reloads by itself and
            # keeps every running count (adana stays at 1, ayran at 40).
            menu_file = tmp_path / "menu.yaml"
            time.sleep(0.05)   # a new mtime (same size)
            menu_file.write_text(MENU.replace("price: 6000", "price: 6500"))
            k.daemon.wait_log("config_reloaded", timeout=20)
            assert sim.submit("4", [item("ayran", 1, 6000)])["rejected"][0] == {
                "product_id": "ayran", "qty": 1, "reason": "PRICE_CHANGED",
                "current_price": 6500}
            levels = dict(k.daemon.query("SELECT product_id, stock FROM menu_stock"))
            assert (levels["adana"], levels["ayran"], levels["kunefe"]) == (1, 40, 0)
            # The file's own figure for adana changes: the file wins for adana only. (SIGHUP
            # rather than the file watcher's next look, to keep the test short.)
            menu_file.write_text(MENU.replace("price: 6000", "price: 6500")
                                 .replace("price: 42000, stock: 3", "price: 42000, stock: 12"))
            hup(k)
            products(seen, lambda p: p["adana"]["stock"] == 12 and p["ayran"]["stock"] == 40)
            # An invalid menu file is refused with its own file and line; the running one stays.
            menu_file.write_text(MENU + "  - {id: adana, name: Again, category: grill, "
                                        "price: 1}\n")
            hup(k)
            refused_cfg = k.daemon.wait_log("reload_refused", timeout=20)
            assert "menu.yaml:8 products[5].id: duplicate product id 'adana'" in \
                refused_cfg["problems"]
            assert sim.submit("4", [item("adana", 1, 42000)])["accepted"] != []
        finally:
            seen.close()


def test_the_operator_page_shows_the_menu_and_86s(tmp_path: Path, broker: Broker) -> None:
    port = free_port()
    token = write_token(tmp_path / "operator.token")
    with dining_room(tmp_path, broker, http={"listen": f"127.0.0.1:{port}",
                                             "operator_token_file": str(token)}) as (k, sim):
        base = f"http://127.0.0.1:{port}"
        page = httpx.get(f"{base}/operator/panels/menu", timeout=5).text
        assert "Menu and stock" in page and "Künefe" in page and "420.00" in page
        allowed = {"Authorization": f"Bearer {TOKEN}", "Origin": base,
                   "Accept": "application/json"}
        r = httpx.post(f"{base}/operator/menu/86", data={"product_id": "kunefe"},
                       headers=allowed, timeout=5)
        assert r.status_code == 200 and r.json()["message"] == "kunefe is 86: out until restocked"
        assert k.daemon.scalar("SELECT stock FROM menu_stock WHERE product_id='kunefe'") == 0
        assert sim.submit("4", [item("kunefe", 1, 18000)])["rejected"][0]["reason"] == \
            "OUT_OF_STOCK"
        r = httpx.post(f"{base}/operator/menu/stock", data={"product_id": "kunefe",
                                                            "stock": "5"},
                       headers=allowed, timeout=5)
        assert r.status_code == 200 and r.json()["message"] == "kunefe: 5 left"
        r = httpx.post(f"{base}/operator/menu/unlist", data={"product_id": "ayran"},
                       headers=allowed, timeout=5)
        assert r.status_code == 200 and r.json()["message"] == "ayran is off the menu"
        assert sim.submit("4", [item("ayran", 1, 6000)])["rejected"][0]["reason"] == "DELISTED"
        r = httpx.post(f"{base}/operator/menu/86", data={"product_id": "pizza"},
                       headers=allowed, timeout=5)
        assert r.status_code == 400 and "'pizza' is not on the menu" in r.text
        # Without the operator token nothing changes.
        r = httpx.post(f"{base}/operator/menu/86", data={"product_id": "adana"},
                       headers={"Origin": base}, timeout=5)
        assert r.status_code == 401
        assert k.daemon.scalar("SELECT stock FROM menu_stock WHERE product_id='adana'") == 3
        assert "5" in httpx.get(f"{base}/operator/panels/menu", timeout=5).text


def test_config_check_names_the_menu_files_problems(tmp_path: Path) -> None:
    import subprocess
    import sys

    (tmp_path / "menu.yaml").write_text(
        "currency: try\nproducts:\n  - {id: adana, name: Adana, category: grill, "
        "price: 42000.5}\n  - {id: ayran, name: Ayran, category: drinks, price: 6000, "
        "stok: 3}\n")
    station = tmp_path / "station.yaml"
    station.write_text(
        "site: s\nstate_dir: ./state\nprinters: [{id: p, connection: 'tcp://127.0.0.1:9'}]\n"
        "stations: [{id: grill, printer: p, categories: [grill]}]\n"
        "routing: {default_station: grill}\ntables: ['1', '12', '1']\nmenu: menu.yaml\n")
    proc = subprocess.run([sys.executable, "-m", "edge", "config", "check", str(station)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[:4] == [
        "station.yaml:6 tables[2]: duplicate table '1'",
        "menu.yaml:1 currency: String should match pattern '^[A-Z]{3}$'",
        "menu.yaml:3 products[0].price: Input should be a valid integer",
        "menu.yaml:4 products[1].stok: unknown key"]
    station.write_text(station.read_text().replace("menu.yaml", "missing.yaml"))
    proc = subprocess.run([sys.executable, "-m", "edge", "config", "check", str(station)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "station.yaml:7 menu: menu file " in proc.stderr
    assert "missing.yaml does not exist" in proc.stderr
