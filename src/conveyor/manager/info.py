"""The INFO document, in the exact shape of Faktory 1.9+ (faktory.md §3.8), plus a
``features`` section (each feature's numbers: unique locks, jobs expired, throttles, jobs
cancelled, aggregating groups, ...)."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from conveyor.manager.types import ServerStats
from conveyor.store.base import SortedSet
from conveyor.timefmt import now_iso

if TYPE_CHECKING:
    from conveyor.manager.core import Manager

__all__ = ["build_info", "rss_kb"]

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_kb() -> int:
    """Resident memory of this process in KiB (0 where /proc is not available)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE_SIZE // 1024
    except (OSError, IndexError, ValueError):
        return 0


async def build_info(manager: Manager, stats: ServerStats) -> dict[str, Any]:
    store = manager.store
    queues = await store.queue_sizes()
    sizes = {name: await store.set_size(name) for name in SortedSet}
    working = (await store.list_reservations(0, 0)).total
    workers = await store.list_workers()
    counters = await store.counters()
    tasks = manager.tasks.stats
    now = time.time()
    features = {}
    for feature in manager.features:
        section = await feature.info()
        if section is not None:
            features[feature.name] = section
    return {
        "now": now_iso(),
        "server_utc_time": time.strftime("%H:%M:%S UTC", time.gmtime(now)),
        "faktory": {
            "queues": queues,
            "sets": {
                "scheduled": sizes[SortedSet.SCHEDULED],
                "retries": sizes[SortedSet.RETRIES],
                "dead": sizes[SortedSet.DEAD],
                "working": working,
            },
            "tasks": {
                "Scheduled": {**tasks["Scheduled"], "size": sizes[SortedSet.SCHEDULED]},
                "Retries": {**tasks["Retries"], "size": sizes[SortedSet.RETRIES]},
                "Dead": {**tasks["Dead"], "size": sizes[SortedSet.DEAD]},
                "Busy": {"size": working, "reaped": tasks["Busy"]["reaped"]},
                "Workers": {"size": len(workers), "reaped": tasks["Workers"]["reaped"]},
            },
            "total_failures": counters.failures,
            "total_processed": counters.processed,
            "total_enqueued": sum(queues.values()),
            "total_queues": len(queues),
        },
        "server": {
            "description": manager.description,
            "faktory_version": manager.version,
            "uptime": int(now - manager.started_at),
            "connections": stats.connections,
            "command_count": stats.command_count,
            "used_memory_mb": rss_kb() // 1024,
        },
        "features": features,
    }
