"""SAQ with its Redis queue; ``settings`` as its CLI expects; no bulk API."""

from __future__ import annotations

from typing import Any

from saq import Queue

from bench.peers._common import QUEUE, redis_url, run_async


async def bench_job(ctx: dict[str, Any], *, mode: int, t: float) -> None:
    await run_async(mode, t)


settings = {
    "queue": Queue.from_url(redis_url(), name=QUEUE),
    "functions": [bench_job],
    "concurrency": 10,
}


class Producer:
    bulk = None

    async def open(self) -> None:
        self.queue = Queue.from_url(redis_url(), name=QUEUE)
        await self.queue.connect()

    async def push(self, mode: int, t: float) -> None:
        await self.queue.enqueue("bench_job", mode=mode, t=t)

    async def close(self) -> None:
        await self.queue.disconnect()
