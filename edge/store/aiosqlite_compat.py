"""The one aiosqlite internal the store needs, isolated here.

aiosqlite runs every call on its own worker thread but has no public "run this function on
your thread with the sqlite3 connection". `Connection._execute(fn, *args)` is exactly that
(every public method of aiosqlite goes through it) and `Connection._conn` is the sqlite3
connection. aiosqlite is pinned in pyproject.toml; tests/test_library_compat.py fails with
this module's message if either moves.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from typing import TypeVar, cast

import aiosqlite

T = TypeVar("T")


class LibraryInternalMoved(RuntimeError):
    """A pinned library no longer has the internal an adapter relies on."""


_Execute = Callable[..., Awaitable[object]]


def _check(conn: aiosqlite.Connection) -> tuple[_Execute, sqlite3.Connection]:
    execute = getattr(conn, "_execute", None)
    raw = getattr(conn, "_conn", None)
    if not callable(execute) or not isinstance(raw, sqlite3.Connection):
        raise LibraryInternalMoved(
            "aiosqlite.Connection no longer has _execute(fn, *args) and _conn (the sqlite3 "
            "connection); edge/store/aiosqlite_compat.py must be adapted to this aiosqlite "
            f"({getattr(aiosqlite, '__version__', '?')})")
    return execute, raw


async def run_on_thread(conn: aiosqlite.Connection,
                        fn: Callable[[sqlite3.Connection], T]) -> T:
    """Run `fn(sqlite3_connection)` on the connection's own worker thread, as one unit."""
    execute, raw = _check(conn)
    return await cast(Callable[..., Awaitable[T]], execute)(fn, raw)


__all__ = ["LibraryInternalMoved", "run_on_thread"]
