"""One write transaction as the kitchen sees it: the connection, and the changes it makes.

`Store.transact(fn)` hands `fn` a `Tx`. Store modules take `tx.conn` (a plain
`sqlite3.Connection`); the domain takes the `Tx` and records what it changed with
`tx.emit(change)`. After COMMIT the store publishes `tx.changes` to the feed; on rollback
nothing is published. `tx.savepoint()` wraps one message or event: rolled back, it also
drops the changes recorded inside it.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator

from edge.feed import Change


class Tx:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.changes: list[Change] = []

    def emit(self, change: Change) -> None:
        self.changes.append(change)

    @contextlib.contextmanager
    def savepoint(self, name: str = "unit") -> Iterator[None]:
        """A nested unit: an exception rolls back its writes and its changes, then
        propagates; the enclosing transaction goes on."""
        mark = len(self.changes)
        self.conn.execute(f"SAVEPOINT {name}")
        try:
            yield
        except BaseException:
            self.conn.execute(f"ROLLBACK TO {name}")
            self.conn.execute(f"RELEASE {name}")
            del self.changes[mark:]
            raise
        self.conn.execute(f"RELEASE {name}")


def as_tx(conn_or_tx: sqlite3.Connection | Tx) -> Tx:
    """For callers that run their own transaction on a plain connection (operator tools,
    tests): the changes are theirs to publish, or to drop."""
    return conn_or_tx if isinstance(conn_or_tx, Tx) else Tx(conn_or_tx)


__all__ = ["Tx", "as_tx"]
