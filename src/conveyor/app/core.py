"""``App``: the registry of jobs, hooks and middleware, and the producer side's connections."""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import ssl
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

from conveyor.app.aggregate import Aggregate
from conveyor.app.batches import BatchBlock, BatchStatus, TrackInfo, in_batch
from conveyor.app.cron import CronDeclarations
from conveyor.app.info import JobInfo, job_result
from conveyor.app.jobs import JobDef, JobOptions, seconds_option
from conveyor.app.producer import (
    PUSH_BULK_MAX_BYTES,
    PoolProducer,
    Producer,
    PushMiddleware,
    PushResult,
)
from conveyor.app.sync import SyncRunner
from conveyor.client import Client  # at import, not on the first push: it would wait for it
from conveyor.job import DEFAULT_QUEUE, Job
from conveyor.pool import ConnectionPool
from conveyor.worker.ratelimit import RateLimit

if TYPE_CHECKING:
    from conveyor.app.workflows import Signature
    from conveyor.retries import BackoffPolicy
    from conveyor.worker.context import AfterHook, BeforeHook, ErrorHandler, Middleware
    from conveyor.worker.runtime import Worker

__all__ = ["App", "CancelResult", "Group"]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

CANCEL_CHUNK = 1000  # the most jids one ADMIN job.cancel takes


@dataclass(frozen=True, slots=True)
class CancelResult:
    """What ``app.cancel`` did to one job. ``outcome``: ``cancelled`` (now), ``already``
    (cancelled before), ``finished`` (it ended: dead), ``unknown`` (no such job: it may have
    finished and been acknowledged), ``moving`` (it kept moving; try again) or ``refused``
    (it cannot be cancelled where it is: waiting for other jobs). ``was``: where it was
    (``queued``, ``scheduled``, ``retries``, ``aggregating``, ``working``, ...)."""

    jid: str
    outcome: str
    was: str = ""
    message: str = ""

    @property
    def cancelled(self) -> bool:
        """The job is cancelled (by this call or an earlier one)."""
        return self.outcome in ("cancelled", "already")


class _Registry:
    """What ``App`` and ``Group`` share: declaring jobs with options."""

    app: App
    group_name: str | None = None
    middleware: list[Middleware]

    @overload
    def job(self, fn: Callable[P, R], /) -> JobDef[P, R]: ...

    @overload
    def job(
        self,
        *,
        aggregate: Aggregate,
        name: str | None = None,
        queue: str = DEFAULT_QUEUE,
        retry: int | None = None,
        reserve_for: int | None = None,
        timeout: float | None = None,
        backtrace: int | None = None,
        custom: Mapping[str, Any] | None = None,
        raw: bool = False,
        middleware: Sequence[Middleware] = (),
        result_ttl: float | None = None,
        retain: float | None = None,
        backoff: BackoffPolicy | None = None,
        rate_limit: str | RateLimit | None = None,
    ) -> Callable[[Callable[[list[T]], R]], JobDef[[T], R]]: ...

    @overload
    def job(
        self,
        *,
        name: str | None = None,
        queue: str = DEFAULT_QUEUE,
        retry: int | None = None,
        reserve_for: int | None = None,
        timeout: float | None = None,
        backtrace: int | None = None,
        custom: Mapping[str, Any] | None = None,
        unique_for: float | dt.timedelta | None = None,
        unique_until: str | None = None,
        expires_in: float | dt.timedelta | None = None,
        raw: bool = False,
        middleware: Sequence[Middleware] = (),
        result_ttl: float | None = None,
        retain: float | None = None,
        backoff: BackoffPolicy | None = None,
        rate_limit: str | RateLimit | None = None,
    ) -> Callable[[Callable[P, R]], JobDef[P, R]]: ...

    def job(self, fn: Any = None, /, **options: Any) -> Any:  # type: ignore[misc]
        """Declare a job: ``@app.job`` or ``@app.job(queue="emails", retry=5, timeout=30)``.

        The jobtype is the function's name unless ``name=`` says otherwise. With
        ``aggregate=conveyor.Aggregate(...)`` the job is pushed one item at a time into a
        group (``.options(group=...).push(item)``) and its handler gets a list of items
        (docs/aggregation.md).
        """
        if fn is not None:
            return self.app.register(fn, group=self.group_name)

        def decorate(func: Callable[P, R]) -> JobDef[P, R]:
            return self.app.register(func, group=self.group_name, **options)

        return decorate

    def use(self, middleware: Middleware) -> Middleware:
        """Add middleware at this level (app = worker level, or this group's level)."""
        self.middleware.append(middleware)
        return middleware


