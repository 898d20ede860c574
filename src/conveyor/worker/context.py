"""The job context: what a running handler can ask about the job it runs.

``conveyor.current_job()`` works in async handlers, in sync handlers (their thread runs in a
copy of the context) and in hooks and middleware.
"""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Set
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from conveyor.errors import JobCancelled
from conveyor.job import Job
from conveyor.timefmt import format_time

if TYPE_CHECKING:
    from conveyor.app.batches import BatchRef
    from conveyor.app.core import App

__all__ = [
    "AfterHook",
    "BeforeHook",
    "ErrorHandler",
    "Handler",
    "JobContext",
    "Middleware",
    "current_job",
]

logger = logging.getLogger("conveyor.worker")


class JobLogger(logging.LoggerAdapter[logging.Logger]):
    """Prefixes every message with the job it belongs to and adds ``jid``/``jobtype`` extras."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        extra = self.extra or {}
        kwargs.setdefault("extra", {}).update(extra)
        return f"[{extra.get('jobtype')} {extra.get('jid')}] {msg}", kwargs


@dataclass(slots=True)
class JobContext:
    """One execution of one job. ``job`` is the real job as fetched (jid, queue, custom...)."""

    job: Job
    wid: str = ""
    state: dict[str, Any] = field(default_factory=dict)
    """Free space for middleware and hooks to pass values along one execution."""
    app: App | None = None
    """The app whose worker runs the job (its connections serve ``progress``, ``extend``)."""
    cancelled_jids: Set[str] = frozenset()
    """The jids the worker was told are cancelled (its own set, shared by every context)."""

    @property
    def jid(self) -> str:
        return self.job.jid

    @property
    def jobtype(self) -> str:
        return self.job.jobtype

    @property
    def queue(self) -> str:
        return self.job.queue

    @property
    def custom(self) -> Mapping[str, Any]:
        return self.job.custom or {}

    @property
    def retry_count(self) -> int:
        """How many times this job failed before: 0 on the first run. A ``RetryAfter``
        does not count (its ``failure`` has no ``retry_count`` until a real failure)."""
        failure = self.job.failure
        if not failure or "retry_count" not in failure:
            return 0
        return int(failure["retry_count"]) + 1

    @property
    def cancelled(self) -> bool:
        """Whether this job was cancelled while it runs (docs/cancellation.md). An async
        handler is stopped by the worker (``CancelledError`` at its next ``await``); a sync one
        runs in a thread that cannot be stopped, so it looks here now and then and returns or
        raises (``raise_if_cancelled``): the job ends as cancelled either way."""
        return self.job.jid in self.cancelled_jids

    def raise_if_cancelled(self) -> None:
        """Raise ``conveyor.JobCancelled`` if this job was cancelled (for sync handlers)."""
        if self.job.jid in self.cancelled_jids:
            raise JobCancelled(f"job {self.job.jid} was cancelled")

    @property
    def logger(self) -> logging.LoggerAdapter[logging.Logger]:
        return JobLogger(logger, {"jid": self.job.jid, "jobtype": self.job.jobtype})

    # -- tracking and batches (Faktory Enterprise's TRACK and BATCH) -----------------------------

    def _app(self) -> App:
        if self.app is None:
            raise RuntimeError("this job context has no app (not run by a conveyor worker)")
        return self.app

    async def progress(self, percent: int | None = None, desc: str | None = None) -> None:
        """Report progress (``TRACK SET``): ``percent`` 0-100 and/or a description, shown by
        ``app.track(jid)``, ``TRACK GET`` and the dashboard."""
        jid = self.job.jid
        await self._app().call(lambda c: c.track_set(jid, percent=percent, desc=desc))

    async def extend(self, seconds: float) -> None:
        """Keep the job reserved ``seconds`` from now (at most 24 hours): a job that runs
        longer than its ``reserve_for`` is not handed to another worker. Never shortens."""
        if not 0 < seconds <= 86_400:
            raise ValueError(f"extend() takes 0 < seconds <= 86400, not {seconds}")
        until = format_time(time.time() + seconds)
        jid = self.job.jid
        await self._app().call(lambda c: c.track_set(jid, reserve_until=until))

    def progress_sync(self, percent: int | None = None, desc: str | None = None) -> None:
        """``progress`` for sync handlers (they run in a thread)."""
        self._app().sync.run(self.progress(percent, desc))

    def extend_sync(self, seconds: float) -> None:
        """``extend`` for sync handlers."""
        self._app().sync.run(self.extend(seconds))

    @property
    def batch(self) -> BatchRef | None:
        """The batch this job belongs to (``custom.bid``), or None: ``async with
        ctx.batch.open():`` adds jobs to it."""
        from conveyor.app.batches import BatchRef

        bid = self.custom.get("bid") or self.custom.get("_bid")
        return BatchRef(self._app(), str(bid)) if bid else None


_current: contextvars.ContextVar[JobContext] = contextvars.ContextVar("conveyor_job")


def current_job() -> JobContext:
    """The context of the job running now; ``LookupError`` outside a job."""
    try:
        return _current.get()
    except LookupError:
        raise LookupError("current_job() called outside a running job") from None


def set_current(ctx: JobContext) -> contextvars.Token[JobContext]:
    return _current.set(ctx)


def reset_current(token: contextvars.Token[JobContext]) -> None:
    _current.reset(token)


Handler = Callable[[JobContext], Awaitable[Any]]
"""What middleware wraps: run the job of this context, return the handler's result."""

Middleware = Callable[[Handler], Handler]
"""``handler -> handler``: return a handler that does something around the one it got."""

BeforeHook = Callable[[JobContext], Awaitable[None] | None]
AfterHook = Callable[[JobContext, BaseException | None], Awaitable[None] | None]
ErrorHandler = Callable[[JobContext, BaseException], Awaitable[None] | None]
