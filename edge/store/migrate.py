"""Versioned schema migrations.

The schema version lives in the file itself (`PRAGMA user_version`). Opening an older file
applies the missing migrations in one transaction each; a file written by a newer
kitchen-edge is refused rather than guessed at.
"""

from __future__ import annotations

import re
import sqlite3
from importlib import resources

from edge.store.retention import ensure_incremental_vacuum


class SchemaTooNew(RuntimeError):
    pass


_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) for every migration shipped in the package, in order."""
    found: list[tuple[int, str, str]] = []
    for entry in resources.files("edge.store").joinpath("migrations").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text("utf-8")))
    found.sort()
    for expected, (version, name, _) in enumerate(found, start=1):
        if version != expected:
            raise RuntimeError(f"migration {name} is out of sequence (expected {expected:04d})")
    return found


def latest_version() -> int:
    return len(migrations())


def migrate(conn: sqlite3.Connection, path: str) -> int:
    """Bring the file up to the latest schema; returns the version it had before."""
    current = int(conn.execute("PRAGMA user_version").fetchone()[0])
    steps = migrations()
    if current > len(steps):
        raise SchemaTooNew(
            f"{path}: schema version {current} was written by a newer kitchen-edge "
            f"(this one knows up to {len(steps)}); refusing to open it"
        )
    for version, _name, sql in steps[current:]:
        # executescript commits first; wrap each step so a failed one leaves no trace.
        conn.executescript(f"BEGIN IMMEDIATE;\n{sql}\nPRAGMA user_version = {version};\nCOMMIT;")
    # A file not yet in auto_vacuum=INCREMENTAL switches once, by a VACUUM, while it is small
    # (edge.store.retention). WAL is set before this, so even a new file needs the VACUUM.
    ensure_incremental_vacuum(conn, path)
    return current
