"""The menu and OpenApp from the command line:

    kitchen-edge menu show
    kitchen-edge menu stock PRODUCT N|none       portions left (none: not counted)
    kitchen-edge menu 86 PRODUCT                 stock 0: the kitchen is out of it
    kitchen-edge menu list|unlist PRODUCT        on or off the menu
    kitchen-edge simulate openapp scan|submit|watch|session TABLE ...

`menu show` reads the menu file and the running stock (read-only); the others publish a
`{root}/commands/stock` command to the running daemon and wait for what became of it, like
`kitchen-edge store` (exit 0 done, 1 refused, 2 bad input, 3 no result). `simulate openapp`
is a small OpenApp on the broker (`edge.connectors.openapp.simulator`).
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from typing import Any

from edge.cli.answers import _config, _send, _wait
from edge.cli.common import _emit, _ro, table, with_config


def cmd_menu_show(args: argparse.Namespace) -> int:
    from edge.orders import menu

    cfg = _config(args)
    products = cfg.menu_data.products if cfg.menu_data is not None else []
    levels = menu.stock_levels(_ro(args))
    rows: list[dict[str, Any]] = []
    for product in products:
        level = levels.get(product.id)
        rows.append({"product_id": product.id, "name": product.name,
                     "category": product.category, "price": product.price,
                     "stock": level.stock if level is not None else product.stock,
                     "listed": level.listed if level is not None else product.listed,
                     "out": bool(level is not None and level.marked_out
                                 and level.stock == 0)})
    if not rows and not args.json:
        print("no menu (set `menu:` in the station config)")
        return 0
    _emit(rows, args.json, lambda r: table(
        [{**x, "stock": "-" if x["stock"] is None else x["stock"],
          "listed": "yes" if x["listed"] else "no", "out": "86" if x["out"] else ""}
         for x in r], ["product_id", "name", "category", "price", "stock", "listed", "out"]))
    return 0


def cmd_menu_change(args: argparse.Namespace) -> int:
    from edge.orders.events import Rejected
    from edge.orders.menu import StockCommand
    from edge.store import events

    command_id = f"cli-{uuid.uuid4().hex[:12]}"
    body: dict[str, Any] = {"command_id": command_id, "product_id": args.product}
    if args.menu_command == "stock":
        if args.count.lower() in ("none", "null", "-"):
            body["stock"] = None
        elif args.count.isdigit():
            body["stock"] = int(args.count)
        else:
            print("refused: stock: a whole number of portions, or none", file=sys.stderr)
            return 2
    elif args.menu_command == "86":
        body["stock"] = 0
    else:
        body["listed"] = args.menu_command == "list"
    try:
        StockCommand.from_document(body)
    except Rejected as exc:
        print(f"refused: {exc.reason}", file=sys.stderr)
        return 2
    if not _send(args, "stock", body):
        return 1

    def check(conn: Any) -> tuple[str, str] | None:
        result = events.command_result(conn, command_id)
        if result is not None:
            done = json.loads(result)
            stock = "not counted" if done["stock"] is None else f"stock {done['stock']}"
            listed = "listed" if done["listed"] else "not listed"
            return "done", f"{done['product_id']}: {stock}, {listed}"
        reason = events.dead_letter_mentioning(conn, command_id)
        return None if reason is None else ("refused", f"refused: {reason}")

    return _wait(args, check)


def cmd_simulate_openapp(args: argparse.Namespace) -> int:
    from edge.connectors.openapp.simulator import NoAnswer, OpenAppSim, parse_items

    cfg = _config(args)
    prices = {p.id: p.price for p in cfg.menu_data.products} if cfg.menu_data else {}
    mq = cfg.mqtt
    password = None
    if args.password_file:
        with open(args.password_file, encoding="utf-8") as f:
            password = f.read().strip()
    notes = dict(n.split("=", 1) for n in args.note or [] if "=" in n)
    try:
        items = parse_items(args.items, prices, notes) if args.items else []
    except ValueError as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 2
    if args.step in ("submit", "session") and not items:
        print("refused: give at least one PRODUCT=QTY", file=sys.stderr)
        return 2
    sim = OpenAppSim(args.host or mq.host, args.port or mq.port, cfg.root,
                     username=args.username, password=password)

    def show(body: dict[str, Any]) -> None:
        print(json.dumps(body, ensure_ascii=False), flush=True)

    try:
        if args.step in ("scan", "session"):
            show(sim.scan(args.table, timeout=args.timeout))
        if args.step in ("submit", "session"):
            show(sim.submit(args.table, items, submission_id=args.submission_id,
                            order_id=args.order_id, timeout=args.timeout))
        if args.step in ("watch", "session") and args.seconds > 0:
            if args.step == "watch":
                show(sim.scan(args.table, timeout=args.timeout))
            shown = 0
            import time

            deadline = time.monotonic() + args.seconds
            while time.monotonic() < deadline:
                changes = sim.changes(args.table)
                for body in changes[shown:]:
                    show(body)
                    if body.get("change_type") == "ORDER_CLOSED":
                        return 0
                shown = len(changes)
                time.sleep(0.1)
    except NoAnswer as exc:
        print(f"no answer: {exc}", file=sys.stderr)
        return 3
    finally:
        sim.close()
    return 0


def register(sub: Any) -> None:
    """The `menu` and `simulate` groups."""
    menu = sub.add_parser("menu", help="the menu: stock, 86, listed")
    steps = menu.add_subparsers(dest="menu_command", required=True)
    with_config(steps.add_parser("show", help="products, prices and running stock")
                ).set_defaults(fn=cmd_menu_show)
    stock = with_config(steps.add_parser("stock", help="portions left (none: not counted)"))
    stock.add_argument("product")
    stock.add_argument("count", metavar="N|none")
    stock.set_defaults(fn=cmd_menu_change)
    for name, text in (("86", "out of it: stock 0"), ("list", "back on the menu"),
                       ("unlist", "off the menu")):
        p = with_config(steps.add_parser(name, help=text))
        p.add_argument("product")
        p.set_defaults(fn=cmd_menu_change)

    simulate = sub.add_parser("simulate", help="a partner on the broker, for demos and tests")
    partners = simulate.add_subparsers(dest="partner", required=True)
    oa = with_config(partners.add_parser(
        "openapp", help="OpenApp: scan a table, submit items, watch the changes"), db=False)
    oa.add_argument("step", choices=["scan", "submit", "watch", "session"])
    oa.add_argument("table")
    oa.add_argument("items", nargs="*", metavar="PRODUCT=QTY[@PRICE]")
    oa.add_argument("--submission-id")
    oa.add_argument("--order-id", help="the check the session is on (from its scan)")
    oa.add_argument("--note", action="append", metavar="PRODUCT=TEXT")
    oa.add_argument("--seconds", type=float, default=30.0, help="watch this long")
    oa.add_argument("--timeout", type=float, default=10.0, help="wait this long for answers")
    oa.add_argument("--host", help="broker host (default: the config's)")
    oa.add_argument("--port", type=int, help="broker port (default: the config's)")
    oa.add_argument("--username", help="the OpenApp bridge's broker user")
    oa.add_argument("--password-file")
    oa.set_defaults(fn=cmd_simulate_openapp)


__all__ = ["register"]
