"""Celery with the Redis broker, no result backend; no bulk API (``delay`` per task)."""

from __future__ import annotations

from celery import Celery

from bench.peers._common import QUEUE, redis_url, run_sync

app = Celery("bench", broker=redis_url())
app.conf.task_default_queue = QUEUE
app.conf.task_ignore_result = True
app.conf.broker_connection_retry_on_startup = True
app.conf.worker_hijack_root_logger = False


@app.task(name="bench_job")
def bench_job(mode: int, t: float) -> None:
    run_sync(mode, t)


class Producer:
    bulk = None

    async def open(self) -> None:
        pass

    async def push(self, mode: int, t: float) -> None:
        bench_job.delay(mode, t)

    async def close(self) -> None:
        pass
