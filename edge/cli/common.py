"""What every `kitchen-edge` subcommand shares: the config and database options, output as a
table for people or JSON for scripts."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

DEFAULT_CONFIG = Path("/etc/kitchen-edge/station.yaml")


def with_config(p: argparse.ArgumentParser, db: bool = True) -> argparse.ArgumentParser:
    p.add_argument("--config", "-c", default=str(DEFAULT_CONFIG),
                   help=f"station config (default {DEFAULT_CONFIG})")
    if db:
        p.add_argument("--db", help="database file (default: state_dir from the config)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    return p


def _emit(data: Any, as_json: bool, render: Callable[[Any], str]) -> None:
    if as_json:
        print(json.dumps(data, ensure_ascii=False, indent=2, default=str))
    else:
        print(render(data))


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """A plain text table for people; --json is for scripts."""
    if not rows:
        return "(none)"
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(line.rstrip() for line in lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _db(args: argparse.Namespace) -> Path:
    from edge.daemon import db_path
    from edge.daemon import load_station as load_config

    if getattr(args, "db", None):
        return Path(args.db)
    return db_path(load_config(Path(args.config)))


def _ro(args: argparse.Namespace) -> Any:
    from edge.store import open_readonly

    return open_readonly(_db(args))



__all__ = ["DEFAULT_CONFIG", "_db", "_emit", "_ro", "table", "with_config"]
