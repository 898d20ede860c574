"""Listing a sorted set page by page, filtered or not (docs/design/sqlite.md, "Filters and
pages"): mixed into ``SQLiteStore``.

A filtered page costs one scan for the page and one for the total; the next page of the same
listing continues from where the last one ended (``PageCursor``), so scanning a whole filtered
set page by page (MUTATE, bulk actions) stays linear.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from conveyor.store.base import JobFilter, Page, SetEntry, SortedSet
from conveyor.store.filters import filter_matcher
from conveyor.store.sqlite.db import Database, load_queries

__all__ = ["PageCursor", "SetListing", "entry_of"]

_SETS = load_queries("sets.sql")


def entry_of(row: tuple[Any, ...]) -> SetEntry:
    score, jid, payload, queue, jobtype = row
    return SetEntry(score, jid, payload, queue, jobtype)


@dataclass(frozen=True, slots=True)
class PageCursor:
    """Where the last page of a set listing ended. A scan asking for the very next page of the
    same listing, with the set unchanged since, continues from (score, jid) through the index
    and reuses the total, instead of re-walking ``offset`` rows and re-counting: this keeps a
    MUTATE over 100,000 filtered entries linear. Any change to the set drops its cursor."""

    flt: JobFilter
    descending: bool
    next_offset: int
    score: float
    jid: str
    total: int

    def resumes(self, flt: JobFilter, descending: bool, offset: int) -> bool:
        return (flt, descending, offset) == (self.flt, self.descending, self.next_offset)


def _like_substring(text: str) -> str:
    """A LIKE pattern for ``text`` anywhere, its ``%``, ``_`` and ``\\`` taken literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


class SetListing:
    """``list_set`` and ``get_set_entries`` of the SQLite store."""

    _db: Database
    _set_sizes: dict[SortedSet, int]
    _cursors: dict[SortedSet, PageCursor]

    async def list_set(
        self,
        name: SortedSet,
        flt: JobFilter,
        offset: int,
        limit: int,
        *,
        descending: bool = False,
    ) -> Page[SetEntry]:
        offset, limit = max(offset, 0), max(limit, 0)
        if flt.jids:
            return self._list_jids(name, flt, offset, limit, descending)
        return self._list_filtered(name, flt, offset, limit, descending)

    def _list_jids(
        self, name: SortedSet, flt: JobFilter, offset: int, limit: int, descending: bool
    ) -> Page[SetEntry]:
        """Few entries by jid through the unique index; the rest of the filter in Python."""
        match = filter_matcher(flt)
        rows = self._db.read(_SETS["entries_by_jid"], (name, json.dumps(list(flt.jids))))
        found = sorted(
            (e for e in map(entry_of, rows) if match(e)),
            key=lambda e: (e.score, e.jid),
            reverse=descending,
        )
        return Page(found[offset : offset + limit], len(found))

    def _list_filtered(
        self, name: SortedSet, flt: JobFilter, offset: int, limit: int, descending: bool
    ) -> Page[SetEntry]:
        read = self._db.read
        direction = "desc" if descending else "asc"
        params: dict[str, Any] = {
            "name": name,
            "limit": limit,
            "queue": flt.queue or None,
            "jobtype": flt.jobtype or None,
            "pattern": flt.pattern or None,
            "text": _like_substring(flt.text) if flt.text else None,
        }
        cursor = self._cursors.get(name)
        if offset and cursor is not None and cursor.resumes(flt, descending, offset):
            params.update(score=cursor.score, jid=cursor.jid)
            rows = read(_SETS[f"filtered_after_{direction}"], params)
            total = cursor.total
        elif flt.is_empty:
            rows = read(_SETS[f"page_{direction}"], {**params, "offset": offset})
            total = self._set_sizes[name]
        else:
            rows = read(_SETS[f"filtered_page_{direction}"], {**params, "offset": offset})
            del params["limit"]
            ((total,),) = read(_SETS["filtered_count"], params)
        items = [entry_of(row) for row in rows]
        if items:
            last = items[-1]
            self._cursors[name] = PageCursor(
                flt, descending, offset + len(items), last.score, last.jid, total
            )
        return Page(items, total)

    async def get_set_entries(self, name: SortedSet, jids: Sequence[str]) -> list[SetEntry]:
        rows = self._db.read(_SETS["entries_by_jid"], (name, json.dumps(list(jids))))
        return [entry_of(row) for row in rows]
