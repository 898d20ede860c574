"""Filtered pages of a Redis sorted set, linear when paged through (docs/design/hardening.md).

Redis cannot run our filter (a glob over the payload, a jobtype, a substring), so a filtered
listing reads the set a chunk at a time and filters in Python (``filter_entries``, which
yields to the event loop). Read naively, each page re-reads the set from the start: MUTATE
over N matching entries, which reads every page (1,000 a page) before it changes anything,
costs N/1000 full scans. Instead the store remembers where the last page of a listing ended
(``SetCursor``: the last entry's score, jid and rank). The next page of the same listing,
asked soon after, continues right after that entry if it is still there at that rank with
that score and the set has the same size -- then the page and its total are the ones a full
scan would give, reusing the total counted with the first page as the SQLite store does.
(Changes that cancel out -- as many entries added as removed, none moving the cursor's entry
-- go unseen: the page then continues after the last entry shown, and the total can be off
by the matches they added or removed.) When the set changed, the page is read from the start
again.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from conveyor.store.base import JobFilter, Page, SetEntry, SortedSet
from conveyor.store.filters import filter_entries
from conveyor.store.redis.codec import score_arg

__all__ = ["CURSOR_SECONDS", "FilteredListing", "ReadSet"]

CHUNK = 1000
"""Entries read per script call (a millisecond or so of Redis' time)."""
CURSOR_SECONDS = 10.0
"""How long the end of a page is remembered. The next page within this reuses the first
page's total, which entries added or removed after the cursor since may have made stale."""
MAX_CURSORS = 16
"""Listings remembered at once (a MUTATE and a few dashboard users)."""

ReadSet = Callable[..., Awaitable[tuple[int, list[SetEntry]]]]
"""``RedisStore._read_set``: ``(name, mode, *args) -> (zcard, entries)`` (zcard -1: the
"after" entry moved)."""


@dataclass(frozen=True, slots=True)
class SetCursor:
    """Where the last page of one listing (set, filter, order) ended: its last entry."""

    next_offset: int
    score: float
    jid: str
    rank: int  # of that entry in the whole set, in the listing's order
    zcard: int  # the set's size then
    total: int
    until: float  # time.monotonic() after which it is forgotten


@dataclass(frozen=True, slots=True)
class _Found:
    items: list[SetEntry]
    last_rank: int  # of items[-1], -1 without items
    zcard: int
    total: int


class FilteredListing:
    """``list_set`` with a filter (but no jids), for the Redis store (one per store)."""

    def __init__(self, read: ReadSet) -> None:
        self._read = read
        self._cursors: OrderedDict[tuple[SortedSet, JobFilter, bool], SetCursor] = OrderedDict()

    async def page(
        self, name: SortedSet, flt: JobFilter, offset: int, limit: int, descending: bool
    ) -> Page[SetEntry]:
        key = (name, flt, descending)
        cursor = self._cursors.pop(key, None)
        found: _Found | None = None
        if (
            cursor is not None
            and limit > 0
            and offset == cursor.next_offset > 0
            and time.monotonic() < cursor.until
        ):
            found = await self._resume(name, flt, cursor, limit, descending)
        if found is None:
            found = await self._scan(name, flt, offset, limit, descending)
        if found.items:
            last = found.items[-1]
            self._cursors[key] = SetCursor(
                offset + len(found.items),
                last.score,
                last.jid,
                found.last_rank,
                found.zcard,
                found.total,
                time.monotonic() + CURSOR_SECONDS,
            )
            while len(self._cursors) > MAX_CURSORS:
                self._cursors.popitem(last=False)
        return Page(found.items, found.total)

    async def _scan(
        self, name: SortedSet, flt: JobFilter, offset: int, limit: int, descending: bool
    ) -> _Found:
        """The whole set, once: the page's entries and how many match in all."""
        rev = "1" if descending else ""
        items: list[SetEntry] = []
        last_rank = zcard = -1
        total = start = 0
        while True:
            size, chunk = await self._read(name, "rank", start, start + CHUNK - 1, rev)
            matches = await filter_entries(flt, chunk)
            wanted = matches[max(offset - total, 0) : max(offset + limit - total, 0)]
            if wanted:
                items += wanted
                last_rank, zcard = start + _position(chunk, wanted[-1]), size
            total += len(matches)
            if len(chunk) < CHUNK:
                return _Found(items, last_rank, zcard, total)
            start += CHUNK

    async def _resume(
        self, name: SortedSet, flt: JobFilter, cursor: SetCursor, limit: int, descending: bool
    ) -> _Found | None:
        """Up to ``limit`` matching entries after the cursor's, reading no further than
        needed; None when the set changed since (its total would have to be counted again,
        and a change at or before the cursor moves the page), or while reading."""
        rev = "1" if descending else ""
        items: list[SetEntry] = []
        last_rank = -1
        score, jid, rank = cursor.score, cursor.jid, cursor.rank
        while len(items) < limit:
            zcard, chunk = await self._read(name, "after", score_arg(score), jid, rank, CHUNK, rev)
            if zcard != cursor.zcard:  # -1: the cursor's entry moved
                return None
            wanted = (await filter_entries(flt, chunk))[: limit - len(items)]
            if wanted:
                items += wanted
                last_rank = rank + 1 + _position(chunk, wanted[-1])
            if len(chunk) < CHUNK:
                break
            score, jid, rank = chunk[-1].score, chunk[-1].jid, rank + len(chunk)
        return _Found(items, last_rank, cursor.zcard, cursor.total)


def _position(chunk: list[SetEntry], entry: SetEntry) -> int:
    """Where ``entry`` (an object of ``chunk``: ``filter_entries`` keeps them) is in it."""
    for index in range(len(chunk) - 1, -1, -1):
        if chunk[index] is entry:
            return index
    raise ValueError("the entry is not in the chunk")
