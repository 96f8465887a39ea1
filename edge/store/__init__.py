"""The SQLite store: one file in state_dir, WAL, synchronous=FULL, one writer."""

from edge.store.db import DB_FILENAME, SchemaTooNew, Store, open_readonly

__all__ = ["DB_FILENAME", "SchemaTooNew", "Store", "open_readonly"]
