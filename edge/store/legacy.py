"""The connection-level write call the spooler still makes until issue 10 lands.

The spooler (edge/printing/spooler.py, being reworked on main) runs `transact(fn)` with
functions of a plain `sqlite3.Connection`. This wrapper keeps that shape over the Tx-based
`Store`; what such a transaction changes is handed on by the spooler's own callbacks. It goes
away when the spooler records its changes on a `Tx` (phase B of the house).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from edge.store.db import Store

T = TypeVar("T")


class ConnStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    @property
    def path(self) -> Path:
        return self.store.path

    async def transact(self, fn: Callable[[sqlite3.Connection], T], *,
                       durable: bool = True) -> T:
        return await self.store.transact(lambda tx: fn(tx.conn), durable=durable)

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self.store.read(fn)


__all__ = ["ConnStore"]
