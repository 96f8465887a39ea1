"""The restaurant's answers, from the command line: accept or reject an order a channel sent
for acceptance, list the ones waiting, and open, slow down or pause the store.

    kitchen-edge orders accept ORDER_ID [--prep MINUTES]
    kitchen-edge orders reject ORDER_ID [--reason CODE] [--text WORDS]
    kitchen-edge orders waiting
    kitchen-edge store show | open | busy MINUTES [--until TIME] | pause [--until TIME]

Each answer is a command published to the running daemon (`{root}/commands/order`,
`{root}/commands/store`), which applies it like any other change; the command then waits
(read-only) for what became of it and says so: exit 0 done, 1 refused (with the daemon's
reason), 3 sent but no result yet (is the daemon running?).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge.cli.common import _db, _emit, _ro, table, with_config

WAIT = 10.0
NO_RESULT = 3


def _config(args: argparse.Namespace) -> Any:
    from edge.daemon import load_station

    return load_station(Path(args.config))


def _send(args: argparse.Namespace, name: str, body: dict[str, Any]) -> bool:
    from edge.ingest.commands_out import NotSent, send_command

    try:
        send_command(_config(args), name, body)
    except NotSent as exc:
        print(f"not sent: {exc}", file=sys.stderr)
        return False
    return True


def _wait(args: argparse.Namespace, check: Callable[[Any], tuple[str, str] | None]) -> int:
    """Poll the database until `check` says ("done"|"refused", message)."""
    from edge.store import open_readonly

    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        conn = open_readonly(_db(args))
        try:
            found = check(conn)
        finally:
            conn.close()
        if found is not None:
            verdict, message = found
            print(message, file=sys.stdout if verdict == "done" else sys.stderr)
            return 0 if verdict == "done" else 1
        time.sleep(0.1)
    print(f"sent; no result within {WAIT:g}s: is the daemon running?", file=sys.stderr)
    return NO_RESULT


def cmd_answer(args: argparse.Namespace) -> int:
    from edge.orders.commands import OrderDecision
    from edge.orders.events import Rejected
    from edge.store import events

    command_id = args.command_id or f"cli-{uuid.uuid4().hex[:12]}"
    body: dict[str, Any] = {"command_id": command_id, "order_id": args.order_id,
                            "action": args.action}
    if args.action == "accept" and args.prep is not None:
        body["prep_minutes"] = args.prep
    if args.action == "reject":
        if args.reason:
            body["reason_code"] = args.reason
        if args.text:
            body["reason"] = args.text
    try:
        OrderDecision.from_document(body)      # say what is wrong before anything is sent
    except Rejected as exc:
        print(f"refused: {exc.reason}", file=sys.stderr)
        return 2
    if not _send(args, "order", body):
        return 1
    event_id = f"cmd:{command_id}"
    verb = "accepted" if args.action == "accept" else "rejected"

    def check(conn: Any) -> tuple[str, str] | None:
        if events.event_applied(conn, event_id):
            return "done", f"{args.order_id} {verb}"
        reason = events.dead_letter_mentioning(conn, command_id)
        if reason is not None:
            return "refused", f"refused: {reason}"
        return None

    return _wait(args, check)


def cmd_waiting(args: argparse.Namespace) -> int:
    from edge.orders import acceptance

    now = datetime.now(UTC)
    rows = [{"order_id": w.order_id, "display_id": w.display_id, "channel": w.channel,
             "source": w.device, "since": w.since, "waiting_s": round(w.waited_s),
             "reminded": w.reminded} for w in acceptance.waiting(_ro(args), now)]
    _emit(rows, args.json, lambda r: table(
        r, ["order_id", "display_id", "channel", "source", "since", "waiting_s", "reminded"]))
    return 0


def cmd_store(args: argparse.Namespace) -> int:
    from edge.orders import opening
    from edge.orders.events import Rejected
    from edge.store import events

    if args.store_command == "show":
        state = opening.current(_ro(args))
        now = datetime.now(UTC)
        _emit(state.public(now), args.json, lambda s: "  ".join(
            f"{k}: {v}" for k, v in s.items() if v is not None))
        return 0
    command_id = f"cli-{uuid.uuid4().hex[:12]}"
    body: dict[str, Any] = {"command_id": command_id,
                            "state": {"open": "open", "busy": "busy",
                                      "pause": "paused"}[args.store_command]}
    if args.store_command == "busy":
        body["busy_minutes"] = args.minutes
    until = getattr(args, "until", None)
    if until:
        body["until"] = _until(until)
    try:
        opening.StoreCommand.from_document(body)
    except Rejected as exc:
        print(f"refused: {exc.reason}", file=sys.stderr)
        return 2
    if not _send(args, "store", body):
        return 1

    def check(conn: Any) -> tuple[str, str] | None:
        result = events.command_result(conn, command_id)
        if result is not None:
            return "done", f"store {json.loads(result)['state']}"
        reason = events.dead_letter_mentioning(conn, command_id)
        return None if reason is None else ("refused", f"refused: {reason}")

    return _wait(args, check)


def _until(text: str) -> str:
    """RFC 3339, or HH:MM today (tomorrow if that has passed) in the local time zone."""
    if "T" in text or len(text) > 5:
        return text
    hours, _, minutes = text.partition(":")
    local = datetime.now().astimezone()
    at = local.replace(hour=int(hours), minute=int(minutes or 0), second=0, microsecond=0)
    if at <= local:
        at = at.fromtimestamp(at.timestamp() + 86400, at.tzinfo)
    return at.isoformat()


def register(sub: Any, orders: Any) -> None:
    """Add `orders accept|reject|waiting` to the `orders` group, and the `store` group."""
    for action in ("accept", "reject"):
        p = with_config(orders.add_parser(
            action, help=f"{action} an order a channel sent for acceptance"))
        p.add_argument("order_id")
        p.add_argument("--command-id", help="idempotency key (default: a new one)")
        if action == "accept":
            p.add_argument("--prep", type=int, metavar="MINUTES",
                           help="preparing time the channel is told")
        else:
            p.add_argument("--reason", metavar="CODE",
                           help="reason code (out_of_stock, busy, store_closed, ...)")
            p.add_argument("--text", help="reason in words")
        p.set_defaults(fn=cmd_answer, action=action)
    w = with_config(orders.add_parser("waiting", help="orders waiting for acceptance"))
    w.set_defaults(fn=cmd_waiting)

    store = sub.add_parser("store", help="open, busy or paused (new channel orders)")
    steps = store.add_subparsers(dest="store_command", required=True)
    with_config(steps.add_parser("show", help="the store's state now")).set_defaults(
        fn=cmd_store)
    with_config(steps.add_parser("open", help="take channel orders")).set_defaults(fn=cmd_store)
    busy = with_config(steps.add_parser("busy", help="take them, with more preparing time"))
    busy.add_argument("minutes", type=int)
    busy.add_argument("--until", help="RFC 3339 or HH:MM; open again then")
    busy.set_defaults(fn=cmd_store)
    pause = with_config(steps.add_parser("pause", help="refuse new channel orders"))
    pause.add_argument("--until", help="RFC 3339 or HH:MM; open again then")
    pause.set_defaults(fn=cmd_store)


__all__ = ["register"]
