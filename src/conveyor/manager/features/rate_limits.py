"""Rate limits: how fast jobs may leave a queue, over every server sharing the store.

    [queues.emails]
    rate_limit = 50    # jobs per second
    burst = 100        # optional: the bucket's size (default: rate_limit, and at least 1)

A token bucket per queue, kept in the store (``Store.reserve_limited``): a FETCH takes a token
for each job it hands out, in the same atomic step, and skips the queue while the bucket is
empty, serving the next queue in its list or waiting, as for throttles. Tokens refill
continuously; the FETCHes held back are woken by a timer set for when the next token is due,
never by polling. On Redis the bucket runs on Redis's clock, so servers whose clocks disagree
still share one rate.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from conveyor.manager.features.queues_table import QueuesFeature
from conveyor.store.limits import QueueLimit

__all__ = ["RateLimits"]


class RateLimits(QueuesFeature):
    name = "rate_limits"

    def queue_limits(self) -> Mapping[str, QueueLimit]:
        limits = {}
        for name, queue in self.settings.queues.items():
            if queue.rate_limit is not None:
                burst = queue.burst if queue.burst is not None else max(queue.rate_limit, 1.0)
                limits[name] = QueueLimit(rate=queue.rate_limit, burst=burst)
        return limits

    async def usage(self) -> list[dict[str, Any]]:
        """Each rate limit now: its rate and burst, tokens left, jobs and FETCHes waiting."""
        manager = self.manager
        limits = dict(self.queue_limits())
        used = await manager.store.limit_usage(limits, time.time()) if limits else {}
        sizes = await manager.store.queue_sizes() if limits else {}
        return [
            {
                "queue": name,
                "rate": limit.rate,
                "burst": limit.burst,
                "tokens": used[name].tokens,
                "queued": sizes.get(name, 0),
                "waiting_fetches": manager.waiters.waiting_on(name),
            }
            for name, limit in sorted(limits.items())
        ]

    async def info(self) -> Mapping[str, Any] | None:
        if not self.queue_limits():
            return None
        return {row.pop("queue"): row for row in await self.usage()}
