"""conveyor: an ``App`` with one job; bulk = ``App.push_bulk`` (PUSHB). Project environment."""

from __future__ import annotations

from bench.peers._common import QUEUE, run_async
from conveyor.app import App

app = App()  # CONVEYOR_URL, set by the driver


@app.job(name="bench_job", queue=QUEUE)
async def bench_job(mode: int, t: float) -> None:
    await run_async(mode, t)


class Producer:
    bulk = "App.push_bulk (PUSHB)"

    async def open(self) -> None:
        pass

    async def push(self, mode: int, t: float) -> None:
        await bench_job.push(mode, t)

    async def push_many(self, items: list[tuple[int, float]]) -> None:
        results = await app.push_bulk([bench_job.build(m, t) for m, t in items])
        failed = [r for r in results if not r.ok]
        if failed:
            raise RuntimeError(f"PUSHB refused {len(failed)} jobs: {failed[0]}")

    async def close(self) -> None:
        await app.aclose()
