"""One write transaction as the kitchen sees it: the connection, and the changes it makes.

`Store.transact(fn)` hands `fn` a `Tx`. Store modules take `tx.conn` (a plain
`sqlite3.Connection`); the domain takes the `Tx` and records what it changed with
`tx.emit(change)`. After COMMIT the store publishes `tx.changes` to the feed; on rollback
nothing is published. `tx.savepoint()` wraps one message or event: rolled back, it also
drops the changes recorded inside it.

Transactional reactions (`Store.react(kind, fn)`) are the outbox pattern's other half: `fn(tx,
change)` runs inside the transaction, on the writer's thread, for every change of `kind` that
survives, and may write in it (a partner call for an order's stage change), so what it
writes commits exactly when the change does. A change recorded inside a savepoint is reacted
to when that savepoint completes, still inside it: a reaction that fails rolls back that one
message or event with its change (it is dead-lettered), not the whole batch. Changes outside
any savepoint are reacted to just before COMMIT; a reaction failing there rolls the whole
transaction back. Reactions see the changes other reactions emit. They must be quick and
touch nothing but the `Tx`: they run on the database thread, not the event loop.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from edge.feed import Change

Reaction = Callable[["Tx", Any], None]
# A reaction that keeps answering changes with more changes is a loop, not a workload.
_MAX_REACTED = 100_000


class Tx:
    def __init__(self, conn: sqlite3.Connection,
                 reactions: Sequence[tuple[type[Change], Reaction]] = ()) -> None:
        self.conn = conn
        self.changes: list[Change] = []
        self._reactions = reactions
        self._reacted = 0          # changes[:_reacted] have had their reactions

    def emit(self, change: Change) -> None:
        self.changes.append(change)

    def react(self) -> None:
        """Run the reactions over every change not yet reacted to, in order, including the
        ones reactions emit."""
        if not self._reactions:
            self._reacted = len(self.changes)
            return
        while self._reacted < len(self.changes):
            if self._reacted >= _MAX_REACTED:
                raise RuntimeError("transactional reactions keep emitting changes: a loop")
            change = self.changes[self._reacted]
            self._reacted += 1
            for kind, reaction in self._reactions:
                if isinstance(change, kind):
                    reaction(self, change)

    @contextlib.contextmanager
    def savepoint(self, name: str = "unit") -> Iterator[None]:
        """A nested unit: an exception (its own, or a reaction's to its changes) rolls back
        its writes and its changes, then propagates; the enclosing transaction goes on."""
        mark, reacted = len(self.changes), self._reacted
        self.conn.execute(f"SAVEPOINT {name}")
        try:
            yield
            self.react()
        except BaseException:
            self.conn.execute(f"ROLLBACK TO {name}")
            self.conn.execute(f"RELEASE {name}")
            del self.changes[mark:]
            self._reacted = reacted
            raise
        self.conn.execute(f"RELEASE {name}")


def as_tx(conn_or_tx: sqlite3.Connection | Tx) -> Tx:
    """For callers that run their own transaction on a plain connection (operator tools,
    tests): the changes are theirs to publish, or to drop."""
    return conn_or_tx if isinstance(conn_or_tx, Tx) else Tx(conn_or_tx)


__all__ = ["Reaction", "Tx", "as_tx"]
