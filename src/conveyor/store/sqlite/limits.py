"""Limits (``conveyor.store.limits``) in SQLite: ``sql/limits.sql``.

``reserve_limited`` pops jobs like ``SQLiteStore.reserve`` (``sql/queues.sql``) and, in the
same savepoint, records the throttle slots and updates the buckets of what it took.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from conveyor.store.base import QueuedJob, Reservation
from conveyor.store.limits import (
    Limited,
    Limits,
    LimitUsage,
    QueueLimit,
    bucket_tokens,
    room_for,
)
from conveyor.store.sqlite.db import Database, load_queries, split_statements

__all__ = ["SQLiteLimits"]

_SQL = load_queries("limits.sql")
_QUEUES = load_queries("queues.sql")
_RESERVATIONS = load_queries("reservations.sql")


class SQLiteLimits(Limits):
    """Mixed into ``SQLiteStore``, whose queue mirrors (``_sizes``, ``_paused``) it uses."""

    if TYPE_CHECKING:  # SQLiteStore's
        _db: Database
        _sizes: dict[str, int]
        _paused: set[str]

        def _push(self, conn: sqlite3.Connection, jobs: Sequence[QueuedJob]) -> dict[str, int]: ...

        def _grow(self, added: dict[str, int]) -> None: ...

        def _notify(self, queues: Iterable[str]) -> None: ...

    def _create_limits(self) -> None:
        self._db.conn.executescript(_SQL["create"])

    def _flush_limits(self) -> None:
        with self._db.atomic() as conn:
            for statement in split_statements(_SQL["flush"]):
                conn.execute(statement)

    async def enqueue_bounded(
        self, jobs: Sequence[QueuedJob], bounds: Mapping[str, int]
    ) -> list[QueuedJob]:
        refused: list[QueuedJob] = []
        accepted: list[QueuedJob] = []
        sizes: dict[str, int] = {}
        for job in jobs:
            bound = bounds.get(job.queue)
            size = sizes.get(job.queue, self._sizes.get(job.queue, 0))
            if bound is not None and size >= bound:
                refused.append(job)
            else:
                accepted.append(job)
                sizes[job.queue] = size + 1
        if accepted:
            with self._db.atomic() as conn:
                added = self._push(conn, accepted)
            self._grow(added)
            await self._db.durable()
        return refused

    def _limit_bucket(
        self, conn: sqlite3.Connection, queue: str, limit: QueueLimit, now: float
    ) -> float:
        row = conn.execute(_SQL["get_bucket"], (queue,)).fetchone()
        return bucket_tokens(row[0] if row else None, row[1] if row else now, now, limit)

    def _limit_room(
        self, conn: sqlite3.Connection, queue: str, limit: QueueLimit, wid: str, now: float
    ) -> tuple[int, float | None]:
        tokens = self._limit_bucket(conn, queue, limit, now) if limit.rate_limited else None
        if not limit.throttled:
            return room_for(limit, now, tokens=tokens)
        conn.execute(_SQL["expire_leases"], (queue, now))
        room, wait = 0, None
        for prune_ended in (False, True):  # ended reservations are looked for only when full
            if prune_ended:
                conn.execute(_SQL["prune_ended"], (queue,))
            params = {"queue": queue, "wid": wid}
            in_use, mine, soonest, soonest_mine = conn.execute(
                _SQL["slot_counts"], params
            ).fetchone()
            room, wait = room_for(
                limit,
                now,
                in_use=in_use,
                mine=mine,
                soonest_lease=soonest,
                soonest_mine=soonest_mine,
                tokens=tokens,
            )
            if room:
                break
        return room, wait

    def _take_limited(
        self,
        conn: sqlite3.Connection,
        queue: str,
        limit: QueueLimit,
        taken: list[Reservation],
        now: float,
    ) -> None:
        if limit.throttled:
            rows = [
                (queue, r.jid, r.wid, now + limit.timeout if limit.timeout else r.expires_at)
                for r in taken
            ]
            conn.executemany(_SQL["add_slot"], rows)
        if limit.rate_limited:
            tokens = self._limit_bucket(conn, queue, limit, now) - len(taken)
            conn.execute(_SQL["put_bucket"], (queue, tokens, now))

    async def reserve_limited(
        self,
        queues: Sequence[str],
        wid: str,
        now: float,
        count: int,
        limits: Mapping[str, QueueLimit],
    ) -> Limited:
        taken: list[Reservation] = []
        blocked: dict[str, float | None] = {}
        popped: dict[str, int] = {}
        ready = [
            n for n in dict.fromkeys(queues) if self._sizes.get(n, 0) > 0 and n not in self._paused
        ]
        if not ready or count <= 0:
            return Limited(taken)
        with self._db.atomic() as conn:
            for name in ready:
                want = count - len(taken)
                if want <= 0:
                    break
                limit = limits.get(name)
                limited = limit is not None and limit.limits_fetch
                if limit is not None and limited:
                    room, wait = self._limit_room(conn, name, limit, wid, now)
                    if room < 1:
                        blocked[name] = wait
                        continue
                    want = min(want, room)
                rows = conn.execute(_QUEUES["pop_jobs"], (name, want)).fetchall()
                rows.sort()
                got = [
                    Reservation(jid, name, payload, wid, now, now + reserve_for)
                    for _seq, jid, reserve_for, payload in rows
                ]
                conn.executemany(
                    _RESERVATIONS["insert_reservation"],
                    [(r.jid, r.queue, r.wid, r.reserved_at, r.expires_at, r.payload) for r in got],
                )
                if limit is not None and limited:
                    self._take_limited(conn, name, limit, got, now)
                popped[name] = len(got)
                taken += got
        for name, count_popped in popped.items():
            self._sizes[name] -= count_popped
        return Limited(taken, blocked)

    async def release_worker_slots(self, wid: str, queues: Collection[str]) -> list[str]:
        freed = []
        with self._db.atomic() as conn:
            for queue in queues:
                if conn.execute(_SQL["release_worker"], (queue, wid)).rowcount:
                    freed.append(queue)
        return freed

    async def limit_usage(
        self, limits: Mapping[str, QueueLimit], now: float
    ) -> dict[str, LimitUsage]:
        conn = self._db.conn
        usage = {}
        for queue, limit in limits.items():
            (in_use,) = conn.execute(_SQL["live_slots"], (queue, now)).fetchone()
            tokens = self._limit_bucket(conn, queue, limit, now) if limit.rate_limited else None
            usage[queue] = LimitUsage(int(in_use), tokens)
        return usage

    async def announce(self, queues: Collection[str]) -> None:
        self._notify(queues)
