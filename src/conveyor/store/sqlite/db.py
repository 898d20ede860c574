"""The SQLite connection under ``SQLiteStore``: URL parsing, pragmas, SQL files, group commit.

Group commit: every write runs inside one open transaction. The first write of a loop
iteration opens it (``BEGIN``) and schedules the commit with ``loop.call_soon``, so all the
writes that arrive in the same iteration -- from every connection of the server -- share one
``COMMIT``. Durable callers then await a future resolved after that commit; ``reserve``,
``ack`` and ``fail`` do not wait (base.py "Durability").

Checkpoints (copying the WAL back into the database file, with an fsync of each) run on a
thread of their own with their own connection, never inside a ``COMMIT`` on the event loop,
where SQLite's automatic checkpoint stalled every server connection for 5-25 ms once per
4 MiB of WAL. See docs/design/sqlite.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import resources
from urllib.parse import parse_qsl, unquote, urlsplit

from conveyor.errors import StoreError

__all__ = [
    "SCHEMA_VERSION",
    "Checkpointer",
    "Database",
    "SQLiteOptions",
    "load_queries",
    "split_statements",
]

log = logging.getLogger("conveyor.store.sqlite")

SCHEMA_VERSION = 1  # PRAGMA user_version written by sql/schema.sql
_SYNC_MODES = {"normal": "NORMAL", "full": "FULL"}
_NAME_LINE = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def load_queries(filename: str) -> dict[str, str]:
    """The ``-- name: x`` sections of one file in ``conveyor/store/sqlite/sql/``."""
    text = resources.files("conveyor.store.sqlite").joinpath("sql", filename).read_text("utf-8")
    parts = _NAME_LINE.split(text)
    # parts = [header, name1, body1, name2, body2, ...]
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}


def split_statements(script: str) -> list[str]:
    """A multi-statement section as single statements (they end with ``;`` at a line end)."""
    return [s.strip() for s in re.split(r";\s*$", script, flags=re.MULTILINE) if s.strip()]


@dataclass(frozen=True, slots=True)
class SQLiteOptions:
    """What a ``sqlite:`` URL says. ``path`` ``:memory:`` is a private in-memory database."""

    path: str
    synchronous: str = "NORMAL"

    @classmethod
    def from_url(cls, url: str) -> SQLiteOptions:
        """Parse ``sqlite:///relative.db``, ``sqlite:////absolute.db`` or ``sqlite:///:memory:``
        (SQLAlchemy's convention), with an optional ``?sync=normal|full``."""
        parts = urlsplit(url)
        if parts.scheme != "sqlite":
            raise ValueError(f"not a sqlite URL: {url!r}")
        if parts.netloc:
            raise ValueError(f"sqlite URLs have no host: use sqlite:///path/to/file.db ({url!r})")
        path = unquote(parts.path[1:]) if parts.path.startswith("/") else unquote(parts.path)
        if not path:
            raise ValueError(f"sqlite URL without a file path: {url!r}")
        synchronous = "NORMAL"
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            if key != "sync":
                raise ValueError(f"unknown sqlite URL option {key!r} (known: sync)")
            if value.lower() not in _SYNC_MODES:
                raise ValueError(
                    f"sqlite URL option sync must be 'normal' or 'full', not {value!r}"
                )
            synchronous = _SYNC_MODES[value.lower()]
        return cls(path, synchronous)


CHECKPOINT_INTERVAL_SECONDS = 0.2
"""Shortest time between two background checkpoints: the WAL holds at most this much writing."""


class Checkpointer:
    """Runs ``PRAGMA wal_checkpoint(PASSIVE)`` on its own thread and connection.

    ``nudge()`` (after a commit: setting an event, nothing more) asks for a checkpoint; the
    thread runs at most one per ``interval`` seconds. A PASSIVE checkpoint takes no lock a
    writer needs, and SQLite releases the GIL while it copies and fsyncs, so the event loop
    keeps committing meanwhile. The WAL is then reused from its start by the next writer.
    """

    def __init__(self, path: str, interval: float = CHECKPOINT_INTERVAL_SECONDS) -> None:
        self.path = path
        self.interval = interval
        self.checkpoints = 0
        self._conn: sqlite3.Connection | None = None
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"conveyor-checkpoint {path}", daemon=True
        )

    def start(self) -> None:
        """Open the thread's connection here, so a file it cannot open fails ``open()`` with a
        clear error instead of leaving a WAL that nothing checkpoints; then start the thread."""
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA busy_timeout = 5000")
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        self._thread.start()

    def nudge(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        """Stop the thread after the checkpoint it may be running."""
        self._stopping.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join()
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _run(self) -> None:
        conn = self._conn
        assert conn is not None
        while True:
            self._wake.wait()
            if self._stopping.is_set():
                return
            self._wake.clear()
            try:
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                self.checkpoints += 1
            except sqlite3.Error as exc:  # the next nudge tries again; the WAL just grows
                log.warning("SQLite checkpoint of %s failed: %s", self.path, exc)
            if self._stopping.wait(self.interval):
                return


class Database:
    """One sqlite3 connection driven from the event-loop thread, with group commit.

    ``before_commit`` runs inside the transaction just before each ``COMMIT`` (the store
    writes its buffered counters there); ``after_rollback`` lets the store reload the state it
    mirrors in memory when a commit fails.
    """

    def __init__(self, options: SQLiteOptions) -> None:
        self.options = options
        self.commits = 0
        self.before_commit: Callable[[sqlite3.Connection], None] = lambda _conn: None
        self.after_rollback: Callable[[], None] = lambda: None
        self._conn: sqlite3.Connection | None = None
        self._in_transaction = False
        self._waiters: list[asyncio.Future[None]] = []
        self._commit_loop: asyncio.AbstractEventLoop | None = None
        self._commit_soon = False
        self.checkpointer: Checkpointer | None = None

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError("the SQLite store is not open")
        return self._conn

    def open(self, schema: str) -> sqlite3.Connection:
        path = self.options.path
        _check_directory(path)
        try:
            # check_same_thread=False: the store is only used from its event loop, which may
            # not be the thread that built it (e.g. a server started from a test thread).
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open SQLite database {path!r}: {exc}") from exc
        try:
            self._prepare(conn, schema)
        except BaseException as exc:
            conn.close()
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"cannot open SQLite database {path!r}: {exc}") from exc
            raise
        if path != ":memory:":
            checkpointer = Checkpointer(path)
            try:
                checkpointer.start()
            except sqlite3.Error as exc:
                conn.close()
                raise StoreError(f"cannot open SQLite database {path!r}: {exc}") from exc
            self.checkpointer = checkpointer
        self._conn = conn
        return conn

    def _prepare(self, conn: sqlite3.Connection, schema: str) -> None:
        if self.options.path != ":memory:":
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA wal_autocheckpoint = 0")  # the Checkpointer thread does it
        conn.execute(f"PRAGMA synchronous = {self.options.synchronous}")
        conn.execute("PRAGMA busy_timeout = 5000")
        conn.execute("PRAGMA temp_store = MEMORY")
        conn.execute("PRAGMA cache_size = -32768")  # 32 MiB of page cache
        conn.execute("PRAGMA journal_size_limit = 67108864")  # trim the WAL back to 64 MiB
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.options.path!r} has schema version {version}, made by a newer"
                f" conveyor; this one knows version {SCHEMA_VERSION}"
            )
        conn.executescript(schema)

    def close(self) -> None:
        if self._conn is None:
            return
        try:
            self.commit()
        finally:
            if self.checkpointer is not None:
                self.checkpointer.stop()
                self.checkpointer = None
            self._conn.close()  # the last connection to close checkpoints what is left
            self._conn = None

    # ------------------------------------------------------------- transactions

    def writer(self) -> sqlite3.Connection:
        """The connection, inside the open transaction (opened now, committed soon)."""
        conn = self.conn
        loop = asyncio.get_running_loop()
        if self._in_transaction and loop is not self._commit_loop:
            # the loop that was to commit has gone (a store reused across event loops)
            self.commit()
        if not self._in_transaction:
            conn.execute("BEGIN IMMEDIATE")
            self._in_transaction = True
            self._commit_loop = loop
            self._commit_soon = False
            # Nobody waits for this write yet (reserve/ack/fail may be committed late: a
            # crash re-delivers), so let more of them share one commit ...
            loop.call_later(LAZY_COMMIT_SECONDS, self.commit)
        return conn

    @contextlib.contextmanager
    def atomic(self) -> Iterator[sqlite3.Connection]:
        """One store method's writes: all of them or (on an error) none, inside the shared
        transaction. The caller updates its in-memory mirrors only after this block."""
        conn = self.writer()
        conn.execute("SAVEPOINT op")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK TO op")
            conn.execute("RELEASE op")
            raise
        conn.execute("RELEASE op")

    async def durable(self) -> None:
        """Return once everything written so far is committed."""
        if not self._in_transaction:
            return
        loop = asyncio.get_running_loop()
        if not self._commit_soon:
            # ... but a durable caller (PUSH) is answered after the commit at the end of
            # this loop iteration, shared by every caller that wrote in the same iteration.
            self._commit_soon = True
            loop.call_soon(self.commit)
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiters.append(waiter)
        await waiter

    def commit(self) -> None:
        """Commit the shared transaction and wake the durable callers waiting for it."""
        if not self._in_transaction or self._conn is None:
            return
        waiters, self._waiters = self._waiters, []
        conn = self._conn
        try:
            self.before_commit(conn)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            log.error("SQLite commit failed, rolling back: %s", exc)
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            self._in_transaction = False
            self.after_rollback()
            error = StoreError(f"SQLite commit failed: {exc}")
            for waiter in waiters:
                if _waiting(waiter):
                    waiter.set_exception(error)
            return
        self._in_transaction = False
        self.commits += 1
        if self.checkpointer is not None:
            self.checkpointer.nudge()
        for waiter in waiters:
            if _waiting(waiter):
                waiter.set_result(None)


LAZY_COMMIT_SECONDS = 0.005
"""How long writes nobody awaits may wait for their commit (they share it with later ones)."""


def _waiting(waiter: asyncio.Future[None]) -> bool:
    return not waiter.done() and not waiter.get_loop().is_closed()


def _check_directory(path: str) -> None:
    """A missing directory is the usual reason SQLite cannot open a file: say so, and say
    how a URL with three slashes is read (relative), since that is the usual mistake."""
    if path == ":memory:" or path.startswith("file:"):
        return
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(directory):
        return
    message = f"cannot open SQLite database {path!r}: the directory {directory} does not exist"
    if not os.path.isabs(path):
        message += (
            f" ({path!r} is relative to {os.getcwd()}; an absolute path takes four slashes: "
            f"sqlite:////{path})"
        )
    raise StoreError(message)
