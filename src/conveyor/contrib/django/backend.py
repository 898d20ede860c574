"""``ConveyorBackend``: ``django.tasks`` pushes to a conveyor (or Faktory) server.

A task becomes one job:

* ``jobtype``: the task function's module path (``shop.tasks.send_receipt``);
* ``args``: the positional arguments; keyword arguments, if any, go in ``custom.kwargs``;
* ``queue``: the task's ``queue_name``; ``at``: its ``run_after``;
* ``jid``: the ``TaskResult.id`` that ``enqueue`` returns;
* ``retry`` and ``reserve_for``: the backend's ``OPTIONS`` (default: conveyor's, 25 retries).

Priorities are not supported (Faktory has none within a queue: use queues), nor are results
(``get_result``): the return value of a task is not kept.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.utils import timezone

import conveyor
from conveyor.app.jobs import new_jid
from conveyor.contrib.django._compat import (
    BaseTaskBackend,
    Task,
    TaskResult,
    TaskResultStatus,
    task_enqueued,
)
from conveyor.job import Job
from conveyor.timefmt import format_time

__all__ = ["ConveyorBackend", "job_for", "new_result"]

OPTION_KEYS = frozenset({"url", "password", "retry", "reserve_for", "task_modules"})


def job_for(task: Task, args: Any, kwargs: Any, *, jid: str, options: dict[str, Any]) -> Job:
    """The conveyor job that runs ``task(*args, **kwargs)``."""
    at = ""
    if task.run_after is not None:
        at = format_time(task.run_after.timestamp())
    return Job(
        jid=jid,
        jobtype=task.module_path,
        queue=task.queue_name,
        args=list(args),
        custom={"kwargs": dict(kwargs)} if kwargs else None,
        retry=options.get("retry"),
        reserve_for=int(options.get("reserve_for") or 0),
        at=at,
    )


def new_result(
    task: Task, jid: str, args: Any, kwargs: Any, alias: str, enqueued_at: dt.datetime | None
) -> TaskResult:
    return TaskResult(
        task=task,
        id=jid,
        status=TaskResultStatus.READY,
        enqueued_at=enqueued_at,
        started_at=None,
        last_attempted_at=None,
        finished_at=None,
        args=list(args),
        kwargs=dict(kwargs),
        backend=alias,
        errors=[],
        worker_ids=[],
    )


class ConveyorBackend(BaseTaskBackend):  # type: ignore[misc]
    supports_defer = True
    supports_async_task = True
    supports_get_result = False
    supports_priority = False

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        options = {str(k).lower(): v for k, v in (self.options or {}).items()}
        unknown = set(options) - OPTION_KEYS
        if unknown:
            raise ValueError(
                f"TASKS[{alias!r}] OPTIONS: unknown {sorted(unknown)}; known: {sorted(OPTION_KEYS)}"
            )
        self.conveyor_options = options
        self.app = conveyor.App(options.get("url"), password=options.get("password"))
        """Pushes this backend's jobs (its own connections, per event loop)."""

    def _prepare(self, task: Task, args: Any, kwargs: Any) -> tuple[Job, TaskResult]:
        self.validate_task(task)
        jid = new_jid()
        job = job_for(task, args, kwargs, jid=jid, options=self.conveyor_options)
        return job, new_result(task, jid, args, kwargs, self.alias, timezone.now())

    def enqueue(self, task: Task, args: Any, kwargs: Any) -> TaskResult:
        job, result = self._prepare(task, args, kwargs)
        self.app.sync.run(self.app.push_job(job))
        task_enqueued.send(type(self), task_result=result)
        return result

    async def aenqueue(self, task: Task, args: Any, kwargs: Any) -> TaskResult:
        job, result = self._prepare(task, args, kwargs)
        await self.app.push_job(job)
        task_enqueued.send(type(self), task_result=result)
        return result
