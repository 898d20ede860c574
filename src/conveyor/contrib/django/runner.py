"""The worker side: an ``App`` whose jobs are the ``@task`` functions of a Django project.

A job's ``jobtype`` is a task's module path. The first job of a jobtype imports it -- only from
the modules of ``INSTALLED_APPS`` (or the backend's ``task_modules`` option), and only if it
is a ``Task`` of this backend -- and declares it as a conveyor job, so no list of tasks needs
to be kept. A jobtype that is not such a task fails like any unknown jobtype (and is retried:
a newer deploy may know it).

Each run sends Django's ``task_started`` and ``task_finished`` signals with a ``TaskResult``
that has the job's jid as its id. Synchronous tasks run in the worker's threads, each between
two ``close_old_connections()`` calls, as Django's request cycle does for views.
"""

from __future__ import annotations

import inspect
import traceback
from collections.abc import Callable
from typing import Any

from django.apps import apps
from django.db import close_old_connections
from django.utils import timezone
from django.utils.module_loading import import_string

import conveyor
from conveyor.app.jobs import JobDef
from conveyor.contrib.django._compat import (
    Task,
    TaskContext,
    TaskError,
    TaskResult,
    TaskResultStatus,
    task_backends,
    task_finished,
    task_started,
)
from conveyor.contrib.django.backend import ConveyorBackend, new_result
from conveyor.job import Job

__all__ = ["DjangoTasksApp"]


class _TaskJobs(dict[str, JobDef[Any, Any]]):
    """``App.jobs`` that declares a Django task the first time its jobtype is looked up."""

    def __init__(self, resolve: Callable[[str], JobDef[Any, Any] | None]) -> None:
        super().__init__()
        self._resolve = resolve

    def get(self, key: str, default: Any = None) -> Any:
        found = super().get(key)
        if found is None:
            found = self._resolve(key)
        return default if found is None else found


class DjangoTasksApp(conveyor.App):
    """The jobs of backend ``alias`` (a ``ConveyorBackend`` in ``settings.TASKS``)."""

    def __init__(self, alias: str = "default") -> None:
        backend = task_backends[alias]
        if not isinstance(backend, ConveyorBackend):
            raise ValueError(
                f"TASKS[{alias!r}] is {type(backend).__name__}, not conveyor's ConveyorBackend"
            )
        options = backend.conveyor_options
        super().__init__(options.get("url"), password=options.get("password"))
        self.backend = backend
        self.jobs = _TaskJobs(self._declare)
        modules = [config.name for config in apps.get_app_configs()]
        self.task_modules = tuple(modules + list(options.get("task_modules") or ()))

    def _declare(self, path: str) -> JobDef[Any, Any] | None:
        if not any(path.startswith(module + ".") for module in self.task_modules):
            return None
        try:
            found = import_string(path)
        except ImportError:
            return None
        if not isinstance(found, Task) or found.get_backend() is not self.backend:
            return None
        return self.register(_runner(found, self.backend), name=path, raw=True)


def _call(task: Task, job: Job, result: TaskResult) -> tuple[tuple[Any, ...], dict[str, Any]]:
    args: tuple[Any, ...] = tuple(job.args or ())
    kwargs = dict((job.custom or {}).get("kwargs") or {})
    if task.takes_context:
        args = (TaskContext(task_result=result), *args)
    return args, kwargs


def _running(task: Task, job: Job, backend: ConveyorBackend) -> TaskResult:
    result = new_result(task, job.jid, job.args or [], {}, backend.alias, None)
    now = timezone.now()
    object.__setattr__(result, "kwargs", dict((job.custom or {}).get("kwargs") or {}))
    object.__setattr__(result, "status", TaskResultStatus.RUNNING)
    object.__setattr__(result, "started_at", now)
    object.__setattr__(result, "last_attempted_at", now)
    wid = conveyor.current_job().wid
    if wid:
        result.worker_ids.append(wid)
    return result


def _ended(result: TaskResult, error: BaseException | None) -> None:
    object.__setattr__(result, "finished_at", timezone.now())
    if error is None:
        object.__setattr__(result, "status", TaskResultStatus.SUCCESSFUL)
    else:
        cls = type(error)
        result.errors.append(
            TaskError(
                exception_class_path=f"{cls.__module__}.{cls.__qualname__}",
                traceback="".join(traceback.format_exception(error)),
            )
        )
        object.__setattr__(result, "status", TaskResultStatus.FAILED)


def _runner(task: Task, backend: ConveyorBackend) -> Callable[[Job], Any]:
    if inspect.iscoroutinefunction(task.func):

        async def run_async(job: Job) -> Any:
            # Signal receivers are sync code as a rule (the ORM): asend runs them in a thread.
            result = _running(task, job, backend)
            await task_started.asend(type(backend), task_result=result)
            args, kwargs = _call(task, job, result)
            try:
                value = await task.func(*args, **kwargs)
            except BaseException as exc:
                _ended(result, exc)
                await task_finished.asend(type(backend), task_result=result)
                raise
            _ended(result, None)
            await task_finished.asend(type(backend), task_result=result)
            return value

        run_async.__name__ = task.name
        return run_async

    def run(job: Job) -> Any:
        close_old_connections()
        try:
            result = _running(task, job, backend)
            task_started.send(type(backend), task_result=result)
            args, kwargs = _call(task, job, result)
            try:
                value = task.func(*args, **kwargs)
            except BaseException as exc:
                _ended(result, exc)
                task_finished.send(type(backend), task_result=result)
                raise
            _ended(result, None)
            task_finished.send(type(backend), task_result=result)
            return value
        finally:
            close_old_connections()

    run.__name__ = task.name
    return run
