"""Manager middleware: the four hook points Faktory's Enterprise features plug into.

A middleware subclasses ``Middleware`` and overrides the hooks it needs; each hook receives a
context and ``call_next`` and must await ``call_next()`` to continue (or raise to stop)::

    class Audit(Middleware):
        async def push(self, ctx: PushContext, call_next: Next) -> None:
            log.info("push %s", ctx.job.jid)
            await call_next()

* ``push``: before a job is stored. Change ``ctx.job``, or raise ``Halt(code, message)``
  (the client gets ``-<code> <message>``, e.g. ``NOTUNIQUE``) to refuse it, or ``Drop`` to
  accept it without storing it (an expiring job that has expired already, a job to
  aggregate, kept in its group instead; a job held back until the jobs it waits for
  succeed).
* ``fetch``: after a job was reserved for a worker, before it is sent. Raise ``Discard`` to
  drop it (its reservation ends, counted neither processed nor failed, and the fetch goes on
  with the next job).
* ``ack``: around the end of a successful job.
* ``fail``: around a failure; ``ctx.outcome`` says where the job goes and may be changed;
  after ``call_next()``, ``ctx.moved`` says whether it went there.

Only overridden hooks are chained, so a manager with no middleware pays nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from conveyor.errors import ConveyorError
from conveyor.job import Job
from conveyor.manager.retry import FailureReport
from conveyor.store.base import FailOutcome, Reservation

if TYPE_CHECKING:
    from conveyor.manager.core import Manager

__all__ = [
    "AckContext",
    "Discard",
    "Drop",
    "FailContext",
    "FetchContext",
    "Middleware",
    "Next",
    "PushContext",
    "run_chain",
]

Next = Callable[[], Awaitable[None]]


class Discard(ConveyorError):
    """Raised by fetch middleware: drop this job instead of handing it to the worker."""


class Drop(ConveyorError):
    """Raised by push middleware (or returned by ``Feature.push_many``): the PUSH succeeds,
    but the job is not stored; the hook has put it where it belongs.

    ``durable``: the durability of a write the hook made instead (a job kept in its group, a
    job waiting for others), from ``Store.durable()`` right after it; the PUSH awaits it
    before its ``+OK``, and a PUSHB awaits all of its jobs' at the end, so they share one
    commit."""

    def __init__(self, message: str = "", durable: Awaitable[None] | None = None) -> None:
        super().__init__(message)
        self.durable = durable


@dataclass(slots=True)
class PushContext:
    manager: Manager
    job: Job


@dataclass(slots=True)
class FetchContext:
    manager: Manager
    reservation: Reservation
    job: Job
    send: bytes | None = None
    """Set by a hook: the payload the worker is sent instead of the stored one (the stored
    job does not change; workflows put the previous steps' results into the args)."""


@dataclass(slots=True)
class AckContext:
    manager: Manager
    jid: str
    reservation: Reservation | None


@dataclass(slots=True)
class FailContext:
    manager: Manager
    reservation: Reservation
    job: Job
    report: FailureReport
    outcome: FailOutcome
    moved: bool = False
    """Set once the chain's end ran: the job went where ``outcome`` says (False: its
    reservation was gone already, acked or failed by someone else meanwhile)."""


class Middleware:
    """Base class with pass-through hooks; override the ones you need."""

    async def push(self, ctx: PushContext, call_next: Next) -> None:
        await call_next()

    async def fetch(self, ctx: FetchContext, call_next: Next) -> None:
        await call_next()

    async def ack(self, ctx: AckContext, call_next: Next) -> None:
        await call_next()

    async def fail(self, ctx: FailContext, call_next: Next) -> None:
        await call_next()


HOOKS = ("push", "fetch", "ack", "fail")


def hooks_of(middleware: Sequence[Middleware], hook: str) -> list[Callable[..., Awaitable[None]]]:
    """The bound hook methods that actually override the base class, in registration order."""
    base = getattr(Middleware, hook)
    return [getattr(m, hook) for m in middleware if getattr(type(m), hook) is not base]


async def run_chain(
    hooks: Sequence[Callable[..., Awaitable[None]]],
    ctx: object,
    final: Callable[[], Awaitable[None]],
) -> None:
    """Run ``hooks`` around ``final``: hooks[0] is outermost."""

    async def step(index: int) -> None:
        if index == len(hooks):
            await final()
        else:
            await hooks[index](ctx, lambda: step(index + 1))

    await step(0)
