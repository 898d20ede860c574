"""An online backup of a SQLite store: a consistent copy, taken while the server runs.

``backup(source, target)`` opens the database file read-only in this process and copies it
with SQLite's backup API in one step. The store runs in WAL mode, so that step reads one
consistent snapshot (every transaction committed before it started, none after) while the
server goes on committing: readers do not block the WAL's writer, nor it them. The copy is
written beside ``target``, switched to ``journal_mode=DELETE`` (one self-contained file),
checked with ``PRAGMA integrity_check``, fsynced, then renamed onto ``target``: a crash
leaves the old file or the new one, never half of one.

Why a file path and not a server command: SQLite is a local file, so whoever can run the
backup on that machine can read it, and the server needs no new verb, no admin password and
no disk space decisions of its own (docs/operations.md, Backup and restore).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

__all__ = ["BackupError", "BackupReport", "backup"]


class BackupError(Exception):
    """The backup could not be taken; the message says why. Nothing was written to target."""


@dataclass(frozen=True, slots=True)
class BackupReport:
    source: Path
    target: Path
    size_bytes: int
    schema_version: int


def backup(source: Path, target: Path, *, overwrite: bool = False) -> BackupReport:
    if not source.is_file():
        raise BackupError(f"no database at {source}")
    if target.exists() and not overwrite:
        raise BackupError(f"{target} exists; pass --force to replace it")
    if target.resolve() == source.resolve():
        raise BackupError("the backup cannot replace the database itself")
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    try:
        _copy(source, partial)
        with open(partial, "rb") as copied:
            os.fsync(copied.fileno())
        os.replace(partial, target)
        _fsync_directory(target.parent)
    except sqlite3.Error as exc:
        raise BackupError(f"cannot back up {source}: {exc}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
    with contextlib.closing(sqlite3.connect(target)) as conn:
        (version,) = conn.execute("PRAGMA user_version").fetchone()
    return BackupReport(source, target, target.stat().st_size, int(version))


def _copy(source: Path, partial: Path) -> None:
    # mode=ro: a missing or mistyped path must fail, not create an empty database
    src = sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
    try:
        with contextlib.closing(sqlite3.connect(partial)) as dst:
            src.backup(dst)  # pages=-1: one step, one snapshot
            dst.execute("PRAGMA journal_mode = DELETE").fetchall()
            problems = [row[0] for row in dst.execute("PRAGMA integrity_check")]
            if problems != ["ok"]:
                raise BackupError(f"the copy failed its integrity check: {problems[:5]}")
    finally:
        src.close()


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
