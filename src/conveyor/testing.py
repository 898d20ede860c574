"""Test helpers for applications that use conveyor, and a pytest plugin.

Two ways to test jobs:

* **inline**: ``with conveyor.testing.inline(app) as jobs:`` makes every push run the job at
  once, in the pushing task, through the whole worker path (JSON encoding of ``args``, the
  args mapping and validation, hooks, middleware). Errors are re-raised; ``jobs.outcomes``
  records every run.
* **a real server in the test process**: ``TestServer`` is a conveyor server on an in-memory
  store, on a free loopback port, running in a background thread (so it serves sync and async
  tests alike). ``await drain(app, server.url)`` runs a worker until the queues are empty.

pytest: add ``pytest_plugins = ["conveyor.testing"]`` to your ``conftest.py`` to get the
``conveyor_server`` fixture (one server per test, a fresh empty store).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from conveyor.app.core import App
from conveyor.app.producer import Producer
from conveyor.app.sync import SyncRunner
from conveyor.job import Job, decode_job, encode_job
from conveyor.worker.execute import JobRunner, Outcome
from conveyor.worker.queues import QueueSpec
from conveyor.worker.runtime import Worker

if TYPE_CHECKING:
    from conveyor.manager import Manager
    from conveyor.server.app import FaktoryServer

__all__ = ["InlineProducer", "TestServer", "conveyor_server", "drain", "inline"]


class InlineProducer:
    """A producer that runs each pushed job right away instead of sending it to a server."""

    def __init__(self, app: App, *, raise_errors: bool = True) -> None:
        self.runner = JobRunner(app)
        self.raise_errors = raise_errors
        self.outcomes: list[Outcome] = []

    async def push(self, job: Job) -> None:
        # Through JSON and back, as a worker would see it: catches unserialisable args.
        fetched = decode_job(encode_job(job))
        if not fetched.queue:
            fetched.queue = "default"
        outcome = await self.runner.execute(fetched)
        self.outcomes.append(outcome)
        if outcome.error is not None and self.raise_errors:
            raise outcome.error

    async def push_bulk(self, jobs: Sequence[Job]) -> dict[str, str]:
        errors: dict[str, str] = {}
        for job in jobs:
            try:
                await self.push(job)
            except Exception as exc:
                errors[job.jid] = f"{type(exc).__name__}: {exc}"
        return errors

    async def call(self, command: Any) -> Any:
        raise RuntimeError(
            "batches, tracking and other server commands need a server: test them with "
            "conveyor.testing.TestServer, not inline()"
        )

    async def close(self) -> None:
        pass

    @property
    def results(self) -> list[Any]:
        """Return values of the jobs that succeeded, in push order."""
        return [o.result for o in self.outcomes if o.ok]


@contextlib.contextmanager
def inline(app: App, *, raise_errors: bool = True) -> Iterator[InlineProducer]:
    """Run every job pushed through ``app`` inline while the block runs."""
    producer = InlineProducer(app, raise_errors=raise_errors)
    previous: Producer | None = app.producer
    app.producer = producer
    try:
        yield producer
    finally:
        app.producer = previous


class TestServer:
    """An in-process conveyor server (in-memory store) on a free port, in its own thread."""

    __test__ = False  # not a pytest test class

    def __init__(self, storage: str = "memory://", **manager_options: Any) -> None:
        from conveyor.manager import ManagerConfig

        # Short waits: an idle FETCH answers in 0.1 s, so burst workers finish quickly.
        options = {"fetch_wait_seconds": 0.1, **manager_options}
        self.storage = storage
        self.manager_config = ManagerConfig(**options)
        self._thread = SyncRunner("conveyor-test-server")
        self._server: FaktoryServer | None = None
        self._manager: Manager | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "the server is not started"
        return self._server.url

    @property
    def manager(self) -> Manager:
        assert self._manager is not None, "the server is not started"
        return self._manager

    def start(self) -> TestServer:
        self._thread.run(self._start())
        return self

    async def _start(self) -> None:
        from conveyor.config import ServerConfig
        from conveyor.manager import Manager
        from conveyor.server.app import FaktoryServer
        from conveyor.store import open_store

        self._manager = Manager(open_store(self.storage), self.manager_config)
        await self._manager.start()
        config = ServerConfig(port=0, web_port=None, manager=self.manager_config)
        self._server = FaktoryServer(self._manager, config)
        await self._server.start()

    def stop(self) -> None:
        self._thread.close(self._stop())

    async def _stop(self) -> None:
        if self._server is not None:
            await self._server.stop()
        if self._manager is not None:
            await self._manager.stop()

    def call(self, coro: Any) -> Any:
        """Run a coroutine (e.g. ``server.manager.info(...)``) on the server's own loop."""
        return self._thread.run(coro)

    def __enter__(self) -> TestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def drain(
    app: App,
    url: str | None = None,
    *,
    queues: Sequence[str | QueueSpec] = ("default",),
    concurrency: int = 10,
    **options: Any,
) -> Worker:
    """Run a burst worker for ``app`` until the queues are empty; returns it (``.processed``)."""
    if url is not None:
        app.url = url
    worker = app.worker(
        queues=queues, concurrency=concurrency, burst=True, heartbeat_seconds=0.5, **options
    )
    await worker.run()
    return worker


def _conveyor_server() -> Iterator[TestServer]:
    """A fresh in-process conveyor server for one test; ``.url`` to connect."""
    with TestServer() as server:
        yield server


try:  # the fixture exists only where pytest does: it is not a dependency of conveyor
    import pytest
except ImportError:  # pragma: no cover
    pass
else:
    conveyor_server = pytest.fixture(name="conveyor_server")(_conveyor_server)
