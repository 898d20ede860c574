"""A declared job: the function, its options, and its typed producer side.

``@app.job`` returns a ``JobDef``. Calling it runs the function inline (handy in tests);
``await send_email.push(msg)`` enqueues it and returns the jid; ``send_email.options(...)``
returns a copy with per-call options; ``send_email.build(msg)`` returns the ``Job`` without
pushing it (for ``app.push_bulk``). Every ``*_sync`` method is the async one run by the app's
sync runner: there is one implementation.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import inspect
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

from conveyor.app.aggregate import Aggregate, AggregatePayload
from conveyor.app.payload import PayloadSpec
from conveyor.job import DEFAULT_QUEUE, Job
from conveyor.timefmt import format_time

if TYPE_CHECKING:
    from conveyor.app.core import App
    from conveyor.app.workflows import Signature
    from conveyor.retries import BackoffPolicy
    from conveyor.worker.context import AfterHook, BeforeHook, Middleware
    from conveyor.worker.ratelimit import RateLimit

__all__ = ["JobDef", "JobOptions", "new_jid"]

P = ParamSpec("P")
R = TypeVar("R")


_JID_HEX_CHARS = 24
_JIDS_PER_DRAW = 256
# Jids drawn ahead from one os.urandom call (a syscall per jid was 18 % of a bulk push).
# deque.popleft is atomic, so threads never share a jid; a forked child starts empty, so it
# never reuses its parent's.
_jids: collections.deque[str] = collections.deque()
os.register_at_fork(after_in_child=_jids.clear)


def new_jid() -> str:
    """24 random hex characters (96 bits from ``os.urandom``), like the Ruby client's jids."""
    try:
        return _jids.popleft()
    except IndexError:
        block = os.urandom(_JID_HEX_CHARS // 2 * _JIDS_PER_DRAW).hex()
        _jids.extend(
            block[i : i + _JID_HEX_CHARS] for i in range(_JID_HEX_CHARS, len(block), _JID_HEX_CHARS)
        )
        return block[:_JID_HEX_CHARS]


UNIQUE_UNTIL = ("success", "start")


def seconds_option(value: float | dt.timedelta, name: str, minimum: float) -> float:
    seconds = value.total_seconds() if isinstance(value, dt.timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < minimum:
        raise ValueError(f"{name} must be a number of seconds, at least {minimum:g}: {value!r}")
    return float(seconds)


@dataclasses.dataclass(frozen=True, slots=True)
class JobOptions:
    """Options written into each pushed job. ``None`` leaves the server's default.

    ``unique_for``/``unique_until`` and ``expires_in``/``expires_at`` are Faktory
    Enterprise's keys of ``custom`` (docs/admission.md); the server checks them at PUSH."""

    queue: str = DEFAULT_QUEUE
    retry: int | None = None
    reserve_for: int | None = None
    backtrace: int | None = None
    custom: Mapping[str, Any] | None = None
    at: dt.datetime | None = None
    delay_seconds: float | None = None
    jid: str | None = None
    unique_for: float | None = None
    unique_until: str | None = None
    expires_in: float | None = None
    expires_at: dt.datetime | None = None
    group: str | None = None
    result_ttl: float | None = None
    """Seconds the server keeps the job's result (``custom.result_ttl``); 0: none."""
    retain: float | None = None
    """Seconds the server keeps the job after it succeeded (``custom.retain``); 0: none."""

    def __post_init__(self) -> None:
        for name in ("result_ttl", "retain"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float) or value < 0
            ):
                raise ValueError(f"{name} must be a number of seconds >= 0, got {value!r}")
        if self.unique_until is not None and self.unique_until not in UNIQUE_UNTIL:
            raise ValueError(
                f'unique_until must be "success" or "start", not {self.unique_until!r}'
            )
        if self.expires_in is not None and self.expires_at is not None:
            raise ValueError("give either expires_in= or expires_at=, not both")
        if self.expires_at is not None and self.expires_at.tzinfo is None:
            raise ValueError("expires_at= needs a timezone-aware datetime")

    def custom_fields(self) -> dict[str, Any] | None:
        """``custom`` as pushed: the given mapping plus the unique and expiry keys, and
        ``result_ttl`` and ``retain``."""
        custom = dict(self.custom) if self.custom else {}
        if self.unique_for is not None:
            custom["unique_for"] = self.unique_for
        if self.unique_until is not None:
            custom["unique_until"] = self.unique_until
        if self.expires_in is not None:
            custom["expires_in"] = self.expires_in
        if self.expires_at is not None:
            custom["expires_at"] = format_time(self.expires_at.timestamp())
        for name in ("result_ttl", "retain"):
            value = getattr(self, name)
            if value is not None:
                custom[name] = int(value) if value == int(value) else value
        return custom or None

    def merged(self, **changes: Any) -> JobOptions:
        """A copy with ``changes`` applied; ``custom`` dicts are merged, not replaced. An
        expiry given replaces the other kind (``expires_in`` or ``expires_at``)."""
        if changes.get("custom") is not None and self.custom:
            changes["custom"] = {**self.custom, **changes["custom"]}
        if "expires_in" in changes:
            changes.setdefault("expires_at", None)
        elif "expires_at" in changes:
            changes["expires_in"] = None
        return dataclasses.replace(self, **changes)

    def schedule(self) -> str:
        if self.at is not None and self.delay_seconds is not None:
            raise ValueError("give either at= or in_=, not both")
        if self.at is not None:
            if self.at.tzinfo is None:
                raise ValueError("at= needs a timezone-aware datetime (e.g. datetime.now(UTC))")
            return format_time(self.at.timestamp())
        if self.delay_seconds is not None:
            return format_time(time.time() + self.delay_seconds)
        return ""


class JobDef(Generic[P, R]):
    """A job type: its handler, its default options and how it maps to ``args``."""

    def __init__(
        self,
        app: App,
        fn: Callable[P, R],
        *,
        name: str,
        options: JobOptions,
        timeout: float | None,
        raw: bool,
        middleware: Sequence[Middleware],
        group: str | None = None,
        aggregate: Aggregate | None = None,
        backoff: BackoffPolicy | None = None,
        rate_limit: RateLimit | None = None,
    ) -> None:
        self.app = app
        self.fn = fn
        self.name = name
        self.defaults = options
        self.timeout = timeout
        self.group = group
        self.backoff = backoff
        """``(retry_count) -> seconds`` before the next retry; None: the server's backoff."""
        self.rate_limit = rate_limit
        """At most this many jobs of this type in each worker process (``ratelimit.py``)."""
        self.middleware: list[Middleware] = list(middleware)
        self.before_hooks: list[BeforeHook] = []
        self.after_hooks: list[AfterHook] = []
        self.aggregate = aggregate
        self.payload: PayloadSpec | AggregatePayload = PayloadSpec(fn, raw=raw)
        if aggregate is not None:
            self.payload = AggregatePayload(fn, self.payload)
        self.is_async = inspect.iscoroutinefunction(fn)
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn

    def __repr__(self) -> str:
        return f"<JobDef {self.name} queue={self.defaults.queue}>"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the function here and now, as a plain call (no queue, no hooks). An aggregated
        job takes one item, and its handler runs on a list of that one item."""
        if self.aggregate is not None:
            return self.fn([*args], **kwargs)  # type: ignore[arg-type]
        return self.fn(*args, **kwargs)

    # -- hooks and middleware for this job only -------------------------------------------------

    def before(self, hook: BeforeHook) -> BeforeHook:
        """Register a hook run before each execution of this job (after the global ones)."""
        self.before_hooks.append(hook)
        return hook

    def after(self, hook: AfterHook) -> AfterHook:
        """Register a hook run after each execution, with the exception or ``None``."""
        self.after_hooks.append(hook)
        return hook

    def use(self, middleware: Middleware) -> Middleware:
        """Add job-level middleware (innermost: it runs closest to the function)."""
        self.middleware.append(middleware)
        return middleware

    # -- producing -------------------------------------------------------------------------------

    def options(
        self,
        *,
        queue: str | None = None,
        at: dt.datetime | None = None,
        in_: float | dt.timedelta | None = None,
        retry: int | None = None,
        reserve_for: int | None = None,
        backtrace: int | None = None,
        custom: Mapping[str, Any] | None = None,
        jid: str | None = None,
        track: bool | None = None,
        after: Sequence[str] | None = None,
        unique_for: float | dt.timedelta | None = None,
        unique_until: str | None = None,
        expires_in: float | dt.timedelta | None = None,
        expires_at: dt.datetime | None = None,
        group: str | None = None,
        result_ttl: float | None = None,
        retain: float | None = None,
    ) -> JobDef[P, R]:
        """A copy of this job that pushes with these options (the handler is the same).

        ``unique_for`` (seconds or a timedelta, at least 1) refuses a push while a job of the
        same type and args is pending (``conveyor.NotUnique``); ``unique_until="start"`` ends
        that when it starts instead of when it succeeds. ``expires_in``/``expires_at`` drop the
        job, never run, once that time has passed (docs/admission.md). ``track=True``: the
        server tracks the job (``app.track(jid)``; other jobs may wait for it).
        ``after=[jid, ...]``: the job waits on the server until those tracked jobs have
        succeeded, and goes to the dead set if one of them dies (docs/batches.md). ``group``:
        the aggregating group a job declared with ``aggregate=`` joins. ``result_ttl``: keep the
        handler's return value that many seconds (``app.result()`` reads it); ``retain``: keep
        the job that long after it succeeded, in the completed set. 0 turns off what the job's
        declaration or the app asked for."""
        if group is not None and self.aggregate is None:
            raise TypeError(f"{self.name}: group= is for jobs declared with aggregate=")
        extra: dict[str, Any] = {}
        if track:
            extra["track"] = 1
        if after is not None:
            if isinstance(after, str):
                raise TypeError("after= takes a list of jids, not one string")
            extra["after"] = list(after)
        if extra:
            custom = {**(custom or {}), **extra}
        changes: dict[str, Any] = {
            "queue": queue,
            "at": at,
            "retry": retry,
            "reserve_for": reserve_for,
            "backtrace": backtrace,
            "custom": custom,
            "jid": jid,
            "unique_until": unique_until,
            "expires_at": expires_at,
            "group": group,
            "result_ttl": result_ttl,
            "retain": retain,
        }
        if unique_for is not None:
            changes["unique_for"] = seconds_option(unique_for, "unique_for", 1)
        if expires_in is not None:
            changes["expires_in"] = seconds_option(expires_in, "expires_in", 0.001)
        if in_ is not None:
            seconds = in_.total_seconds() if isinstance(in_, dt.timedelta) else float(in_)
            changes["delay_seconds"] = seconds
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone.defaults = self.defaults.merged(**{k: v for k, v in changes.items() if v is not None})
        return clone

    def s(self, *args: P.args, **kwargs: P.kwargs) -> Signature:
        """A signature: this job with these args, for ``conveyor.chain`` and
        ``conveyor.group`` (and batch callbacks)."""
        from conveyor.app.workflows import Signature

        if kwargs:
            raise TypeError(
                f"{self.name}: Faktory args are positional; pass {sorted(kwargs)} positionally"
            )
        return Signature(self, tuple(args))

    def si(self, *args: P.args, **kwargs: P.kwargs) -> Signature:
        """An immutable signature: in a chain (or as a group's callback) it runs with these
        args only, without the results of the steps before (Celery's ``si``)."""
        from conveyor.app.workflows import Signature

        if kwargs:
            raise TypeError(
                f"{self.name}: Faktory args are positional; pass {sorted(kwargs)} positionally"
            )
        return Signature(self, tuple(args), immutable=True)

    def build(self, *args: P.args, **kwargs: P.kwargs) -> Job:
        """The job that ``push`` would send, without sending it."""
        if kwargs:
            raise TypeError(
                f"{self.name}: Faktory args are positional; pass {sorted(kwargs)} positionally"
            )
        opts = self.defaults
        custom = opts.custom_fields()
        if self.aggregate is not None:
            if not opts.group:
                raise ValueError(
                    f"{self.name} is aggregated: push it with .options(group=...).push(item)"
                )
            custom = {**(custom or {}), "aggregate": self.aggregate.to_custom()}
            custom["group"] = opts.group
        return Job(
            jid=opts.jid or new_jid(),
            jobtype=self.name,
            queue=opts.queue,
            args=self.payload.encode(args),
            retry=opts.retry,
            reserve_for=opts.reserve_for or 0,
            backtrace=opts.backtrace or 0,
            custom=custom,
            at=opts.schedule(),
        )

    async def push(self, *args: P.args, **kwargs: P.kwargs) -> str:
        """Enqueue one execution; returns its jid once the server has accepted it."""
        job = self.build(*args, **kwargs)
        await self.app.push_job(job)
        return job.jid

    def push_sync(self, *args: P.args, **kwargs: P.kwargs) -> str:
        """``push`` for code that is not async (runs on the app's background loop)."""
        return self.app.sync.run(self.push(*args, **kwargs))
