"""`kitchen-edge`: the daemon and the operator's commands.

Operator commands read the same SQLite file the daemon writes (WAL lets them run side by
side); the one that writes (`jobs reprint`) goes through the same code path as the MQTT
reprint command.
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from pathlib import Path
from typing import Any

from edge.cli import answers, tables
from edge.cli.common import _db, _emit, _ro, table, with_config

# Optional extras that the daemon's libraries import whenever they are installed, and that the
# daemon never uses: structlog's console renderer (rich, pygments: the daemon logs JSON), httpx's
# command line (click, rich, pygments), httpcore's trio backend (the daemon is asyncio), paho's
# SOCKS proxy (PySocks: the daemon reaches its broker directly). A production install has none
# of them; a development venv has them for the tests, about 9 MB of RSS (issue 12). Marked
# absent before the daemon's imports (each library catches the ImportError), so the daemon runs
# the same code in both.
DEV_EXTRAS = ("rich", "pygments", "click", "trio", "socks")


def hide_dev_extras() -> None:
    for name in DEV_EXTRAS:
        if name not in sys.modules:
            sys.modules[name] = None  # type: ignore[assignment]


def cmd_run(args: argparse.Namespace) -> int:
    hide_dev_extras()
    from edge.daemon import run_daemon

    return run_daemon(Path(args.config))


def cmd_config_check(args: argparse.Namespace) -> int:
    from edge.config import ConfigError
    from edge.daemon import load_station

    path = Path(args.path)
    try:
        cfg = load_station(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"{path.name}: {len(exc.problems)} problem(s)", file=sys.stderr)
        return 2
    print(f"{path.name}: ok (site {cfg.site}, {len(cfg.printers)} printers, "
          f"{len(cfg.stations)} stations)")
    return 0


def cmd_jobs_list(args: argparse.Namespace) -> int:
    from edge.orders import views as ops

    rows = ops.jobs_list(_ro(args), state=args.state, order_id=args.order, limit=args.limit)
    _emit(rows, args.json, lambda r: table(
        r, ["job_key", "kind", "state", "station_id", "printer_id", "attempts", "created_at"]))
    return 0


def cmd_jobs_show(args: argparse.Namespace) -> int:
    from edge.orders import views as ops

    job = ops.job_show(_ro(args), args.job_key)
    if job is None:
        print(f"no job {args.job_key}", file=sys.stderr)
        return 1
    _emit(job, args.json, lambda j: "\n".join(f"{k:18} {v}" for k, v in j.items()))
    return 0


def cmd_jobs_reprint(args: argparse.Namespace) -> int:
    import asyncio

    from edge.clock import SystemClock
    from edge.daemon import db_path, plan_of
    from edge.daemon import load_station as load_config
    from edge.ingest.pipeline import Incoming, Pipeline
    from edge.orders.apply import Applier
    from edge.store import Store

    cfg = load_config(Path(args.config))
    command_id = args.command_id or f"cli-{uuid.uuid4().hex[:12]}"
    pipeline = Pipeline(cfg.root, Applier(plan_of(cfg)))
    message = Incoming(pipeline.reprint_topic,
                       json.dumps({"command_id": command_id, "job_key": args.job_key}).encode())

    async def go() -> Any:
        store = Store(db_path(cfg))
        await store.open()
        try:
            now = SystemClock().now()
            return await store.transact(lambda c: pipeline.apply_batch(c, [message], now))
        finally:
            await store.close()

    outcome = asyncio.run(go()).outcomes[0]
    if outcome.result == "dead":
        print(f"refused: {outcome.reason}", file=sys.stderr)
        return 1
    result = {"command_id": command_id, "job_key": args.job_key,
              "reprint_job_key": outcome.new_jobs[0] if outcome.new_jobs else None,
              "result": outcome.result}
    _emit(result, args.json, lambda r: f"queued {r['reprint_job_key']} (REPRINT of {args.job_key})"
          if r["reprint_job_key"] else f"command {command_id} was already applied")
    return 0


def cmd_orders_show(args: argparse.Namespace) -> int:
    from edge.orders import views as ops

    order = ops.order_show(_ro(args), args.order_id)
    if order is None:
        print(f"no order {args.order_id}", file=sys.stderr)
        return 1

    def render(o: dict[str, Any]) -> str:
        if o.get("compacted"):
            return (f"order {o['order_id']} ({o['channel']}) display {o['display_id'] or '-'}\n"
                    f"status {o['status']}  stage {o['kitchen_stage']}  "
                    f"fulfillment {o['fulfillment']}\n"
                    f"created {o['created_at']}  final {o['final_at']}  "
                    f"paid {o['paid_cents']}  refunded {o['refunded_cents']}\n"
                    f"{o['lines']} lines, {o['tickets']} tickets printed, {o['events']} events\n"
                    f"compacted by retention at {o['compacted_at']}: lines, tickets, events and "
                    f"activities are no longer kept")
        head = (f"order {o['order_id']} ({o['channel']}) display {o['display_id'] or '-'}\n"
                f"status {o['status']}  stage {o['kitchen_stage']}  "
                f"fulfillment {o['fulfillment']} {o['table_label'] or ''}")
        return "\n\n".join([
            head,
            "LINES\n" + table(o["lines"], ["line_id", "qty", "name", "category", "state"]),
            "ACTIVITIES\n" + table(o["activities"], ["at", "what", "channel", "device"]),
            "JOBS\n" + table(o["jobs"], ["job_key", "kind", "state", "printer_id"]),
        ])

    _emit(order, args.json, render)
    return 0


def cmd_dead_letters(args: argparse.Namespace) -> int:
    from edge.orders import views as ops

    rows = ops.dead_letters(_ro(args), limit=args.limit)
    _emit(rows, args.json, lambda r: table(r, ["id", "received_at", "topic", "reason",
                                                   "seen"]))
    return 0


def cmd_printers_list(args: argparse.Namespace) -> int:
    from edge.daemon import load_station as load_config
    from edge.orders import views as ops

    cfg = load_config(Path(args.config))
    conn = _ro(args)
    states = {s["printer_id"]: s for s in ops.printer_states(conn)}
    unconfirmed = ops.unconfirmed_jobs(conn)
    rows = [{"printer_id": p.id, "connection": p.connection, "columns": p.columns,
             "state": states.get(p.id, {}).get("state", "unknown"),
             "since": states.get(p.id, {}).get("since"),
             # Delivered, not confirmed: may be on paper, may not; a reprint settles it.
             "unconfirmed": unconfirmed.get(p.id, [])} for p in cfg.printers]
    _emit(rows, args.json, lambda r: table(
        [{**x, "unconfirmed": " ".join(x["unconfirmed"]) or None} for x in r],
        ["printer_id", "connection", "state", "since", "unconfirmed"]))
    return 0


def cmd_printers_test(args: argparse.Namespace) -> int:
    import asyncio

    from edge.daemon import load_station as load_config

    cfg = load_config(Path(args.config))
    result = asyncio.run(_test_print(cfg, args.printer_id))
    _emit(result, args.json, lambda r: "\n".join(f"{k:10} {v}" for k, v in r.items()))
    return 0 if result.get("printed") else 1


MDNS_WAIT = 5.0


async def _test_print(cfg: Any, printer_id: str) -> dict[str, Any]:
    """A test ticket; an mdns:// printer is looked up first (for up to MDNS_WAIT s)."""
    import asyncio
    import contextlib

    from edge.config import MdnsConnection
    from edge.printing.testprint import test_print

    target = None
    with contextlib.suppress(KeyError):
        target = cfg.printer(printer_id).target
    if not isinstance(target, MdnsConnection):
        return await test_print(cfg, printer_id)
    from edge.discovery.mdns import MdnsBrowser

    found = asyncio.Event()
    name = target.service_name
    browser = MdnsBrowser(interfaces=cfg.discovery.interfaces,
                          on_change=lambda n, rec: found.set() if n == name and rec else None)
    await browser.start()
    try:
        if browser.lookup(name) is None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(MDNS_WAIT):
                    await found.wait()
        return await test_print(cfg, printer_id, mdns_lookup=browser.lookup)
    finally:
        await browser.stop()


