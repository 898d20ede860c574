"""Throttles (Faktory Enterprise's ``throttles.toml``, reference §4.5): how many jobs of a queue
may run at once.

    [throttles]
    instagram = { concurrency = 4, timeout = 60 }   # at most 4 reserved at once, all servers
    bulk      = { worker = 5, timeout = 60 }        # at most 5 per worker process (wid)

in the server's TOML or any ``conf.d/*.toml`` (both keys may be given together). Enforced at
FETCH (``Store.reserve_limited``, atomic with the reservation): a saturated queue is skipped
and the FETCH serves the next queue in its list, or waits. A slot is freed by ACK, FAIL,
reservation expiry, the worker's death (its last connection closed, or it was reaped), or
``timeout`` seconds after it was taken, whichever comes first (no ``timeout``: as long as the
reservation). A FETCH held back by a throttle is woken, never polled: a freed slot is announced
to every server (``FlowControl``), and a lease running out by a timer.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Self

from conveyor.errors import ConfigError
from conveyor.manager.features.base import Feature
from conveyor.manager.features.queues_table import positive
from conveyor.manager.validation import QUEUE_NAME
from conveyor.store.limits import QueueLimit

__all__ = ["Throttle", "Throttles"]

THROTTLE_KEYS = ("concurrency", "worker", "timeout")


@dataclass(frozen=True, slots=True)
class Throttle:
    concurrency: int = 0
    worker: int = 0
    timeout: float = 0.0

    def limit(self) -> QueueLimit:
        return QueueLimit(
            concurrency=self.concurrency, per_worker=self.worker, timeout=self.timeout
        )


class Throttles(Feature):
    name = "throttles"
    tables = ("throttles",)

    def __init__(self, throttles: Mapping[str, Throttle] | None = None) -> None:
        self.throttles = dict(throttles or {})

    @classmethod
    def from_config(cls, tables: Mapping[str, Any]) -> Self:
        table = tables.get("throttles", {})
        if not isinstance(table, Mapping):
            raise ConfigError(f"[throttles] must be a table, not {table!r}")
        return cls({name: _throttle(name, value) for name, value in table.items()})

    def reconfigure(self, new: Self) -> None:
        self.throttles = new.throttles

    def queue_limits(self) -> Mapping[str, QueueLimit]:
        return {name: throttle.limit() for name, throttle in self.throttles.items()}

    async def usage(self) -> list[dict[str, Any]]:
        """Each throttle now: its limits, slots in use, jobs and FETCHes waiting."""
        manager = self.manager
        limits = {name: t.limit() for name, t in self.throttles.items()}
        used = await manager.store.limit_usage(limits, time.time()) if limits else {}
        sizes = await manager.store.queue_sizes() if limits else {}
        return [
            {
                "queue": name,
                "concurrency": throttle.concurrency,
                "worker": throttle.worker,
                "timeout": throttle.timeout,
                "in_use": used[name].in_use,
                "queued": sizes.get(name, 0),
                "waiting_fetches": manager.waiters.waiting_on(name),
            }
            for name, throttle in sorted(self.throttles.items())
        ]

    async def info(self) -> Mapping[str, Any] | None:
        if not self.throttles:
            return None
        return {row.pop("queue"): row for row in await self.usage()}


def _throttle(name: str, value: Any) -> Throttle:
    where = f"[throttles] {name}"
    if QUEUE_NAME.fullmatch(name) is None:
        raise ConfigError(f"{where}: queue names must match [a-zA-Z0-9._-]+")
    if not isinstance(value, Mapping):
        raise ConfigError(
            f"{where}: expected a table such as {{ concurrency = 4, timeout = 60 }}, got {value!r}"
        )
    for key in value:
        if key not in THROTTLE_KEYS:
            raise ConfigError(f"{where}: unknown key {key!r} (known: {', '.join(THROTTLE_KEYS)})")
    counts = {
        key: _slots(value[key], f"{where} {key}")
        for key in ("concurrency", "worker")
        if key in value
    }
    if not counts:
        raise ConfigError(f"{where}: needs concurrency (all workers) or worker (per worker)")
    timeout = positive(value["timeout"], f"{where} timeout") if "timeout" in value else 0.0
    return Throttle(counts.get("concurrency", 0), counts.get("worker", 0), timeout)


def _slots(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{where}: expected a whole number of jobs, at least 1, got {value!r}")
    return value
