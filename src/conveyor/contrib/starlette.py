"""A lifespan for Starlette and FastAPI apps that push jobs -- and may run a worker too.

    import conveyor
    from fastapi import FastAPI, Request
    from conveyor.contrib.starlette import conveyor_lifespan

    jobs = conveyor.App()

    @jobs.job
    async def send_welcome(user_id: int) -> None: ...

    api = FastAPI(lifespan=conveyor_lifespan(jobs))          # push only
    # FastAPI(lifespan=conveyor_lifespan(jobs, worker={"concurrency": 5}))  # and run jobs

    @api.post("/users/{user_id}")
    async def create(user_id: int, request: Request) -> dict[str, str]:
        jid = await send_welcome.push(user_id)       # or request.state.conveyor
        return {"jid": jid}

At startup the lifespan checks that the server answers (so a wrong URL fails the deploy, not
the first request) and, with ``worker=``, starts a ``Worker`` in the app's event loop with those
options. At shutdown it stops the worker (running jobs get its grace period) and closes the
app's connections. Its state is ``conveyor`` (the App) and ``conveyor_worker`` (or None), on
``request.state``.

To combine it with a lifespan of your own, enter it inside yours::

    @contextlib.asynccontextmanager
    async def lifespan(api):
        async with conveyor_lifespan(jobs)(api) as state:
            yield {**state, "db": ...}
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from conveyor.app.core import App
from conveyor.worker.runtime import Worker

__all__ = ["conveyor_lifespan"]

Lifespan = Callable[[Any], contextlib.AbstractAsyncContextManager[dict[str, Any]]]


def conveyor_lifespan(
    app: App, *, worker: Mapping[str, Any] | bool = False, check: bool = True
) -> Lifespan:
    """The lifespan for ``Starlette(lifespan=...)`` / ``FastAPI(lifespan=...)``.

    ``worker``: ``True`` or a dict of ``Worker`` options (``concurrency``, ``queues``, ...) to
    run jobs in this process too. ``check``: connect once at startup (INFO) to fail early."""

    @contextlib.asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[dict[str, Any]]:
        if check:
            client = await app.connect()
            try:
                await client.info()
            finally:
                await client.close()
        running: Worker | None = None
        if worker:
            running = app.worker(**(dict(worker) if isinstance(worker, Mapping) else {}))
            await running.start()
        try:
            yield {"conveyor": app, "conveyor_worker": running}
        finally:
            try:
                if running is not None:
                    await running.stop()
            finally:
                await app.aclose()

    return lifespan
