"""Running one job: the handler chain (middleware -> hooks -> args mapping -> function).

The chain for a jobtype is built once and reused::

    worker middleware (app.use, Worker(middleware=...)), in registration order, outermost
      group middleware (group.use)
        job middleware (@app.job(middleware=...), send_email.use)
          before hooks: global, then the job's own, in registration order
            args decoded for the handler (a PayloadError here means: dead, not retried)
              the function (async in the loop; sync in the thread pool), under its timeout
          after hooks: global, then the job's own, with the exception or None

When nothing wraps an async handler (no middleware, no hooks, no timeout), ``execute`` calls
it directly instead: the job's task then runs two coroutines (``execute`` and the handler), not
five. ``execute`` turns the result into an ``Outcome``: ACK (with the handler's value as JSON
when the job asked for its result), or FAIL with errtype, message and backtrace, and what the
server should do about the retries (``SkipRetry``, ``RetryAfter``, the job type's backoff).

A job over a rate limit (the worker's, its job type's) is not run: it fails with
``RetryAfter`` until its turn (``ratelimit.py``).
"""

from __future__ import annotations

import asyncio
import builtins
import contextvars
import inspect
import logging
import traceback
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec

from conveyor.app.payload import PayloadError
from conveyor.errors import JobCancelled, ResultError, RetryAfter, SkipRetry
from conveyor.job import Job
from conveyor.retries import backoff_seconds
from conveyor.worker.context import (
    Handler,
    JobContext,
    Middleware,
    reset_current,
    set_current,
)
from conveyor.worker.ratelimit import RateLimit, RateLimiter

if TYPE_CHECKING:
    from conveyor.app.core import App
    from conveyor.app.jobs import JobDef

__all__ = [
    "DEFAULT_BACKTRACE_LINES",
    "DEFAULT_MAX_RESULT_BYTES",
    "JobRunner",
    "Outcome",
    "UnknownJobType",
    "errtype_of",
]

logger = logging.getLogger("conveyor.worker")

DEFAULT_BACKTRACE_LINES = 30
"""Backtrace lines sent with FAIL when neither the job nor its declaration says."""
DEFAULT_MAX_RESULT_BYTES = 1024 * 1024
"""The largest result (as JSON) a worker sends; the server has its own limit, 1 MiB too."""


def _encode_other(value: Any) -> Any:
    """Results msgspec does not know by itself: pydantic models, other mappings."""
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump(mode="json")
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


_encode_result = msgspec.json.Encoder(enc_hook=_encode_other).encode


def asks_result(custom: Mapping[str, Any]) -> bool:
    """Whether a job's ``custom`` asks for its result to be stored (or the job to be kept,
    with its result): ``result_ttl`` or ``retain`` above 0."""
    for key in ("result_ttl", "retain"):
        value = custom.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
            return True
    return False


class UnknownJobType(Exception):
    """No handler is declared for the job's jobtype (retried: a newer deploy may know it)."""

    errtype = "conveyor.UnknownJobType"


class JobTimeout(TimeoutError):
    """The handler ran longer than its ``timeout``."""

    errtype = "conveyor.JobTimeout"


def errtype_of(exc: BaseException) -> str:
    """``ValueError`` for builtins, ``module.Class`` otherwise, or the class's ``errtype``."""
    explicit = getattr(type(exc), "errtype", None)
    if isinstance(explicit, str):
        return explicit
    cls = type(exc)
    if cls.__module__ == builtins.__name__:
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


@dataclass(slots=True)
class Outcome:
    """What happened to one execution; ``error is None`` means ACK."""

    job: Job
    error: BaseException | None = None
    errtype: str = ""
    message: str = ""
    backtrace: list[str] = field(default_factory=list)
    result: Any = None
    duration: float | None = None
    """Seconds the job ran (set by the worker when the job's task ends)."""
    result_json: bytes | None = None
    """The result to send with the ACK: the job asked for it (``custom.result_ttl``)."""
    retry_after: float | None = None
    """Retry in that many seconds without counting (``RetryAfter``, a rate limit)."""
    backoff: float | None = None
    """The job type's delay for this retry (its ``backoff`` policy)."""

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def dead(self) -> bool:
        """True when retrying cannot help: ``SkipRetry``, a payload that does not fit the
        handler, a result that cannot be stored. The job goes to the dead set at once."""
        return isinstance(self.error, SkipRetry | PayloadError | ResultError)

    @classmethod
    def failed(cls, job: Job, exc: BaseException, lines: int) -> Outcome:
        trace = traceback.format_exception(exc) if lines > 0 else []
        backtrace = [ln for chunk in trace for ln in chunk.rstrip("\n").split("\n")]
        return cls(
            job=job,
            error=exc,
            errtype=errtype_of(exc),
            message=str(exc) or type(exc).__name__,
            backtrace=backtrace[-lines:] if lines > 0 else [],
            retry_after=exc.seconds if isinstance(exc, RetryAfter) else None,
        )


