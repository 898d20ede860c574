"""The SQLite store (``sqlite:///path``): the durable default, one file, no other process.

* ``db.py``: the connection, pragmas, group commit and the checkpoint thread;
* ``store.py``: the job lifecycle (the ``Store`` contract of ``conveyor.store.base``);
* one module per further capability, mixed into ``SQLiteStore``;
* ``sql/*.sql``: every statement, each file opening with the tables it touches.

Design notes: docs/design/sqlite.md.
"""

from conveyor.store.sqlite.store import SQLiteStore

__all__ = ["SQLiteStore"]
