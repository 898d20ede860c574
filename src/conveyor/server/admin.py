"""``ADMIN <op> [{json}]``: conveyor's inspection and admin extension (docs/protocol.md).

One verb, a table of operations. Each operation decodes its JSON arguments into a struct
(unknown fields are refused), calls the manager's admin API and returns a JSON-ready value
built by ``conveyor.manager.views``, the same views the dashboard's JSON API returns. A
feature adds its operations to ``ADMIN_OPS`` (``cron.list``, ``batch.show``, ...); ``ADMIN ops``
lists them, so a client can tell what the server it talks to can do.

Faktory has standard commands for some of this (INFO, QUEUE, MUTATE, PUSH); the CLI uses those
where they exist. ``ADMIN`` covers what FWP has no command for: listing and finding jobs,
acting on single jobs wherever they are, and the worker processes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from conveyor.errors import CommandError
from conveyor.manager import Manager, WorkerState, views
from conveyor.manager.features.aggregation import AggregateFeature, group_key
from conveyor.manager.features.cancellation import CancelFeature
from conveyor.manager.jobinfo import job_infos
from conveyor.server.admin_cron import CRON_OPS
from conveyor.store.base import JobFilter, SortedSet

if TYPE_CHECKING:
    from conveyor.manager.features.batches import BatchFeature

__all__ = ["ADMIN_OPS", "ADMIN_VERSION", "MAX_ADMIN_ITEMS", "run_admin"]

ADMIN_VERSION = 1
"""Bumped when an operation changes in a way an older client would misread."""
MAX_ADMIN_ITEMS = 1000
"""The most jobs one ``job.list`` returns and one ``job.*`` action takes: replies stay small."""


class _Args(msgspec.Struct, forbid_unknown_fields=True):
    pass


class NoArgs(_Args):
    pass


class QueueArgs(_Args):
    queue: str


class ListArgs(_Args):
    where: str
    jobtype: str | None = None
    search: str | None = None
    offset: int = 0
    limit: int = 25


class JidsArgs(_Args):
    jids: list[str]


class WorkersArgs(_Args):
    wids: list[str] = []
    all: bool = False


class HistoryArgs(_Args):
    days: int = 7


class BatchListArgs(_Args):
    search: str = ""
    offset: int = 0
    limit: int = 25


class BatchShowArgs(_Args):
    bid: str
    offset: int = 0
    limit: int = 50


class GroupListArgs(_Args):
    offset: int = 0
    limit: int = 25


class GroupArgs(_Args):
    key: str | None = None
    queue: str = "default"
    jobtype: str | None = None
    group: str | None = None
    offset: int = 0
    limit: int = 25


A = TypeVar("A", bound=_Args)
AdminOp = Callable[[Manager, bytes], Awaitable[Any]]


def _decode(op: str, kind: type[A], raw: bytes) -> A:
    try:
        return msgspec.json.decode(raw or b"{}", type=kind)
    except msgspec.DecodeError as exc:
        raise CommandError(f"invalid ADMIN {op} arguments: {exc}") from None
    except msgspec.ValidationError as exc:
        raise CommandError(f"invalid ADMIN {op} arguments: {exc}") from None


async def _ops(manager: Manager, raw: bytes) -> Any:
    _decode("ops", NoArgs, raw)
    return {"version": ADMIN_VERSION, "ops": sorted(ADMIN_OPS)}


async def _queue_list(manager: Manager, raw: bytes) -> Any:
    _decode("queue.list", NoArgs, raw)
    return {"queues": await views.queues_view(manager)}


async def _known_queue(manager: Manager, name: str) -> dict[str, Any]:
    for info in await views.queues_view(manager):
        if info["name"] == name:
            return info
    raise CommandError(f"no queue named {name}")


async def _queue_inspect(manager: Manager, raw: bytes) -> Any:
    args = _decode("queue.inspect", QueueArgs, raw)
    info = await _known_queue(manager, args.queue)
    return {**info, **await views.queue_counts(manager, args.queue)}


async def _queue_clear(manager: Manager, raw: bytes) -> Any:
    args = _decode("queue.clear", QueueArgs, raw)
    await _known_queue(manager, args.queue)
    return {"deleted": await manager.clear_queue(args.queue)}


async def _job_list(manager: Manager, raw: bytes) -> Any:
    args = _decode("job.list", ListArgs, raw)
    if not 0 <= args.limit <= MAX_ADMIN_ITEMS:
        raise CommandError(f"job.list limit must be from 0 to {MAX_ADMIN_ITEMS}")
    if args.offset < 0:
        raise CommandError("job.list offset must not be negative")
    where = args.where
    if where not in ("busy", *SortedSet):
        await _known_queue(manager, where)
    flt = JobFilter(jobtype=args.jobtype or None, text=args.search or None)
    jobs, total = await views.list_jobs(manager, where, flt, args.offset, args.limit)
    return {"where": where, "total": total, "offset": args.offset, "jobs": jobs}


def _jids(op: str, raw: bytes) -> list[str]:
    jids = _decode(op, JidsArgs, raw).jids
    if not jids or len(jids) > MAX_ADMIN_ITEMS:
        raise CommandError(f"{op} takes from 1 to {MAX_ADMIN_ITEMS} jids")
    return jids


async def _job_show(manager: Manager, raw: bytes) -> Any:
    return {"jobs": await job_infos(manager, _jids("job.show", raw))}


def _batches(manager: Manager) -> BatchFeature:
    from conveyor.manager.features.batches import BatchFeature

    return manager.feature(BatchFeature)


def _page(op: str, offset: int, limit: int) -> None:
    if not 0 <= limit <= MAX_ADMIN_ITEMS:
        raise CommandError(f"{op} limit must be from 0 to {MAX_ADMIN_ITEMS}")
    if offset < 0:
        raise CommandError(f"{op} offset must not be negative")


async def _batch_list(manager: Manager, raw: bytes) -> Any:
    args = _decode("batch.list", BatchListArgs, raw)
    _page("batch.list", args.offset, args.limit)
    return await _batches(manager).listing(args.search, args.offset, args.limit)


async def _batch_show(manager: Manager, raw: bytes) -> Any:
    args = _decode("batch.show", BatchShowArgs, raw)
    _page("batch.show", args.offset, args.limit)
    return await _batches(manager).show(args.bid, args.offset, args.limit)


def _job_action(action: str) -> AdminOp:
    async def act(manager: Manager, raw: bytes) -> Any:
        report = await manager.act_on_jobs(action, _jids(f"job.{action}", raw))
        return {"changed": report.changed, "where": report.where, "refused": report.refused}

    return act


async def _job_cancel(manager: Manager, raw: bytes) -> Any:
    reports = await manager.feature(CancelFeature).cancel(_jids("job.cancel", raw))
    cancelled = sum(1 for report in reports if report.outcome == "cancelled")
    return {"cancelled": cancelled, "jobs": [report.to_json() for report in reports]}


async def _group_list(manager: Manager, raw: bytes) -> Any:
    args = _decode("group.list", GroupListArgs, raw)
    _page("group.list", args.offset, args.limit)
    return await manager.feature(AggregateFeature).groups_view(args.offset, args.limit)


async def _group_show(manager: Manager, raw: bytes) -> Any:
    args = _decode("group.show", GroupArgs, raw)
    _page("group.show", args.offset, args.limit)
    key = args.key
    if key is None:
        if args.jobtype is None or args.group is None:
            raise CommandError('group.show takes {"key": ...} or {"jobtype": ..., "group": ...}')
        key = group_key(args.queue, args.jobtype, args.group)
    view = await manager.feature(AggregateFeature).group_view(key, args.offset, args.limit)
    if view is None:
        raise CommandError(f"no aggregating group {key}")
    return view


async def _worker_list(manager: Manager, raw: bytes) -> Any:
    _decode("worker.list", NoArgs, raw)
    return {"workers": await views.workers_view(manager)}


def _worker_signal(op: str, state: str) -> AdminOp:
    async def signal(manager: Manager, raw: bytes) -> Any:
        args = _decode(op, WorkersArgs, raw)
        if args.all == bool(args.wids):
            raise CommandError(f"{op} takes either wids or all")
        signalled = await manager.signal_workers(None if args.all else args.wids, state)
        return {"signalled": signalled}

    return signal


async def _history(manager: Manager, raw: bytes) -> Any:
    args = _decode("history", HistoryArgs, raw)
    if not 1 <= args.days <= 366:
        raise CommandError("history days must be from 1 to 366")
    return {"history": await views.history_view(manager, args.days)}


ADMIN_OPS: dict[str, AdminOp] = {
    "ops": _ops,
    "history": _history,
    "batch.list": _batch_list,
    "batch.show": _batch_show,
    "queue.list": _queue_list,
    "queue.inspect": _queue_inspect,
    "queue.clear": _queue_clear,
    "job.list": _job_list,
    "job.show": _job_show,
    "job.retry": _job_action("retry"),
    "job.kill": _job_action("kill"),
    "job.delete": _job_action("delete"),
    "job.cancel": _job_cancel,
    "group.list": _group_list,
    "group.show": _group_show,
    "worker.list": _worker_list,
    "worker.quiet": _worker_signal("worker.quiet", WorkerState.QUIET),
    "worker.stop": _worker_signal("worker.stop", WorkerState.TERMINATE),
    **CRON_OPS,
}


async def run_admin(manager: Manager, argument: bytes) -> bytes:
    """The reply body (JSON) of ``ADMIN <op> [{json}]``; ``CommandError`` for a bad request."""
    op, _, raw = argument.strip().partition(b" ")
    if not op:
        raise CommandError("ADMIN needs an operation: ADMIN <op> [{json}]; ADMIN ops lists them")
    name = op.decode("utf-8", "replace")
    handler = ADMIN_OPS.get(name)
    if handler is None:
        raise CommandError(f"unknown ADMIN operation {name}; ADMIN ops lists them")
    return msgspec.json.encode(await handler(manager, raw.strip()))