class Group(_Registry):
    """A named set of jobs sharing middleware, run between the app's and each job's own."""

    def __init__(self, app: App, name: str, middleware: Sequence[Middleware] = ()) -> None:
        self.app = app
        self.group_name = name
        self.middleware = list(middleware)


class App(_Registry):
    """Jobs, hooks and middleware, plus the connections used to push jobs.

    ``url`` defaults to ``CONVEYOR_URL``, else Faktory's ``FAKTORY_URL``/``FAKTORY_PROVIDER``,
    else ``tcp://localhost:7419``; ``password`` to the URL's or ``FAKTORY_PASSWORD``. ``tls``
    is an ``ssl.SSLContext`` (``tcp+tls://`` URLs use a default one).
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        password: str | None = None,
        tls: ssl.SSLContext | None = None,
        pool_size: int = 10,
        retry_seconds: float = 30.0,
        push_bulk_max_bytes: int = PUSH_BULK_MAX_BYTES,
        middleware: Sequence[Middleware] = (),
        result_ttl: float | None = None,
        retain: float | None = None,
    ) -> None:
        """``result_ttl`` and ``retain``: the defaults of this app's jobs (a job's own
        declaration and ``options()`` win), in seconds; see ``JobDef.options``."""
        if push_bulk_max_bytes < 1024:
            raise ValueError(
                f"push_bulk_max_bytes must be at least 1024, got {push_bulk_max_bytes}"
            )
        self.app = self
        self.url = url
        self.password = password
        self.tls = tls
        self.pool_size = pool_size
        self.retry_seconds = retry_seconds
        self.push_bulk_max_bytes = push_bulk_max_bytes
        self.middleware = list(middleware)
        self.result_ttl = result_ttl
        self.retain = retain
        self.push_middleware: list[PushMiddleware] = []
        """Producer-side middleware (``use_push``), outermost first."""
        self.jobs: dict[str, JobDef[Any, Any]] = {}
        self.groups: dict[str, Group] = {}
        self.before_hooks: list[BeforeHook] = []
        self.after_hooks: list[AfterHook] = []
        self.error_handlers: list[ErrorHandler] = []
        self.sync = SyncRunner()
        self.crons = CronDeclarations()
        """The ``@app.cron`` entries, registered with the server when the app starts."""
        self.producer: Producer | None = None
        """Set to redirect pushes (``conveyor.testing`` does); ``None`` = pooled connections."""
        self._producers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Producer] = (
            weakref.WeakKeyDictionary()
        )
        self._readers: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, ConnectionPool[Client]
        ] = weakref.WeakKeyDictionary()

    def __repr__(self) -> str:
        return f"<App jobs={sorted(self.jobs)}>"

    # -- declaring -----------------------------------------------------------------------------

    def register(
        self,
        fn: Callable[P, R],
        *,
        group: str | None = None,
        name: str | None = None,
        queue: str = DEFAULT_QUEUE,
        retry: int | None = None,
        reserve_for: int | None = None,
        timeout: float | None = None,
        backtrace: int | None = None,
        custom: Mapping[str, Any] | None = None,
        unique_for: float | dt.timedelta | None = None,
        unique_until: str | None = None,
        expires_in: float | dt.timedelta | None = None,
        raw: bool = False,
        middleware: Sequence[Middleware] = (),
        aggregate: Aggregate | None = None,
        result_ttl: float | None = None,
        retain: float | None = None,
        backoff: BackoffPolicy | None = None,
        rate_limit: str | RateLimit | None = None,
    ) -> JobDef[P, R]:
        """Declare ``fn`` as a job (what ``@app.job`` calls).

        ``result_ttl``/``retain``: keep its result / the job after success (seconds; the
        app's defaults otherwise). ``backoff``: ``(retry_count) -> seconds`` before each
        retry (``conveyor.Exponential``, ``conveyor.Fixed``). ``rate_limit``: at most that
        many of these jobs per worker process (``"10/s"``, ``"100/m"``); those over it are
        retried at their turn without using a retry."""
        jobtype = name or fn.__name__
        if jobtype in self.jobs:
            raise ValueError(f"a job named {jobtype!r} is already declared")
        if timeout is not None and timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        if backoff is not None and not callable(backoff):
            raise TypeError(f"backoff must be callable (retry_count) -> seconds, got {backoff!r}")
        options = JobOptions(
            queue=queue,
            retry=retry,
            reserve_for=reserve_for,
            backtrace=backtrace,
            custom=dict(custom) if custom else None,
            result_ttl=self.result_ttl if result_ttl is None else result_ttl,
            retain=self.retain if retain is None else retain,
            unique_for=_optional_seconds(unique_for, "unique_for", 1),
            unique_until=unique_until,
            expires_in=_optional_seconds(expires_in, "expires_in", 0.001),
        )
        limit = None if rate_limit is None else RateLimit.of(rate_limit)
        jobdef = JobDef(
            self, fn, name=jobtype, options=options, timeout=timeout, raw=raw,
            middleware=middleware, group=group, aggregate=aggregate, backoff=backoff,
            rate_limit=limit,
        )  # fmt: skip
        self.jobs[jobtype] = jobdef
        return jobdef

    def cron(
        self,
        schedule: str,
        *,
        args: Sequence[Any] = (),
        entry_id: str | None = None,
        tz: str = "UTC",
        missed: str = "one",
        queue: str | None = None,
        retry: int | None = None,
        reserve_for: int | None = None,
        custom: Mapping[str, Any] | None = None,
    ) -> Callable[[JobDef[P, R]], JobDef[P, R]]:
        """Run a declared job periodically, from the server: put ``@app.cron(...)`` above
        ``@app.job``. ``schedule`` is a cron schedule (5 fields, 6 with seconds first,
        ``@daily``, ``@every 30s``) in time zone ``tz``; ``args`` are the handler's arguments.
        The entry (id: the jobtype unless ``entry_id=``) is registered with the server when a
        worker of this app starts or the app first pushes (docs/cron.md). Raises
        ``ValueError`` for a bad schedule, time zone or option, here and now."""

        def decorate(jobdef: JobDef[P, R]) -> JobDef[P, R]:
            if not isinstance(jobdef, JobDef):
                raise TypeError("@app.cron goes above @app.job (it needs the declared job)")
            self.crons.declare(
                jobdef, schedule, args=args, entry_id=entry_id, tz=tz, missed=missed, queue=queue,
                retry=retry, reserve_for=reserve_for, custom=custom,
            )  # fmt: skip
            return jobdef

        return decorate

    async def register_crons(self) -> None:
        """Send the ``@app.cron`` entries to the server now (workers and the first push do
        it by themselves)."""
        await self.crons.register_with(self.connect)

    def group(self, name: str, *, middleware: Sequence[Middleware] = ()) -> Group:
        """A group of jobs with shared middleware: ``billing = app.group("billing")``."""
        if name in self.groups:
            raise ValueError(f"a group named {name!r} already exists")
        group = self.groups[name] = Group(self, name, middleware)
        return group

    def before(self, hook: BeforeHook) -> BeforeHook:
        """Register a hook run before every job (global hooks run before per-job ones)."""
        self.before_hooks.append(hook)
        return hook

    def after(self, hook: AfterHook) -> AfterHook:
        """Register a hook run after every job, with its exception or ``None``."""
        self.after_hooks.append(hook)
        return hook

    def on_error(self, handler: ErrorHandler) -> ErrorHandler:
        """Register a handler called with every job error (errors are always logged too)."""
        self.error_handlers.append(handler)
        return handler

    # -- connections -----------------------------------------------------------------------------

    async def connect(
        self, *, wid: str | None = None, labels: Sequence[str] = (), hostname: str | None = None
    ) -> Client:
        """Open one client connection to this app's server."""
        return await Client.connect(
            self.url, wid=wid, labels=list(labels), hostname=hostname,
            password=self.password, tls=self.tls,
        )  # fmt: skip

    def _producer(self) -> Producer:
        if self.producer is not None:
            return self.producer
        loop = asyncio.get_running_loop()
        producer = self._producers.get(loop)
        if producer is None:
            pool: ConnectionPool[Client] = ConnectionPool(
                self.connect, size=self.pool_size, retry_seconds=self.retry_seconds
            )
            producer = self._producers[loop] = PoolProducer(pool, self.push_bulk_max_bytes)
        return producer

    # -- producing -------------------------------------------------------------------------------

    async def push_job(self, job: Job) -> str:
        """Push a prepared job (``send_email.build(...)``, or a ``Job`` for any jobtype).
        Inside an ``async with app.batch(...)`` block the job joins that batch."""
        producer = self._producer()
        if self.crons.entries and producer is not self.producer:
            await self.register_crons()  # once: then it returns at once
        in_batch(job)
        if self.push_middleware:
            await self._run_push_chain([job], lambda: producer.push(job))
        else:
            await producer.push(job)
        return job.jid

    def use_push(self, middleware: PushMiddleware) -> PushMiddleware:
        """Add producer-side middleware: ``async def mw(jobs, call_next)`` runs around every
        push (``jobs`` holds one job, or a PUSHB's chunk) and may change the jobs before it
        awaits ``call_next()`` -- e.g. put a trace context into ``custom``."""
        self.push_middleware.append(middleware)
        return middleware

    async def _run_push_chain(
        self, jobs: Sequence[Job], final: Callable[[], Awaitable[None]]
    ) -> None:
        async def step(index: int) -> None:
            if index == len(self.push_middleware):
                await final()
            else:
                await self.push_middleware[index](jobs, lambda: step(index + 1))

        await step(0)

    async def push_bulk(self, jobs: Sequence[Job]) -> list[PushResult]:
        """Push many jobs with PUSHB (up to 1000 jobs and ``push_bulk_max_bytes`` a command,
        two commands in flight, in order).

        Returns one result per job, in order: a job the server refused, alone (bad queue
        name, not unique, ...) or with its whole chunk, has the server's error message.
        """
        producer = self._producer()
        if self.crons.entries and producer is not self.producer:
            await self.register_crons()
        jobs = [in_batch(job) for job in jobs]
        errors: dict[str, str] = {}

        async def send() -> None:
            errors.update(await producer.push_bulk(jobs))

        if self.push_middleware:
            await self._run_push_chain(jobs, send)
        else:
            await send()
        return [PushResult(job.jid, errors.get(job.jid)) for job in jobs]

    def push_bulk_sync(self, jobs: Sequence[Job]) -> list[PushResult]:
        """``push_bulk`` for code that is not async."""
        return self.sync.run(self.push_bulk(jobs))

    async def call(self, command: Callable[[Client], Awaitable[T]]) -> T:
        """Run ``command`` on one of the app's pooled connections (any ``Client`` method)."""
        return await self._producer().call(command)

    # -- batches and tracking (Faktory Enterprise's BATCH and TRACK) ----------------------------

    def batch(
        self,
        *,
        description: str = "",
        on_success: Signature | Job | None = None,
        on_complete: Signature | Job | None = None,
        parent: str | None = None,
    ) -> BatchBlock:
        """``async with app.batch(on_success=done.s()) as b:`` -- the jobs pushed in the block
        join batch ``b.bid``, committed when the block ends. ``on_complete`` runs once every
        job ran (succeeded or failed), ``on_success`` once all succeeded, after
        ``on_complete``. A batch started in another's block is its child (``parent=``
        otherwise)."""
        return BatchBlock(
            self, description=description, on_success=on_success, on_complete=on_complete,
            parent=parent,
        )  # fmt: skip

    def open_batch(self, bid: str) -> BatchBlock:
        """``async with app.open_batch(bid):`` reopen a batch to add jobs (committed again on
        exit)."""
        return BatchBlock(self, bid=bid)

    async def batch_status(self, bid: str) -> BatchStatus:
        """``BATCH STATUS``; ``CommandError`` for an unknown (or expired) batch."""
        return BatchStatus.from_wire(await self.call(lambda c: c.batch_status(bid)))

    async def track(self, jid: str) -> TrackInfo:
        """``TRACK GET``: a tracked job's state and progress."""
        return TrackInfo.from_wire(await self.call(lambda c: c.track_get(jid)))

    # -- results and job state -------------------------------------------------------------------

    def _reader(self) -> ConnectionPool[Client]:
        """Connections for ``result`` and ``job_info``, apart from the pushes' (a ``result``
        may hold one for as long as it waits)."""
        loop = asyncio.get_running_loop()
        pool = self._readers.get(loop)
        if pool is None:
            pool = self._readers[loop] = ConnectionPool(
                self.connect, size=self.pool_size, retry_seconds=self.retry_seconds
            )
        return pool

    async def result(self, jid: str, timeout: float = 10.0) -> Any:  # noqa: ASYNC109
        """The value job ``jid``'s handler returned, waiting up to ``timeout`` seconds for it
        to finish (the server wakes this call when the job's ACK arrives: no polling).

        Raises ``conveyor.JobFailed`` (with the error and backtrace) if the job died,
        ``TimeoutError`` if it has not finished in time. The job must have asked for its
        result (``result_ttl``) or to be kept (``retain``); results expire after their TTL.
        Returns the value as JSON decodes it (dicts, lists, ...)."""
        return await job_result(self._reader(), jid, timeout)

    def result_sync(self, jid: str, timeout: float = 10.0) -> Any:
        """``result`` for code that is not async."""
        return self.sync.run(self.result(jid, timeout))

    async def job_info(self, jid: str) -> JobInfo | None:
        """Everything the server knows about job ``jid``, wherever it is (queued, scheduled,
        working, retrying, dead, completed, or finished with a result); None if nothing."""
        found = await self._reader().run(lambda client: client.admin("job.show", {"jids": [jid]}))
        view = found["jobs"][0]
        return None if view is None else JobInfo.of(view)

    def job_info_sync(self, jid: str) -> JobInfo | None:
        """``job_info`` for code that is not async."""
        return self.sync.run(self.job_info(jid))

    # -- cancelling ------------------------------------------------------------------------------

    async def cancel(self, jid: str) -> CancelResult:
        """Cancel a job wherever it is (docs/cancellation.md): a queued, scheduled, retrying
        or aggregating job is removed; a running one is stopped by its worker within about a
        second. Either way it ends as *cancelled*: not retried, not dead. The result says what
        happened, also when the job had finished or is unknown (nothing is raised then)."""
        return (await self.cancel_many([jid]))[0]

    async def cancel_many(self, jids: Sequence[str]) -> list[CancelResult]:
        """``cancel`` for several jobs at once: one result per distinct jid, in order."""
        producer = self._producer()
        if not isinstance(producer, PoolProducer):
            raise RuntimeError("cancel needs a server: jobs pushed inline ran already")
        results: list[CancelResult] = []
        unique = list(dict.fromkeys(jids))
        for start in range(0, len(unique), CANCEL_CHUNK):
            part = unique[start : start + CANCEL_CHUNK]
            reports = await producer.pool.run(functools.partial(_cancel, jids=part))
            results += [CancelResult(**report) for report in reports]
        return results

    def cancel_sync(self, jid: str) -> CancelResult:
        """``cancel`` for code that is not async."""
        return self.sync.run(self.cancel(jid))

    async def aclose(self) -> None:
        """Close this loop's pooled connections."""
        loop = asyncio.get_running_loop()
        producer = self._producers.pop(loop, None)
        if producer is not None:
            await producer.close()
        reader = self._readers.pop(loop, None)
        if reader is not None:
            await reader.close()

    def close(self) -> None:
        """Close the sync facade's loop and its connections."""
        self.sync.close(self.aclose())

    # -- running ---------------------------------------------------------------------------------

    def worker(self, **options: Any) -> Worker:
        """A worker for this app; ``async with app.worker(concurrency=10):`` or ``.run()``."""
        from conveyor.worker.runtime import Worker

        return Worker(self, **options)


def _optional_seconds(
    value: float | dt.timedelta | None, name: str, minimum: float
) -> float | None:
    return None if value is None else seconds_option(value, name, minimum)


async def _cancel(client: Client, jids: list[str]) -> list[dict[str, Any]]:
    return await client.cancel(jids)
