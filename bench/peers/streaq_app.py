"""streaQ: one ``Worker`` (concurrency 16, its default); bulk = ``Worker.enqueue_many``."""

from __future__ import annotations

from typing import Any

from streaq import Worker

from bench.peers._common import QUEUE, redis_url, run_async

worker: Worker[Any] = Worker(redis_url=redis_url(), queue_name=QUEUE)


@worker.task()
async def bench_job(mode: int, t: float) -> None:
    await run_async(mode, t)


class Producer:
    bulk = "Worker.enqueue_many"

    async def open(self) -> None:
        await worker.__aenter__()

    async def push(self, mode: int, t: float) -> None:
        await bench_job.enqueue(mode, t)

    async def push_many(self, items: list[tuple[int, float]]) -> None:
        await worker.enqueue_many([bench_job.enqueue(m, t) for m, t in items])

    async def close(self) -> None:
        await worker.__aexit__(None, None, None)
