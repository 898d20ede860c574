"""Opening a database file: its schema version, a structure check, migrations, creation.

Before anything is written the file's structure is checked with ``PRAGMA quick_check``
(every b-tree page and cell: 0.2 s for a million queued jobs, 230 MB, cached). A damaged file is
refused with one line that says what to do (docs/operations.md, "When things fail"): serving
from it handed out wrong payloads, answered ``internal error`` to every FETCH and re-delivered
acknowledged jobs. What quick_check cannot see -- changed bytes inside a payload -- the
payload checksums catch (``damage.py``).
"""

from __future__ import annotations

import sqlite3

from conveyor.errors import StoreError
from conveyor.store.sqlite.db import load_queries, split_statements

__all__ = ["SCHEMA_VERSION", "damaged", "prepare"]

SCHEMA_VERSION = 4
"""PRAGMA user_version written by sql/schema.sql; older files are migrated in place.
1: no payload checksums. 2: reservations in a table of their own (now claimed queue rows).
3: unique locks only in the ``claims`` table (now in the job rows: ``ukey``, claims.py)."""

_SCHEMA = load_queries("schema.sql")
# from version -> the section that upgrades it by one
_MIGRATIONS = {1: "migrate_1_to_2", 2: "migrate_2_to_3", 3: "migrate_3_to_4"}
_RECOVERY = "see 'When things fail' in docs/operations.md (sqlite3 .recover, or a backup)"


def damaged(path: str, problem: str) -> StoreError:
    """The one-line error for a damaged file."""
    problem = " ".join(problem.split())  # quick_check may answer on several lines
    return StoreError(f"SQLite database {path!r} is damaged ({problem}); not starting: {_RECOVERY}")


def prepare(conn: sqlite3.Connection, path: str) -> None:
    """Check an existing file, then create or upgrade the schema, in one transaction."""
    version = schema_version(conn)
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{path!r} has schema version {version}, made by a newer"
            f" conveyor; this one knows version {SCHEMA_VERSION}"
        )
    if version:
        check_structure(conn, path)
    conn.execute("BEGIN IMMEDIATE")
    try:
        while version in _MIGRATIONS:
            for statement in split_statements(_SCHEMA[_MIGRATIONS[version]]):
                conn.execute(statement)
            version += 1
        for statement in split_statements(_SCHEMA["create"]):
            conn.execute(statement)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def schema_version(conn: sqlite3.Connection) -> int:
    """``PRAGMA user_version``; for a file that has conveyor's tables but lost its version
    (``sqlite3 .dump`` does not carry it: docs/operations.md), the version its columns show."""
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    if version:
        return int(version)
    columns = {row[1] for row in conn.execute("PRAGMA table_info(queue_jobs)")}
    if not columns:
        return 0  # a new file
    if "ukey" in columns:
        return 4
    if "expires_at" in columns:
        return 3
    return 2 if "crc" in columns else 1


def check_structure(conn: sqlite3.Connection, path: str) -> None:
    """``PRAGMA quick_check``: raise ``damaged`` unless it finds nothing wrong."""
    try:
        rows = conn.execute("PRAGMA quick_check(5)").fetchall()
    except sqlite3.DatabaseError as exc:  # it may fail outright on a page it cannot read
        raise damaged(path, str(exc)) from exc
    problems = [str(row[0]) for row in rows if row[0] != "ok"]
    if problems:
        raise damaged(path, "; ".join(problems))
