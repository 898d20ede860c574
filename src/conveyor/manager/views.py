"""JSON-ready views of what the manager knows: queues, jobs, workers, history.

One shape for every reader: the dashboard renders these dicts and its JSON API returns them,
and the FWP ``ADMIN`` extension (``conveyor.server.admin``) sends them to the CLI, so the
three can never disagree. Only the manager is called, never the store.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from conveyor.store.base import JobFilter, Reservation, SetEntry, SortedSet
from conveyor.timefmt import format_time

if TYPE_CHECKING:
    from conveyor.manager.admin import JobLocation
    from conveyor.manager.core import Manager

__all__ = [
    "busy_rows",
    "decode_payload",
    "entry_row",
    "history_view",
    "iso_time",
    "job_row",
    "list_jobs",
    "location_view",
    "plural",
    "queue_counts",
    "queues_view",
    "short_args",
    "workers_view",
]

SCAN_PAGE = 1000
_SETS = {name.value: name for name in SortedSet}


def decode_payload(payload: bytes) -> dict[str, Any]:
    """The job as a dict; a payload that is not a JSON object is shown as raw text."""
    try:
        job = json.loads(payload)
    except ValueError:
        return {"raw": payload.decode("utf-8", "replace")}
    return job if isinstance(job, dict) else {"raw": job}


def short_args(job: dict[str, Any], limit: int = 120) -> str:
    """The args as compact JSON, cut to ``limit`` characters for table cells."""
    text = json.dumps(job.get("args", []), ensure_ascii=False, separators=(",", ":"))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def plural(count: int, singular: str, plural_form: str | None = None) -> str:
    """``1 job``, ``2 jobs``, ``1,234 jobs``; give ``plural_form`` when it is not ``+s``."""
    word = singular if count == 1 else (plural_form or singular + "s")
    return f"{count:,} {word}"


def iso_time(ts: float | None) -> str:
    return format_time(ts) if ts else ""


def job_row(payload: bytes) -> dict[str, Any]:
    """One job as a table row: the fields people scan for, plus the whole payload."""
    job = decode_payload(payload)
    failure = job.get("failure") if isinstance(job.get("failure"), dict) else None
    error = ""
    if failure:
        error = ": ".join(str(p) for p in (failure.get("errtype"), failure.get("message")) if p)
    return {
        "jid": str(job.get("jid", "")),
        "queue": str(job.get("queue", "")),
        "jobtype": str(job.get("jobtype", "")),
        "args": short_args(job),
        "created_at": job.get("created_at", ""),
        "enqueued_at": job.get("enqueued_at", ""),
        "error": error,
        "failed_at": failure.get("failed_at", "") if failure else "",
        "retry_count": failure.get("retry_count", 0) if failure else 0,
        "job": job,
    }


def entry_row(entry: SetEntry) -> dict[str, Any]:
    """A sorted-set entry: the job row plus its score, as seconds and as a time; a completed
    job also its ending (when, where, how long, and its result, short)."""
    row = {**job_row(entry.payload), "score": entry.score, "at": iso_time(entry.score)}
    completed = row["job"].get("completed")
    if isinstance(completed, dict):
        result = json.dumps(completed.get("result"), ensure_ascii=False, separators=(",", ":"))
        row.update(
            finished_at=completed.get("finished_at", ""),
            duration=completed.get("duration"),
            wid=completed.get("wid", ""),
            result=result if len(result) <= 120 else result[:119] + "…",
        )
    return row


def reservation_row(res: Reservation, now: float) -> dict[str, Any]:
    return {
        **job_row(res.payload),
        "wid": res.wid,
        "reserved_at": iso_time(res.reserved_at),
        "expires_at": iso_time(res.expires_at),
        "running_seconds": max(0.0, now - res.reserved_at),
    }


async def queues_view(manager: Manager) -> list[dict[str, Any]]:
    return [
        {"name": q.name, "size": q.size, "latency": q.latency, "paused": q.paused}
        for q in sorted(await manager.queues(), key=lambda q: q.name)
    ]


async def history_view(manager: Manager, days: int) -> list[dict[str, Any]]:
    return [
        {"day": day, "processed": c.processed, "failed": c.failures}
        for day, c in await manager.history(days)
    ]


async def workers_view(manager: Manager) -> list[dict[str, Any]]:
    return [
        {
            "wid": rec.wid,
            "hostname": rec.hostname,
            "pid": rec.pid,
            "labels": list(rec.labels),
            "started_at": iso_time(rec.started_at),
            "last_beat": iso_time(rec.last_beat),
            "rss_kb": rec.rss_kb,
            "state": rec.state,
            "connections": rec.connections,
            "busy": view.busy,
        }
        for view in sorted(await manager.workers(), key=lambda v: v.record.wid)
        for rec in (view.record,)
    ]


async def busy_rows(manager: Manager, offset: int, limit: int) -> tuple[list[dict[str, Any]], int]:
    """One page of the jobs being worked on, and how many there are."""
    now = time.time()
    page = await manager.busy(offset, limit)
    return [reservation_row(r, now) for r in page.items], page.total


def location_view(location: JobLocation) -> dict[str, Any]:
    """Where a job is now (a queue, a set, or being worked on) and its payload there."""
    row = {**job_row(location.payload), "where": location.where, "queue": location.queue}
    if location.wid:
        row["wid"] = location.wid
    if location.details:
        row["details"] = dict(location.details)
    return row


async def queue_counts(manager: Manager, queue: str) -> dict[str, int]:
    """How many of a queue's jobs are being worked on, scheduled, retrying and dead."""
    counts = {"busy": 0}
    start = 0
    while True:
        page = await manager.busy(start, SCAN_PAGE)
        counts["busy"] += sum(1 for r in page.items if r.queue == queue)
        if len(page.items) < SCAN_PAGE:
            break
        start += len(page.items)
    for name in SortedSet:
        listed = await manager.list_set(name, JobFilter(queue=queue), 0, 0)
        counts[name.value] = listed.total
    return counts


