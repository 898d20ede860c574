"""The SQLite connection under ``SQLiteStore``: URL parsing, pragmas, SQL files, group commit.

Group commit: every write runs inside one open transaction. The first write opens it
(``BEGIN``); it is committed 5 ms later, or at the end of the loop iteration as soon as
someone waits for it, so all the writes of that time -- from every connection of the server --
share one ``COMMIT``.

Each transaction is a ``Commit``: a write knows the very transaction that holds it, and
awaiting that ``Commit`` returns once it is committed or raises if it failed. Durability is
never inferred from "no transaction is open": that transaction may have failed before anyone
waited (docs/design/sqlite.md, "Durability of each write").

A failed commit (disk full, I/O error) is rolled back, and the store refuses writes until a
probe commits again (``health.CommitHealth``). Checkpoints run on their own thread
(``checkpoint.Checkpointer``). See docs/design/sqlite.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import sqlite3
import time
import zlib
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from conveyor.errors import StoreError, StoreUnavailable
from conveyor.store.base import Durability
from conveyor.store.sqlite.checkpoint import Checkpointer
from conveyor.store.sqlite.health import CommitHealth

__all__ = [
    "LAZY_COMMIT_SECONDS",
    "Commit",
    "Database",
    "SQLiteOptions",
    "load_queries",
    "split_statements",
]

log = logging.getLogger("conveyor.store.sqlite")

LAZY_COMMIT_SECONDS = 0.005
"""How long writes nobody awaits may wait for their commit (they share it with later ones)."""
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


class Commit(Durability):
    """One transaction of the group commit, as the writes it holds see it.

    ``await commit`` returns once it is committed, and raises ``StoreUnavailable`` when it
    failed and was rolled back -- whenever the awaiting starts, before or after that.
    ``when_done`` does the same with a callback, without a future or a task.
    """

    __slots__ = ("_callbacks", "_db", "_waiters", "done", "error")

    def __init__(self, db: Database) -> None:
        self._db = db
        self._waiters: list[asyncio.Future[None]] = []
        self._callbacks: list[Callable[[Exception | None], None]] = []
        self.done = False
        self.error: str | None = None

    def __await__(self) -> Generator[Any, None, None]:
        return self._wait().__await__()

    async def _wait(self) -> None:
        if not self.done:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            self._db.commit_soon()
            await waiter
        elif self.error is not None:
            raise StoreUnavailable(self.error)

    def when_done(self, callback: Callable[[Exception | None], None]) -> None:
        if self.done:
            callback(None if self.error is None else StoreUnavailable(self.error))
            return
        self._callbacks.append(callback)
        self._db.commit_soon()

    def settle(self, error: str | None) -> None:
        self.done = True
        self.error = error
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if waiter.done() or waiter.get_loop().is_closed():
                continue
            if error is None:
                waiter.set_result(None)
            else:  # one exception per waiter: each is raised (and given a traceback) once
                waiter.set_exception(StoreUnavailable(error))
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            try:
                callback(None if error is None else StoreUnavailable(error))
            except Exception:  # one broken callback must not keep the others from theirs
                log.exception("a commit callback failed")


class Database:
    """One sqlite3 connection driven from the event-loop thread, with group commit.

    ``before_commit`` runs inside the transaction just before each ``COMMIT`` (the store
    writes its buffered counters there); ``after_rollback`` lets the store reload the state it
    mirrors in memory when a transaction is lost, and ``after_recovery`` tells it that writes
    are accepted again after an outage.
    """

    def __init__(self, options: SQLiteOptions) -> None:
        self.options = options
        self.commits = 0
        self.before_commit: Callable[[sqlite3.Connection], None] = lambda _conn: None
        self.after_rollback: Callable[[], None] = lambda: None
        self.after_recovery: Callable[[], None] = lambda: None
        self.health = CommitHealth(options.path, self._probe)
        self.checkpointer: Checkpointer | None = None
        self._conn: sqlite3.Connection | None = None
        self._open: Commit | None = None  # the transaction open now, if any
        self._last = Commit(self)  # the last one opened
        self._last.settle(None)
        self._commit_loop: asyncio.AbstractEventLoop | None = None
        self._commit_soon = False
        self._mirrors_stale = False

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError("the SQLite store is not open")
        return self._conn

    @property
    def writable(self) -> bool:
        """False while commits fail: every write is refused (``check_writable``)."""
        return self.health.refusal is None

    @property
    def careful(self) -> bool:
        """True from a failed commit until commits have worked for a while again: writes that
        usually do not wait for their commit (FETCH, ACK, FAIL) wait for it meanwhile, so an
        answer is never undone by a commit that fails on and off."""
        return self.health.in_outage

    def check_writable(self) -> None:
        if self.health.refusal is not None:
            raise self.health.refuse()

    # ------------------------------------------------------------- open / close

    def open(self, prepare: Callable[[sqlite3.Connection, str], None]) -> sqlite3.Connection:
        """Connect, set the pragmas, and let ``prepare`` check and create or migrate the
        schema; any failure is a ``StoreError`` with one clear line."""
        path = self.options.path
        _check_directory(path)
        try:
            # check_same_thread=False: the store is only used from its event loop, which may
            # not be the thread that built it (e.g. a server started from a test thread).
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open SQLite database {path!r}: {exc}") from exc
        try:
            self._settings(conn)
            prepare(conn, path)
            if path != ":memory:":
                self.checkpointer = Checkpointer(path)
                self.checkpointer.start()
        except BaseException as exc:
            conn.close()
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"cannot open SQLite database {path!r}: {exc}") from exc
            raise
        self._conn = conn
        return conn

    def _settings(self, conn: sqlite3.Connection) -> None:
        if self.options.path != ":memory:":
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA wal_autocheckpoint = 0")  # the Checkpointer thread does it
        conn.execute(f"PRAGMA synchronous = {self.options.synchronous}")
        conn.execute("PRAGMA busy_timeout = 5000")
        conn.execute("PRAGMA temp_store = MEMORY")
        conn.execute("PRAGMA cache_size = -32768")  # 32 MiB of page cache
        conn.execute("PRAGMA journal_size_limit = 67108864")  # trim the WAL back to 64 MiB
        # payload checksums in SQL: the migration, the start-up check (sqlite/damage.py)
        conn.create_function("conveyor_crc32", 1, zlib.crc32, deterministic=True)

    def close(self) -> None:
        if self._conn is None:
            return
        try:
            self.commit()
        finally:
            self.health.close()
            if self.checkpointer is not None:
                self.checkpointer.stop()
                self.checkpointer = None
            self._conn.close()  # the last connection to close checkpoints what is left
            self._conn = None

    # ------------------------------------------------------------- writing

    def writer(self) -> sqlite3.Connection:
        """The connection, inside the open transaction (opened now, committed soon).
        Raises ``StoreUnavailable`` during an outage."""
        conn = self.conn
        if self.health.refusal is not None:
            raise self.health.refuse()
        loop = asyncio.get_running_loop()
        if self._open is not None and loop is not self._commit_loop:
            # the loop that was to commit has gone (a store reused across event loops)
            self.commit()
        if self._open is None:
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                self._lost(exc)
                raise self.health.refuse() from exc
            self._open = self._last = Commit(self)
            self._commit_loop = loop
            self._commit_soon = False
            # Nobody waits for this write yet (reserve/ack/fail may be committed late: a
            # crash re-delivers), so let more of them share one commit ...
            loop.call_later(LAZY_COMMIT_SECONDS, self.commit)
        return conn

    def join(self) -> None:
        """``writer()`` for a change kept in memory until ``before_commit`` writes it (a
        unique lock): the open transaction, opened now if there is none. What ``writer()``
        checks, without its calls while a transaction of this loop is open and commits work."""
        if (
            self._open is None
            or self.health.refusal is not None
            or self._commit_loop is not asyncio.get_running_loop()
        ):
            self.writer()

    @property
    def latest(self) -> Commit:
        """The open transaction, else the last one (committed or lost): the one that holds
        the writes made in this step so far (``Store.durable``)."""
        return self._open or self._last

    @property
    def pending(self) -> Commit:
        """The transaction the writes just made are in (read it right after writing)."""
        if self._open is None:
            raise RuntimeError("no write is pending")
        return self._open

    @contextlib.contextmanager
    def atomic(self) -> Iterator[sqlite3.Connection]:
        """One store method's writes: all of them or (on an error) none, inside the shared
        transaction. The caller updates its in-memory mirrors only after this block; an
        SQLite error leaves it as a ``StoreError``."""
        conn = self.writer()
        try:
            conn.execute("SAVEPOINT op")
            yield conn
            conn.execute("RELEASE op")
        except BaseException as exc:
            self._undo(conn, exc)
            if isinstance(exc, sqlite3.Error):
                raise self._write_error(exc) from exc
            raise

    def write(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
        """One statement in the shared transaction (atomic by itself: no savepoint)."""
        conn = self.writer()
        try:
            return conn.execute(sql, params)
        except sqlite3.Error as exc:
            if not conn.in_transaction:
                self._lost(exc)
            raise self._write_error(exc) from exc

    def abandon(self, exc: BaseException) -> StoreError:
        """A method that wrote without a savepoint failed halfway (a statement held, the next
        did not): the open transaction cannot commit as it stands. It is rolled back as a
        failed commit is (``_lost``: its writes are lost, its waiters told, an outage
        starts). Returns the error to raise."""
        self._lost(exc)
        return self.health.refuse()

    def _undo(self, conn: sqlite3.Connection, exc: BaseException) -> None:
        if conn.in_transaction:
            try:
                conn.execute("ROLLBACK TO op")
                conn.execute("RELEASE op")
                return
            except sqlite3.Error as undo_exc:
                exc = undo_exc
        # After some errors (disk full, I/O error) SQLite rolls the whole transaction back
        # by itself: every write in it is lost, not only this method's.
        self._lost(exc)

    def _write_error(self, exc: sqlite3.Error) -> StoreError:
        if self.health.refusal is not None:
            return self.health.refuse()
        return StoreError(f"SQLite write failed: {exc}")

    def read(self, sql: str, params: Any = ()) -> list[Any]:
        """All rows of one query; an SQLite error (a damaged page) is a ``StoreError``."""
        try:
            return self.conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite read failed: {exc}") from exc

    # ------------------------------------------------------------- committing

    def commit_soon(self) -> None:
        """Someone waits for the open transaction: commit it at the end of this loop
        iteration (shared by every caller that wrote in the same iteration)."""
        if self._open is not None and not self._commit_soon:
            self._commit_soon = True
            asyncio.get_running_loop().call_soon(self.commit)

    def commit(self) -> None:
        """Commit the open transaction and settle its ``Commit``."""
        commit = self._open
        if commit is None or self._conn is None:
            return
        conn = self._conn
        try:
            self.before_commit(conn)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._lost(exc)
            return
        self._open = None
        self.commits += 1
        if self.checkpointer is not None:
            self.checkpointer.nudge()
        if self.health.in_outage:
            self.health.committed()
        commit.settle(None)

    def _lost(self, exc: BaseException) -> None:
        """The open transaction cannot commit: roll it back, reload the mirrors, tell its
        waiters, and start (or go on with) the outage."""
        commit, self._open = self._open, None
        conn = self._conn
        if conn is not None and conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        self.health.failed(exc)
        self._reload_mirrors()
        if commit is not None:
            commit.settle(f"SQLite commit failed: {exc}")

    def _reload_mirrors(self) -> bool:
        try:
            self.after_rollback()
        except sqlite3.Error as exc:  # reads fail too: try again when commits work again
            log.warning("cannot reload the SQLite store's state yet: %s", exc)
            self._mirrors_stale = True
            return False
        self._mirrors_stale = False
        return True

    def _probe(self) -> None:
        """One small real write, committed at once: does the disk take writes again?"""
        conn = self._conn
        if conn is None or self._open is not None:
            return
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(_PROBE, (time.time(),))
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            self.health.failed(exc)
            return
        if self._mirrors_stale and not self._reload_mirrors():
            self.health.failed(sqlite3.OperationalError("cannot read the database"))
            return
        self.commits += 1
        self.health.recovered()
        self.after_recovery()


_PROBE = load_queries("schema.sql")["probe"]


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
