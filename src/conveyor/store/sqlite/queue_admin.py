"""A queue's jobs as the operator sees them (sizes, heads, pages, finding, deleting, clearing)
and pausing or removing queues: mixed into ``SQLiteStore``, whose database and in-memory
queue sizes and pause flags it keeps up to date."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Sequence

from conveyor.store.base import Page, QueuedJob
from conveyor.store.sqlite.db import Database, load_queries

__all__ = ["SQLiteQueueAdmin"]

_QUEUES = load_queries("queues.sql")
_FIND_WINDOW = 50_000  # queue rows find_queued reads between two yields to the event loop


class SQLiteQueueAdmin:
    """Mixed into ``SQLiteStore``."""

    _db: Database
    _sizes: dict[str, int]  # every known queue -> its length
    _paused: set[str]

    def _notify(self, queues: Iterable[str]) -> None:  # provided by SQLiteStore
        raise NotImplementedError

    async def queue_sizes(self) -> dict[str, int]:
        return dict(self._sizes)

    async def queue_heads(self, names: Sequence[str]) -> dict[str, bytes | None]:
        heads: dict[str, bytes | None] = {}
        for name in names:
            rows = self._db.read(_QUEUES["queue_head"], (name,)) if self._sizes.get(name) else []
            heads[name] = rows[0][0] if rows else None
        return heads

    async def list_queue(self, name: str, offset: int, limit: int) -> Page[QueuedJob]:
        if self._sizes.get(name, 0) == 0:
            return Page([], 0)
        rows = self._db.read(_QUEUES["list_queue"], (name, max(limit, 0), max(offset, 0)))
        items = [QueuedJob(name, jid, payload, reserve_for) for jid, reserve_for, payload in rows]
        return Page(items, self._sizes[name])

    async def delete_queued(self, name: str, jids: Sequence[str]) -> int:
        if self._sizes.get(name, 0) == 0 or not jids:
            return 0
        with self._db.atomic() as conn:
            deleted = conn.execute(
                _QUEUES["delete_queued"], (name, json.dumps(list(jids)))
            ).rowcount
        committed = self._db.pending
        self._sizes[name] -= deleted
        await committed
        return deleted

    async def find_queued(
        self, jids: Sequence[str], queues: Sequence[str] | None = None
    ) -> list[QueuedJob]:
        ((low, high),) = self._db.read(_QUEUES["seq_range"])
        wanted, found = set(jids), []
        if low is None or not wanted:
            return []
        # A row keeps its seq while queued: walking seq windows misses no job that stays.
        for start in range(low, high + 1, _FIND_WINDOW):
            args = (start, start + _FIND_WINDOW, json.dumps(sorted(wanted)))
            for queue, jid, reserve_for, payload in self._db.read(_QUEUES["find_queued"], args):
                if jid in wanted and (queues is None or queue in queues):
                    wanted.discard(jid)
                    found.append(QueuedJob(queue, jid, payload, reserve_for))
            if not wanted:
                break
            await asyncio.sleep(0)  # ~3 ms a window: let the server's clients in between
        return found

    async def clear_queue(self, name: str) -> int:
        if self._sizes.get(name, 0) == 0:
            return 0
        with self._db.atomic() as conn:
            deleted = conn.execute(_QUEUES["delete_queue_jobs"], (name,)).rowcount
        committed = self._db.pending
        self._sizes[name] = 0
        await committed
        return int(deleted)

    async def paused_queues(self) -> set[str]:
        return set(self._paused)

    async def set_paused(self, names: Sequence[str], paused: bool) -> None:
        changed = [
            n for n in dict.fromkeys(names) if n in self._sizes and (n in self._paused) != paused
        ]
        if not changed:
            return
        with self._db.atomic() as conn:
            conn.executemany(_QUEUES["set_paused"], [(int(paused), n) for n in changed])
        committed = self._db.pending
        if paused:
            self._paused.update(changed)
        else:
            self._paused.difference_update(changed)
            self._notify(changed)  # a resumed queue may have jobs for waiting fetchers
        await committed

    async def remove_queues(self, names: Sequence[str]) -> None:
        known = [(n,) for n in dict.fromkeys(names) if n in self._sizes]
        if not known:
            return
        with self._db.atomic() as conn:
            conn.executemany(_QUEUES["delete_queue_jobs"], known)
            conn.executemany(_QUEUES["delete_queue"], known)
        committed = self._db.pending
        for (name,) in known:
            del self._sizes[name]
            self._paused.discard(name)
        await committed
