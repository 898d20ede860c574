"""Queue backpressure: PUSH refuses jobs while their queue holds N or more.

The setting Faktory's ``example/config.toml`` shows and no Faktory implemented (reference
§3.6, §3.15): ``[queues] backpressure = N`` for every queue, ``[queues.NAME] backpressure = N``
for one (``queues_table.py``), or ``--backpressure N`` / ``CONVEYOR_BACKPRESSURE`` for the
default. A refused PUSH gets ``-ERR queue NAME is full (N jobs)`` (in a PUSHB, that text for
each refused job) and nothing is stored; pushes succeed again as soon as the queue holds fewer.

The check and the enqueue are one step of the store (``Store.enqueue_bounded``; one Lua script
on Redis), so servers sharing a store never overfill a queue together. Only jobs enqueued now
count: a scheduled job or a retry is enqueued when it comes due whatever the queue holds, as
it was accepted already (refusing it then would lose it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from conveyor.manager.features.queues_table import QueuesFeature
from conveyor.manager.flow import ALL_QUEUES
from conveyor.store.limits import QueueLimit

__all__ = ["Backpressure"]


class Backpressure(QueuesFeature):
    name = "backpressure"

    def queue_limits(self) -> Mapping[str, QueueLimit]:
        limits = {ALL_QUEUES: QueueLimit(backpressure=self.settings.backpressure)}
        for name, queue in self.settings.queues.items():
            if queue.backpressure is not None:
                limits[name] = QueueLimit(backpressure=queue.backpressure)
        return limits

    def bounds(self) -> dict[str, int]:
        """The bound of every queue named in the settings (0: none), and ``"*"``'s."""
        named = {
            n: q.backpressure for n, q in self.settings.queues.items() if q.backpressure is not None
        }
        return {ALL_QUEUES: self.settings.backpressure, **named}

    async def info(self) -> Mapping[str, Any] | None:
        bounds = self.bounds()
        if not any(bounds.values()):
            return None
        return {"default": bounds.pop(ALL_QUEUES), "queues": bounds}