def _matches(row: dict[str, Any], flt: JobFilter, raw: bytes) -> bool:
    if flt.jobtype and row["jobtype"] != flt.jobtype:
        return False
    return not flt.text or flt.text.lower() in raw.decode("utf-8", "replace").lower()


async def list_jobs(
    manager: Manager, where: str, flt: JobFilter, offset: int, limit: int
) -> tuple[list[dict[str, Any]], int | None]:
    """Jobs of a sorted set (``retries``, ``scheduled``, ``dead``, ``completed``), of the jobs
    being worked on
    (``busy``) or of a queue (any other name), filtered by jobtype and text; returns one page
    and the number matching (None when only a full scan could tell: a filtered queue)."""
    name = _SETS.get(where)
    if name is not None:
        newest_first = name in (SortedSet.DEAD, SortedSet.COMPLETED)
        page = await manager.list_set(name, flt, offset, limit, descending=newest_first)
        return [entry_row(e) for e in page.items], page.total
    if flt.is_empty:
        if where == "busy":
            return await busy_rows(manager, offset, limit)
        queued = await manager.list_queue(where, offset, limit)
        return [job_row(job.payload) for job in queued.items], queued.total
    return await _scan(manager, where, flt, offset, limit), None


async def _scan(
    manager: Manager, where: str, flt: JobFilter, offset: int, limit: int
) -> list[dict[str, Any]]:
    """A filtered page of a queue or of the busy jobs: read page by page, kept in Python."""
    rows: list[dict[str, Any]] = []
    skipped = start = 0
    now = time.time()
    while len(rows) < limit:
        items: Sequence[tuple[bytes, dict[str, Any]]]
        if where == "busy":
            page = await manager.busy(start, SCAN_PAGE)
            items = [(r.payload, reservation_row(r, now)) for r in page.items]
        else:
            queued = await manager.list_queue(where, start, SCAN_PAGE)
            items = [(j.payload, job_row(j.payload)) for j in queued.items]
        for raw, row in items:
            if not _matches(row, flt, raw):
                continue
            if skipped < offset:
                skipped += 1
            elif len(rows) < limit:
                rows.append(row)
        if len(items) < SCAN_PAGE:
            break
        start += len(items)
    return rows
