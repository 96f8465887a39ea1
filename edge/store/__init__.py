"""The SQLite store: one file in state_dir, WAL, synchronous=FULL, one writer.

One module per aggregate holds all of its SQL (`orders`, `jobs`, `events`, `outbox`,
`calls`, `registry`, `kv`); their functions take a plain `sqlite3.Connection` and return
typed rows read by column name. Nothing outside this package writes SQL.
"""

from edge.store.db import DB_FILENAME, Priority, SchemaTooNew, Store, open_readonly
from edge.store.tx import Tx, as_tx

__all__ = ["DB_FILENAME", "Priority", "SchemaTooNew", "Store", "Tx", "as_tx", "open_readonly"]
