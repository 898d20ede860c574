"""The reading side of results and job state: ``app.result()`` and ``app.job_info()``.

``result`` asks the server with ``RESULT`` (a conveyor extension that waits without polling:
the job's ACK wakes it); a long wait is cut into calls of at most ``WAIT_PER_CALL_SECONDS``, so
no single command outlives idle timeouts of proxies in between. ``job_info`` is ``ADMIN
job.show`` turned into a ``JobInfo``.
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass, field
from typing import Any

from conveyor.client import Client
from conveyor.errors import JobFailed
from conveyor.pool import ConnectionPool

__all__ = ["WAIT_PER_CALL_SECONDS", "JobInfo", "job_result", "value_of"]

WAIT_PER_CALL_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class JobInfo:
    """What the server knows about one job (``app.job_info``).

    ``state`` is conveyor's name of where the job is (``queued``, ``scheduled``, ``working``,
    ``retries``, ``dead``, ``completed``, ``done``, ``discarded``, ...; docs/results.md has the
    table) and ``asynq_state`` Asynq's (``pending``, ``active``, ``retry``, ``archived``, ...).
    ``job`` is the payload where the job is now. ``at`` and ``at_means`` tell a sorted set's
    time (``runs at``, ``retries at``, ``expires at``); ``reservation`` the worker running it;
    ``outcome`` how it ended, with ``result`` when it succeeded. ``batch`` is the bid of its
    batch (also once only its result is left), ``tracking`` its tracked state and progress
    (``TRACK GET``), ``after`` the jobs it waits (``state`` ``waiting``) or waited for
    (docs/batches.md). ``data`` is the whole view as the server sent it (``conveyor job show
    --json``)."""

    jid: str
    state: str
    asynq_state: str
    queue: str
    jobtype: str
    job: dict[str, Any]
    failure: dict[str, Any] | None = None
    at: str = ""
    at_means: str = ""
    reservation: dict[str, Any] | None = None
    outcome: dict[str, Any] | None = None
    result: Any = None
    batch: str = ""
    tracking: dict[str, Any] | None = None
    after: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, view: dict[str, Any]) -> JobInfo:
        job = view.get("job") or {}
        failure = job.get("failure")
        return cls(
            jid=str(view.get("jid", "")),
            state=str(view.get("state", "")),
            asynq_state=str(view.get("asynq_state", "")),
            queue=str(view.get("queue", "")),
            jobtype=str(view.get("jobtype", "")),
            job=job,
            failure=failure if isinstance(failure, dict) else None,
            at=str(view.get("at", "")),
            at_means=str(view.get("at_means", "")),
            reservation=view.get("reservation"),
            outcome=view.get("outcome"),
            result=view.get("result"),
            batch=str(view.get("batch") or ""),
            tracking=view.get("tracking"),
            after=[str(jid) for jid in view.get("after") or ()],
            data=view,
        )


async def job_result(pool: ConnectionPool[Client], jid: str, timeout: float) -> Any:  # noqa: ASYNC109
    """``App.result``: see there."""
    if timeout < 0:
        raise ValueError(f"timeout must not be negative, got {timeout}")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        wait = min(max(deadline - loop.time(), 0.0), WAIT_PER_CALL_SECONDS)
        outcome = await pool.run(functools.partial(_ask, jid=jid, wait=wait))
        if outcome is not None:
            return value_of(jid, outcome)
        if loop.time() >= deadline:
            raise TimeoutError(f"job {jid} has no result after {timeout:g}s")


async def _ask(client: Client, jid: str, wait: float) -> dict[str, Any] | None:
    return await client.result(jid, wait)


def value_of(jid: str, outcome: dict[str, Any]) -> Any:
    """The result of a ``RESULT`` reply, or ``JobFailed`` for a job that did not succeed."""
    if outcome.get("state") == "succeeded":
        return outcome.get("result")
    backtrace = outcome.get("backtrace")
    raise JobFailed(
        jid,
        str(outcome.get("errtype") or outcome.get("state") or "unknown"),
        str(outcome.get("message") or ""),
        tuple(str(line) for line in backtrace) if isinstance(backtrace, list) else (),
    )
