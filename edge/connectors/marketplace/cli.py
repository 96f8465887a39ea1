"""`kitchen-edge marketplaces`: each configured marketplace at a glance (how it answers, the
orders waiting for acceptance, the calls it refused, the orders that could not be imported),
and `kitchen-edge marketplaces retry-parked [ID]`. Read-only but for the retry, which puts
the refused calls back in line (the sender picks them up at its next poll).
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge.clock import rfc3339_ms
from edge.config.models import Config
from edge.connectors.marketplace.views import destination, overview
from edge.store import calls
from edge.store.db import operator_read, operator_write


def overviews(cfg: Config, db: Path, only: str | None = None) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    markets = [m for m in cfg.marketplaces if only is None or m.id == only]
    return operator_read(db, lambda c: [overview(c, m, now) for m in markets])


def render(views: list[dict[str, Any]]) -> str:
    if not views:
        return "no marketplaces configured"
    blocks = []
    for v in views:
        lines = [
            f"{v['marketplace']}  {v['state']} since {v['since'] or '-'}"
            f"  ({'auto-accept' if v['auto_accept'] else 'accept by hand'})",
            f"  last poll {v['last_poll'] or 'never'}, last answered {v['last_ok'] or 'never'}",
            f"  last error {v['last_error'] or '-'}",
            f"  waiting for acceptance {len(v['waiting'])}"
            + (f", oldest {v['oldest_wait_s']}s" if v["waiting"] else ""),
        ]
        lines += [f"    {w['order_id']} ({w['display_id'] or '-'}) waiting {w['waiting_s']}s"
                  + ("  ATTENTION printed" if w["reminded"] else "") for w in v["waiting"]]
        lines.append(f"  calls pending {v['calls']['pending']}, parked {v['calls']['parked']}")
        lines += [f"    parked #{p['id']} {p['call']} ({p['order_id'] or '-'}): {p['error']}"
                  for p in v["parked"]]
        if v["problems"]:
            lines.append(f"  orders not imported {len(v['problems'])}")
            lines += [f"    {o['payment_key']} (id {o['market_order_id'] or '-'}): {o['problem']}"
                      for o in v["problems"]]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def retry_parked(cfg: Config, db: Path, only: str | None = None) -> int:
    now = rfc3339_ms(datetime.now(UTC))
    names = [destination(m.id) for m in cfg.marketplaces if only is None or m.id == only]
    return operator_write(db, lambda c: sum(calls.retry_parked(c, n, now) for n in names))


def run(args: argparse.Namespace, cfg: Config, db: Path) -> tuple[Any, str]:
    """What the subcommand prints: (JSON-able data, text for people)."""
    only = getattr(args, "marketplace", None)
    if only is not None and all(m.id != only for m in cfg.marketplaces):
        raise KeyError(only)
    if getattr(args, "mk_command", None) == "retry-parked":
        count = retry_parked(cfg, db, only)
        return {"requeued": count}, f"{count} parked call(s) queued again"
    views = overviews(cfg, db, only)
    return views, render(views)


__all__ = ["overviews", "render", "retry_parked", "run"]
