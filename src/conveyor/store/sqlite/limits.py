"""Limits (``conveyor.store.limits``) in SQLite: throttle slots and buckets in memory.

One server process owns a SQLite file, so its slots and buckets need not be shared: they are
kept in this process, beside the queue mirrors of ``SQLiteStore``, and cost a FETCH no SQL.
What must outlive a restart does: the reservations. A queue's slots are rebuilt from its
reservations the first time a limited FETCH names it (and after a failed commit), each lease
from when its job was reserved. A bucket starts full after a restart.

``reserve_limited`` works out what each queue may give, then pops it through
``SQLiteStore._reserve_from`` (what ``reserve`` uses: checksums, damaged rows, outages alike)
and records the slots and tokens in the same step.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from conveyor.store.base import QueuedJob, Reservation
from conveyor.store.limits import (
    InProcessSlots,
    Limited,
    Limits,
    QueueLimit,
    SlotTable,
)
from conveyor.store.sqlite.db import Database, load_queries

__all__ = ["SQLiteLimits"]

_SQL = load_queries("limits.sql")


class SQLiteLimits(InProcessSlots, Limits):
    """Mixed into ``SQLiteStore``, whose queue mirrors (``_sizes``, ``_paused``) it uses."""

    if TYPE_CHECKING:  # SQLiteStore's
        _db: Database
        _sizes: dict[str, int]
        _paused: set[str]

        def _push(self, conn: sqlite3.Connection, jobs: Sequence[QueuedJob]) -> dict[str, int]: ...

        def _grow(self, added: dict[str, int]) -> None: ...

        def _notify(self, queues: Iterable[str]) -> None: ...

        def _reserve_from(
            self,
            queues: Sequence[str],
            rooms: Mapping[str, int] | None,
            wid: str,
            now: float,
            count: int,
        ) -> tuple[list[Reservation], Awaitable[None]]: ...

    def _limit_slots(self, queue: str, limit: QueueLimit) -> SlotTable:
        every: dict[str, SlotTable] | None = self.__dict__.get("_throttle_slots")
        if every is None:
            every = self.__dict__["_throttle_slots"] = {}
        table = every.get(queue)
        if table is None:  # first use since start (or a rollback): from the reservations
            table = every[queue] = SlotTable()
            for jid, wid, reserved_at, expires_at in self._db.read(
                _SQL["queue_reservations"], (queue,)
            ):
                table.add(jid, wid, reserved_at + limit.timeout if limit.timeout else expires_at)
        return table

    def _forget_limits(self) -> None:
        """Drop the slot mirrors (rebuilt from the reservations on their next use)."""
        self.__dict__.pop("_throttle_slots", None)

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
            committed = self._db.pending
            self._grow(added)
            await committed
        return refused

    def _prune(self, slots: SlotTable, now: float) -> None:
        slots.expire(now)
        if slots.leases:
            rows = self._db.read(_SQL["reserved"], (json.dumps(list(slots.leases)),))
            slots.keep({jid for (jid,) in rows})

    async def reserve_limited(
        self,
        queues: Sequence[str],
        wid: str,
        now: float,
        count: int,
        limits: Mapping[str, QueueLimit],
    ) -> Limited:
        limited, committed = self._reserve_limited(queues, wid, now, count, limits)
        if committed is not None and limited.reservations and self._db.careful:
            await committed  # during an outage, hand out only what is recorded
        return limited

    def reserve_limited_now(
        self,
        queues: Sequence[str],
        wid: str,
        now: float,
        count: int,
        limits: Mapping[str, QueueLimit],
    ) -> Limited | None:
        if self._db.careful:
            return None  # reserve_limited waits for its commit then
        return self._reserve_limited(queues, wid, now, count, limits)[0]

    def _reserve_limited(
        self,
        queues: Sequence[str],
        wid: str,
        now: float,
        count: int,
        limits: Mapping[str, QueueLimit],
    ) -> tuple[Limited, Awaitable[None] | None]:
        """``reserve_limited`` in this step: what it reserved, and the commit recording it."""
        blocked: dict[str, float | None] = {}
        self._db.check_writable()  # during an outage a FETCH is refused, never answered
        names = queues if len(queues) == 1 else dict.fromkeys(queues)
        ready = [n for n in names if self._sizes.get(n, 0) > 0 and n not in self._paused]
        if not ready or count <= 0:
            return Limited([]), None
        plan: list[str] = []
        rooms: dict[str, int] = {}
        limited: dict[str, QueueLimit] = {}
        for name in ready:  # how many each queue may give, before anything is popped
            limit = limits.get(name)
            if limit is None or not limit.limits_fetch:
                plan.append(name)
                continue
            room, wait = self._limit_room(name, limit, wid, now)
            if room < 1:
                blocked[name] = wait
            else:
                plan.append(name)
                rooms[name] = room
                limited[name] = limit
        if not plan:
            return Limited([], blocked), None
        taken, committed = self._reserve_from(plan, rooms, wid, now, count)
        for name, limit in limited.items():  # before any await: the slots go with the jobs
            got = taken if len(plan) == 1 else [r for r in taken if r.queue == name]
            if got:
                self._take_limited(name, limit, got, now)
        return Limited(taken, blocked), committed
