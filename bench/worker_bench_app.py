"""The no-op jobs that ``bench/worker_bench.py`` runs with ``conveyor worker``."""

from __future__ import annotations

import conveyor

app = conveyor.App()


@app.job
async def noop(n: int) -> None:
    """Does nothing: measures the worker's own overhead per job."""


@app.job
def noop_sync(n: int) -> None:
    """Does nothing, in the thread pool: the overhead of sync handlers."""