def cmd_printers_discover(args: argparse.Namespace) -> int:
    from edge.discovery.report import discover, format_table

    found = discover(timeout=args.timeout, interfaces=args.interfaces)
    _emit(found, args.json, format_table)
    return 0


def cmd_outbox_status(args: argparse.Namespace) -> int:
    from edge.upstream.cli import outbox_status

    print(outbox_status(_db(args), as_json=args.json))
    return 0


def cmd_outbox_retry(args: argparse.Namespace) -> int:
    from edge.upstream.cli import retry_parked

    count = retry_parked(_db(args))
    print(f"{count} parked record(s) queued again")
    return 0


def cmd_marketplaces(args: argparse.Namespace) -> int:
    from edge.connectors.marketplace.cli import run
    from edge.daemon import load_station as load_config

    cfg = load_config(Path(args.config))
    try:
        data, text = run(args, cfg, _db(args))
    except KeyError:
        print(f"no marketplace {args.marketplace} in {args.config}", file=sys.stderr)
        return 1
    _emit(data, args.json, lambda _: text)
    return 0


def cmd_aggregator(args: argparse.Namespace) -> int:
    from edge.connectors.aggregator import cli as aggregator
    from edge.daemon import load_station as load_config

    cfg = load_config(Path(args.config))
    if cfg.aggregator is None:
        print("no aggregator section in the config: the aggregator API is off",
              file=sys.stderr)
        return 1
    if args.aggregator_command == "retry-parked":
        count = aggregator.retry_parked(_db(args))
        print(f"{count} parked webhook(s) due again (sent within 2 s)")
        return 0
    found = aggregator.status(cfg.aggregator, _db(args))
    _emit(found, args.json, lambda f: aggregator.render(f, table))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kitchen-edge", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the daemon in the foreground")
    run.add_argument("--config", "-c", required=True)
    run.set_defaults(fn=cmd_run)

    config = sub.add_parser("config", help="configuration tools").add_subparsers(
        dest="config_command", required=True)
    check = config.add_parser("check", help="validate a station YAML; exit 2 if invalid")
    check.add_argument("path")
    check.set_defaults(fn=cmd_config_check)

    jobs = sub.add_parser("jobs", help="print jobs").add_subparsers(dest="jobs_command",
                                                                    required=True)
    jl = with_config(jobs.add_parser("list", help="recent jobs"))
    jl.add_argument("--state")
    jl.add_argument("--order")
    jl.add_argument("--limit", type=int, default=50)
    jl.set_defaults(fn=cmd_jobs_list)
    js = with_config(jobs.add_parser("show", help="one job"))
    js.add_argument("job_key")
    js.set_defaults(fn=cmd_jobs_show)
    jr = with_config(jobs.add_parser("reprint", help="print a job again, marked REPRINT"),
                     db=False)
    jr.add_argument("job_key")
    jr.add_argument("--command-id", help="idempotency key (default: a new one)")
    jr.set_defaults(fn=cmd_jobs_reprint)

    orders = sub.add_parser("orders", help="orders").add_subparsers(dest="orders_command",
                                                                    required=True)
    os_ = with_config(orders.add_parser("show", help="an order, its activity log and jobs"))
    os_.add_argument("order_id")
    os_.set_defaults(fn=cmd_orders_show)
    answers.register(sub, orders)
    tables.register(sub)

    printers = sub.add_parser("printers", help="printers").add_subparsers(
        dest="printers_command", required=True)
    pl = with_config(printers.add_parser("list", help="configured printers and their state"))
    pl.set_defaults(fn=cmd_printers_list)
    pt = with_config(printers.add_parser("test", help="print a test ticket"), db=False)
    pt.add_argument("printer_id")
    pt.set_defaults(fn=cmd_printers_test)
    pd = printers.add_parser("discover", help="find printers on USB and mDNS")
    pd.add_argument("--timeout", type=float, default=3.0)
    pd.add_argument("--interface", action="append", dest="interfaces", metavar="ADDRESS",
                    help="IPv4 address to browse mDNS on (repeatable; default all)")
    pd.add_argument("--json", action="store_true")
    pd.set_defaults(fn=cmd_printers_discover)

    outbox = sub.add_parser("outbox", help="upstream outbox").add_subparsers(
        dest="outbox_command", required=True)
    ost = with_config(outbox.add_parser("status", help="backlog, oldest unsent, parked"))
    ost.set_defaults(fn=cmd_outbox_status)
    orp = with_config(outbox.add_parser("retry-parked", help="send parked records again"))
    orp.set_defaults(fn=cmd_outbox_retry)

    mk = with_config(sub.add_parser(
        "marketplaces", help="marketplaces: how they answer, orders waiting, refused calls"))
    mk.add_argument("--marketplace", metavar="ID", help="only this one")
    mk.set_defaults(fn=cmd_marketplaces, mk_command=None)
    mk_steps = mk.add_subparsers(dest="mk_command")
    mkr = with_config(mk_steps.add_parser(
        "retry-parked", help="send the calls a marketplace refused again"))
    mkr.add_argument("--marketplace", metavar="ID", help="only this one")
    mkr.set_defaults(fn=cmd_marketplaces)

    dead = sub.add_parser("dead-letter", help="rejected messages").add_subparsers(
        dest="dead_command", required=True)
    dl = with_config(dead.add_parser("list", help="recent rejected messages"))
    dl.add_argument("--limit", type=int, default=50)
    dl.set_defaults(fn=cmd_dead_letters)

    agg = with_config(sub.add_parser(
        "aggregator", help="the aggregator order API (seed 004): status, parked webhooks"))
    agg.add_argument("aggregator_command", nargs="?", default="status",
                     choices=["status", "retry-parked"])
    agg.set_defaults(fn=cmd_aggregator)

    # Listed here; main() hands its arguments to the virtual printer's own parser.
    sub.add_parser("virtual-printer", help="a virtual ESC/POS printer for tests and demos")
    return parser


def main(argv: list[str] | None = None) -> int:
    from edge.config import ConfigError

    words = sys.argv[1:] if argv is None else argv
    if words[:1] == ["virtual-printer"]:
        # Its arguments are parsed by its own module: importing that to build this parser
        # would load the virtual printer (and Pillow, for its PNGs) into every command, the
        # daemon's too (issue 12).
        from edge.virtual_printer.cli import main as virtual_printer

        try:
            return virtual_printer(words[1:])
        except KeyboardInterrupt:
            return 130
    args = build_parser().parse_args(argv)
    if args.fn is not cmd_run:
        # stdout carries the table or the JSON a script parses; what library code logs
        # (a printer connecting, mDNS) goes to stderr.
        import structlog

        structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    try:
        result: int = args.fn(args)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"kitchen-edge: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return result
