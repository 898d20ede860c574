"""The manager's background loops: promotion of due jobs, reservation expiry, worker reaping,
the dead-set and records janitors, and the loops of the features.

Every loop is safe to run on several servers over one shared store at once: each move is
conditional in the store (only if the entry is still where it was read), so a job is never
promoted or expired twice. A loop that fails logs and carries on at its next tick (except
while the store cannot commit: the store logs that itself, once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from conveyor.errors import StoreError, StoreUnavailable
from conveyor.job import decode_job
from conveyor.logs import RateLimitedLog
from conveyor.store.base import SetMove, SortedSet
from conveyor.timefmt import now_iso

if TYPE_CHECKING:
    from conveyor.manager.core import Manager

__all__ = ["BackgroundTasks"]

log = logging.getLogger("conveyor.manager.tasks")


def _fresh_stats() -> dict[str, dict[str, Any]]:
    def task() -> dict[str, Any]:
        return {"enqueued": 0, "cycles": 0, "wall_time_sec": 0.0}

    return {
        "Scheduled": task(),
        "Retries": task(),
        "Dead": task(),
        "Busy": {"reaped": 0},
        "Workers": {"reaped": 0},
    }


class BackgroundTasks:
    def __init__(self, manager: Manager) -> None:
        self.manager = manager
        self.stats = _fresh_stats()
        self._tasks: list[asyncio.Task[None]] = []

    def reset_stats(self) -> None:
        self.stats = _fresh_stats()

    def start(self) -> None:
        config = self.manager.config
        loops: list[tuple[str, float, Callable[[], Awaitable[None]]]] = [
            ("promote", config.scheduler_interval_seconds, self.promote_due),
            ("reservations", config.reaper_interval_seconds, self.expire_reservations),
            ("workers", config.worker_reaper_interval_seconds, self.reap_workers),
            ("dead", config.dead_purge_interval_seconds, self.purge_dead),
            ("records", config.records_purge_interval_seconds, self.purge_records),
        ]
        for feature in self.manager.features:
            loops += [(loop.name, loop.interval_seconds, loop.step) for loop in feature.loops()]
        for name, interval, step in loops:
            task = asyncio.create_task(self._every(interval, step), name=f"conveyor-{name}")
            self._tasks.append(task)

    @property
    def loop_names(self) -> list[str]:
        """The loops running now (``conveyor-<name>``), the manager's and the features'."""
        return [task.get_name() for task in self._tasks]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    async def _every(self, interval: float, step: Callable[[], Awaitable[None]]) -> None:
        trouble = RateLimitedLog(log)  # one per loop: another loop's success says nothing here
        while True:
            try:
                await step()
            except asyncio.CancelledError:
                raise
            except StoreUnavailable:
                pass  # the store logs the outage, once, and retries by itself
            except StoreError as exc:
                trouble.problem("background task %s failed: %s", step.__name__, exc)
            except Exception as exc:
                trouble.problem(
                    "background task %s failed; retrying next tick", step.__name__, exc_info=exc
                )
            else:
                trouble.ok("background task %s works again", step.__name__)
            await asyncio.sleep(interval)

    # ------------------------------------------------------------------ the steps

    async def promote_due(self) -> None:
        await self._promote(SortedSet.SCHEDULED, "Scheduled")
        await self._promote(SortedSet.RETRIES, "Retries")

    async def _promote(self, name: SortedSet, label: str) -> None:
        started = time.perf_counter()
        manager = self.manager
        batch = manager.config.scheduler_batch
        moved = 0
        while True:
            due = await manager.store.due_entries(name, time.time(), batch)
            if not due:
                break
            enqueued_at = now_iso()
            moves = []
            for entry in due:
                job = decode_job(entry.payload)
                job.enqueued_at = enqueued_at
                moves.append(SetMove(entry, manager.queued(job)))
            moved += await manager.store.move_to_queue(name, moves)
            if len(due) < batch:
                break
        stats = self.stats[label]
        stats["cycles"] += 1
        stats["enqueued"] += moved
        stats["wall_time_sec"] += time.perf_counter() - started

    async def expire_reservations(self) -> None:
        batch = self.manager.config.scheduler_batch
        while True:
            expired = await self.manager.expire_reservations(batch)
            self.stats["Busy"]["reaped"] += expired
            if expired < batch:
                break

    async def reap_workers(self) -> None:
        self.stats["Workers"]["reaped"] += await self.manager.reap_workers()

    async def purge_dead(self) -> None:
        started = time.perf_counter()
        await self.manager.purge_dead()
        stats = self.stats["Dead"]
        stats["cycles"] += 1
        stats["wall_time_sec"] += time.perf_counter() - started

    async def purge_records(self) -> None:
        """Delete expired records (their readers already ignore them): space, not behaviour."""
        batch = self.manager.config.scheduler_batch
        while await self.manager.store.purge_records(time.time(), batch) >= batch:
            pass
