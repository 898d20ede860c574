"""WAL checkpoints on a thread of their own (docs/design/sqlite.md, "Checkpoints").

Copying the WAL back into the database file (with an fsync of each) runs here, with its own
connection, never inside a ``COMMIT`` on the event loop, where SQLite's automatic checkpoint
stalled every server connection for 5-25 ms once per 4 MiB of WAL.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time

__all__ = ["CHECKPOINT_INTERVAL_SECONDS", "Checkpointer"]

log = logging.getLogger("conveyor.store.sqlite")

CHECKPOINT_INTERVAL_SECONDS = 0.2
"""Shortest time between two background checkpoints: the WAL holds at most this much writing."""
FAILURE_REMINDER_SECONDS = 60.0
"""A checkpoint failing again and again (a full disk) is logged once, then once a minute."""


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
        self._failing_since: float | None = None
        self._told_at = 0.0
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
            except sqlite3.Error as exc:  # the next nudge tries again; the WAL just grows
                self._failed(exc)
            else:
                self.checkpoints += 1
                if self._failing_since is not None:
                    log.warning(
                        "SQLite checkpoints of %s work again, after %.0f s",
                        self.path,
                        time.monotonic() - self._failing_since,
                    )
                    self._failing_since = None
            if self._stopping.wait(self.interval):
                return

    def _failed(self, exc: sqlite3.Error) -> None:
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        elif now - self._told_at < FAILURE_REMINDER_SECONDS:
            return
        self._told_at = now
        log.warning("SQLite checkpoint of %s failed (the WAL grows meanwhile): %s", self.path, exc)
