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
five. ``execute`` turns the result into an ``Outcome``: ACK, or FAIL with errtype, message and
backtrace.
"""

from __future__ import annotations

import asyncio
import builtins
import contextvars
import inspect
import logging
import traceback
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from conveyor.app.payload import PayloadError
from conveyor.errors import JobCancelled
from conveyor.job import Job
from conveyor.worker.context import (
    Handler,
    JobContext,
    Middleware,
    reset_current,
    set_current,
)

if TYPE_CHECKING:
    from conveyor.app.core import App
    from conveyor.app.jobs import JobDef

__all__ = ["DEFAULT_BACKTRACE_LINES", "JobRunner", "Outcome", "UnknownJobType", "errtype_of"]

logger = logging.getLogger("conveyor.worker")

DEFAULT_BACKTRACE_LINES = 30
"""Backtrace lines sent with FAIL when neither the job nor its declaration says."""


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

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def dead(self) -> bool:
        """True when retrying cannot help (the payload does not fit the handler)."""
        return isinstance(self.error, PayloadError)

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


class JobRunner:
    """Executes jobs of one app: builds and caches each jobtype's handler chain."""

    def __init__(
        self,
        app: App,
        *,
        middleware: Sequence[Middleware] = (),
        threads: Executor | None = None,
        wid: str = "",
    ) -> None:
        self.app = app
        self.extra_middleware = list(middleware)
        self.threads = threads
        self.wid = wid
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
        return _Plan(handler, jobdef.fn if bare else None, jobdef.payload.decode)

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
        ctx = JobContext(job, wid=self.wid, cancelled_jids=self.cancelled)
        token = set_current(ctx)
        jobdef = self.app.jobs.get(job.jobtype)
        try:
            if jobdef is None:
                raise UnknownJobType(f"no handler for jobtype {job.jobtype!r} in this worker")
            plan = self._plans.get(jobdef.name) or self._plan(jobdef)
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
            await self._report_error(ctx, exc)
            return outcome
        finally:
            reset_current(token)
        return Outcome(job, result=result)

    async def _report_error(self, ctx: JobContext, exc: BaseException) -> None:
        for handler in self.app.error_handlers:
            try:
                await _call_hook(handler, ctx, exc)
            except Exception:
                ctx.logger.exception("error handler %r failed", handler)