async def _call_hook(hook: Callable[..., Any], *args: Any) -> None:
    result = hook(*args)
    if inspect.isawaitable(result):
        await result


@dataclass(frozen=True, slots=True)
class _Plan:
    """How the jobs of one jobtype run, worked out on its first job."""

    chain: Handler
    direct: Callable[..., Awaitable[Any]] | None
    """The async handler itself, when nothing wraps it: ``execute`` calls it straight away."""
    decode: Callable[[Job], tuple[Any, ...]]
    limiters: tuple[RateLimiter, ...] = ()
    """The worker's rate limit and the job type's, when there are."""


class JobRunner:
    """Executes jobs of one app: builds and caches each jobtype's handler chain."""

    def __init__(
        self,
        app: App,
        *,
        middleware: Sequence[Middleware] = (),
        threads: Executor | None = None,
        wid: str = "",
        rate_limit: str | RateLimit | None = None,
        max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES,
    ) -> None:
        self.app = app
        self.extra_middleware = list(middleware)
        self.threads = threads
        self.wid = wid
        self.max_result_bytes = max_result_bytes
        self.limiter = None if rate_limit is None else RateLimiter(RateLimit.of(rate_limit))
        """The worker's own rate limit (``--rate-limit``): every job of this process."""
        self._plans: dict[str, _Plan] = {}
        self.cancelled: set[str] = set()
        """Jids of running jobs the server cancelled (the worker adds and removes them)."""

    def chain(self, jobdef: JobDef[Any, Any]) -> Handler:
        return self._plan(jobdef).chain

    def _plan(self, jobdef: JobDef[Any, Any]) -> _Plan:
        plan = self._plans.get(jobdef.name)
        if plan is None:
            plan = self._plans[jobdef.name] = self._build(jobdef)
        return plan

    def _build(self, jobdef: JobDef[Any, Any]) -> _Plan:
        app = self.app
        group = app.groups.get(jobdef.group) if jobdef.group else None
        layers = [
            *app.middleware,
            *self.extra_middleware,
            *(group.middleware if group else ()),
            *jobdef.middleware,
        ]
        handler = self._core(jobdef)
        for middleware in reversed(layers):
            handler = middleware(handler)
        hooks = (app.before_hooks, app.after_hooks, jobdef.before_hooks, jobdef.after_hooks)
        bare = jobdef.is_async and jobdef.timeout is None and not layers and not any(hooks)
        limiters = [self.limiter] if self.limiter is not None else []
        if jobdef.rate_limit is not None:
            limiters.append(RateLimiter(jobdef.rate_limit))
        return _Plan(handler, jobdef.fn if bare else None, jobdef.payload.decode, tuple(limiters))

    def _core(self, jobdef: JobDef[Any, Any]) -> Handler:
        befores = [*self.app.before_hooks, *jobdef.before_hooks]
        afters = [*self.app.after_hooks, *jobdef.after_hooks]
        call = self._caller(jobdef)

        async def core(ctx: JobContext) -> Any:
            for hook in befores:
                await _call_hook(hook, ctx)
            try:
                result = await call(jobdef.payload.decode(ctx.job))
            except BaseException as exc:
                await self._after(afters, ctx, exc)
                raise
            if afters:
                await self._after(afters, ctx, None)
            return result

        return core

    async def _after(self, hooks: list[Any], ctx: JobContext, exc: BaseException | None) -> None:
        for hook in hooks:
            try:
                await _call_hook(hook, ctx, exc)
            except Exception:  # an after hook must not turn a success into a failure
                ctx.logger.exception("after hook %r failed", hook)

    def _caller(self, jobdef: JobDef[Any, Any]) -> Callable[[tuple[Any, ...]], Any]:
        fn, timeout = jobdef.fn, jobdef.timeout
        if jobdef.is_async and timeout is None:
            return lambda args: fn(*args)  # the handler's own coroutine, with no wrapper around it
        if jobdef.is_async:

            async def call_async(args: tuple[Any, ...]) -> Any:
                try:
                    async with asyncio.timeout(timeout):
                        return await fn(*args)
                except TimeoutError:
                    raise JobTimeout(f"{jobdef.name} timed out after {timeout}s") from None

            return call_async

        async def call_sync(args: tuple[Any, ...]) -> Any:
            # The thread runs in a copy of this context, so current_job() works there too.
            context = contextvars.copy_context()
            loop = asyncio.get_running_loop()
            future = loop.run_in_executor(self.threads, context.run, fn, *args)
            if timeout is None:
                return await future
            try:
                return await asyncio.wait_for(future, timeout)
            except TimeoutError:
                # A thread cannot be stopped: the job FAILs now, the call runs on unobserved.
                raise JobTimeout(
                    f"{jobdef.name} timed out after {timeout}s (its thread keeps running)"
                ) from None

        return call_sync

    async def execute(self, job: Job) -> Outcome:
        """Run ``job``; never raises except ``CancelledError`` (the worker is stopping)."""
        ctx = JobContext(job, wid=self.wid, app=self.app, cancelled_jids=self.cancelled)
        token = set_current(ctx)
        jobdef = self.app.jobs.get(job.jobtype)
        try:
            if jobdef is None:
                raise UnknownJobType(f"no handler for jobtype {job.jobtype!r} in this worker")
            plan = self._plans.get(jobdef.name) or self._plan(jobdef)
            if plan.limiters and (limited := self._over_limit(plan, job)) is not None:
                return limited
            if plan.direct is not None:
                result = await plan.direct(*plan.decode(job))
            else:
                result = await plan.chain(ctx)
        except Exception as exc:
            if isinstance(exc, JobCancelled) and job.jid in self.cancelled:
                ctx.logger.info("stopped: the job was cancelled")
                return Outcome.failed(job, exc, 0)
            lines = (
                job.backtrace or (jobdef and jobdef.defaults.backtrace) or (DEFAULT_BACKTRACE_LINES)
            )
            outcome = Outcome.failed(job, exc, lines)
            if jobdef is not None and jobdef.backoff is not None and not outcome.dead:
                outcome.backoff = backoff_seconds(jobdef.backoff, ctx.retry_count)
            await self._report_error(ctx, exc)
            return outcome
        finally:
            reset_current(token)
        if job.custom is not None and asks_result(job.custom):
            return self._with_result(job, result)
        return Outcome(job, result=result)

    def _over_limit(self, plan: _Plan, job: Job) -> Outcome | None:
        """The outcome of a job a rate limit turns away (retried at its turn), or None."""
        for limiter in plan.limiters:
            wait = limiter.admit(job.jid)
            if wait > 0:
                logger.debug("%s %s: rate limit %s, back in %.3fs", job.jobtype, job.jid,
                             limiter.limit, wait)  # fmt: skip
                error = RetryAfter(round(wait, 3), f"rate limit {limiter.limit} reached")
                return Outcome.failed(job, error, 0)
        return None

    def _with_result(self, job: Job, result: Any) -> Outcome:
        """The ACK with the handler's value as JSON; a FAIL (dead) when it cannot be stored."""
        try:
            encoded = _encode_result(result)
        except (TypeError, ValueError, OverflowError) as exc:
            error = ResultError(f"the result of {job.jobtype} cannot be stored as JSON: {exc}")
            return Outcome.failed(job, error, 0)
        if len(encoded) > self.max_result_bytes:
            error = ResultError(
                f"the result of {job.jobtype} is {len(encoded)} bytes of JSON; the limit is "
                f"{self.max_result_bytes}"
            )
            return Outcome.failed(job, error, 0)
        return Outcome(job, result=result, result_json=encoded)

    async def _report_error(self, ctx: JobContext, exc: BaseException) -> None:
        for handler in self.app.error_handlers:
            try:
                await _call_hook(handler, ctx, exc)
            except Exception:
                ctx.logger.exception("error handler %r failed", handler)
