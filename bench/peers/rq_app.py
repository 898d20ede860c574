"""RQ: jobs are importable functions; bulk = ``Queue.enqueue_many`` (one pipeline)."""

from __future__ import annotations

from redis import Redis
from rq import Queue

from bench.peers._common import QUEUE, redis_url, run_sync


def bench_job(mode: int, t: float) -> None:
    run_sync(mode, t)


class Producer:
    bulk = "Queue.enqueue_many"

    async def open(self) -> None:
        self.queue = Queue(QUEUE, connection=Redis.from_url(redis_url()))

    async def push(self, mode: int, t: float) -> None:
        self.queue.enqueue(bench_job, mode, t)

    async def push_many(self, items: list[tuple[int, float]]) -> None:
        self.queue.enqueue_many([Queue.prepare_data(bench_job, (m, t)) for m, t in items])

    async def close(self) -> None:
        self.queue.connection.close()
