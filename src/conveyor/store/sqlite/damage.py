"""Payload checksums: a job whose bytes changed on disk is moved aside, never delivered.

``PRAGMA quick_check`` (schema.py) finds broken pages, not changed bytes inside a payload: a
flipped bit there handed workers a payload that differed from the one pushed, or was not even
UTF-8. So every row of ``queue_jobs`` (queued or reserved) and ``set_entries`` carries
``crc``, the CRC-32 of its payload, written with it. It is checked

* at open, for every row (``quarantine``): ~0.4 s per million jobs;
* each time a payload is about to be used -- ``reserve`` (FETCH), due entries (promotion),
  reservations read for FAIL and expiry (``intact``): one ``zlib.crc32`` per job, ~0.1 us for
  a 200-byte payload.

A row that fails the check is moved into ``damaged_jobs`` as it was found (docs/operations.md,
"When things fail", says how to inspect it) and logged.
"""

from __future__ import annotations

import logging
import sqlite3
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from conveyor.store.sqlite.db import load_queries

__all__ = [
    "DROP",
    "DROP_RESERVATION",
    "Damaged",
    "checksum",
    "intact",
    "move_aside",
    "quarantine",
    "report",
]

log = logging.getLogger("conveyor.store.sqlite")

_DAMAGE = load_queries("damage.sql")
_TABLES = ("queue_jobs", "reservations", "set_entries")

checksum = zlib.crc32
"""The checksum stored with each payload."""


def intact(payload: object, crc: object) -> bool:
    """Whether a payload read back is the one written (a damaged row may not even hold
    bytes any more)."""
    return isinstance(payload, bytes) and zlib.crc32(payload) == crc


@dataclass(frozen=True, slots=True)
class Damaged:
    """A row whose payload failed its checksum. ``source``: ``queue_jobs``,
    ``reservations`` or ``set_entries:<set name>``."""

    source: str
    jid: str
    queue: str
    crc: int
    payload: bytes


def move_aside(conn: sqlite3.Connection, found: Sequence[Damaged]) -> None:
    """Keep the damaged rows in ``damaged_jobs`` (the caller has removed them from where
    they were, in the same transaction)."""
    now = time.time()
    conn.executemany(
        _DAMAGE["move_aside"], [(now, d.source, d.jid, d.queue, d.crc, d.payload) for d in found]
    )


def report(found: Sequence[Damaged]) -> None:
    names = ", ".join(f"{d.jid} ({d.source})" for d in found[:20])
    more = f" and {len(found) - 20} more" if len(found) > 20 else ""
    log.error(
        "moved %d damaged jobs aside into the damaged_jobs table (their payload no longer"
        " matches its checksum; see 'When things fail' in docs/operations.md): %s%s",
        len(found),
        names,
        more,
    )


def quarantine(conn: sqlite3.Connection) -> list[Damaged]:
    """At open: move every row whose payload fails its checksum aside, in one transaction."""
    found: list[Damaged] = []
    conn.execute("BEGIN IMMEDIATE")
    try:
        for table in _TABLES:
            rows = conn.execute(_DAMAGE[f"scan_{table}"]).fetchall()
            for _key, jid, queue, crc, payload, *set_name in rows:
                source = f"{table}:{set_name[0]}" if set_name else table
                found.append(Damaged(source, str(jid), str(queue), crc, payload))
            conn.executemany(_DAMAGE[f"drop_{table}"], [(row[0],) for row in rows])
        if found:
            move_aside(conn, found)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    if found:
        report(found)
    return found


DROP = {table: _DAMAGE[f"drop_{table}"] for table in _TABLES}
"""The statement that removes one row of each source by its key (seq, seq, id)."""
DROP_RESERVATION = _DAMAGE["drop_reservation"]
"""The statement that removes one reservation by its jid."""
