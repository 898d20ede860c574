"""What each view shows, gathered from the manager as plain JSON-ready dicts.

Pages render these dicts with templates and the JSON API returns them as they are, so the two
can never disagree. Only the manager is called, never the store.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from conveyor.manager.types import ServerStats
from conveyor.store.base import Reservation, SetEntry, SortedSet
from conveyor.web.limits import job_limits_view, queue_limits_view
from conveyor.web.present import (
    Listing,
    decode_payload,
    iso_time,
    job_key,
    page_count,
    route_for_set,
    short_args,
)

if TYPE_CHECKING:
    from conveyor.manager import Manager

__all__ = [
    "HISTORY_DAYS",
    "busy_view",
    "history_view",
    "job_view",
    "locate_view",
    "overview",
    "queue_view",
    "queues_view",
    "set_view",
    "stats_json",
]

HISTORY_DAYS = (7, 30, 90, 180)
StatsSource = Callable[[], ServerStats]


async def stats_json(manager: Manager, stats: StatsSource) -> dict[str, Any]:
    """The INFO JSON, exactly as Faktory's ``/stats``."""
    return await manager.info(stats())


async def health_json(manager: Manager, stats: StatsSource) -> dict[str, Any]:
    """Faktory's ``/health``: the time and the server section without memory and uptime."""
    info = await manager.info(stats())
    server = info.get("server", {})
    keep = ("description", "faktory_version", "connections", "command_count")
    return {"now": info.get("now"), "server": {k: server.get(k) for k in keep}}


def summary(info: dict[str, Any]) -> dict[str, int]:
    """The summary bar: Faktory's seven numbers, from the INFO JSON."""
    faktory = info.get("faktory", {})
    sets = faktory.get("sets", {})
    return {
        "processed": int(faktory.get("total_processed", 0)),
        "failed": int(faktory.get("total_failures", 0)),
        "busy": int(sets.get("working", 0)),
        "enqueued": int(faktory.get("total_enqueued", 0)),
        "retries": int(sets.get("retries", 0)),
        "scheduled": int(sets.get("scheduled", 0)),
        "dead": int(sets.get("dead", 0)),
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


async def overview(manager: Manager, stats: StatsSource, days: int) -> dict[str, Any]:
    info = await manager.info(stats())
    return {
        "summary": summary(info),
        "server": info.get("server", {}),
        "now": info.get("now"),
        "queues": await queues_view(manager),
        "history": await history_view(manager, days),
        "days": days,
    }


def _paging(listing: Listing, total: int) -> dict[str, Any]:
    return {
        "page": listing.page,
        "per_page": listing.per_page,
        "total": total,
        "pages": page_count(total, listing.per_page),
    }


def job_row(payload: bytes, *, score: float | None = None) -> dict[str, Any]:
    """One job as a table row: the fields people scan for, plus the whole payload."""
    job = decode_payload(payload)
    failure = job.get("failure") if isinstance(job.get("failure"), dict) else None
    error = ""
    if failure:
        error = ": ".join(str(p) for p in (failure.get("errtype"), failure.get("message")) if p)
    row: dict[str, Any] = {
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
    if score is not None:
        row["score"] = score
        row["at"] = iso_time(score)
        row["key"] = job_key(score, row["jid"])
    return row


async def queue_view(manager: Manager, name: str, listing: Listing) -> dict[str, Any] | None:
    """A queue's jobs, one page; None when no such queue."""
    info = next((q for q in await queues_view(manager) if q["name"] == name), None)
    if info is None:
        return None
    page = await manager.list_queue(name, listing.offset, listing.per_page)
    return {
        "queue": info,
        "limits": await queue_limits_view(manager, name),
        "jobs": [job_row(item.payload) for item in page.items],
        "paging": _paging(listing, page.total),
    }


def _entry_row(entry: SetEntry) -> dict[str, Any]:
    return job_row(entry.payload, score=entry.score)


async def set_view(manager: Manager, name: SortedSet, listing: Listing) -> dict[str, Any]:
    """One page of a sorted set, filtered and ordered by the store."""
    page = await manager.list_set(
        name, listing.job_filter(), listing.offset, listing.per_page, descending=listing.descending
    )
    return {
        "set": name.value,
        "route": route_for_set(name),
        "jobs": [_entry_row(e) for e in page.items],
        "paging": _paging(listing, page.total),
        "filter": {
            "queue": listing.queue,
            "jobtype": listing.jobtype,
            "q": listing.text,
            "jid": listing.jid,
            "sort": "desc" if listing.descending else "asc",
        },
    }


async def locate_view(manager: Manager, jid: str) -> dict[str, Any] | None:
    """Where a job is now (queue, a set, or being worked on) and its payload there."""
    location = await manager.locate(jid)
    if location is None:
        return None
    limits = await job_limits_view(manager, location.payload)
    row = job_row(location.payload)
    return {"where": location.where, "queue": location.queue, **row, "limits": limits}


async def job_view(manager: Manager, name: SortedSet, jid: str) -> dict[str, Any] | None:
    """A set entry in full, with where the job is now; None when it is in neither."""
    entry = await manager.get_set_entry(name, jid)
    located = await locate_view(manager, jid)
    if entry is None and located is None:
        return None
    row = _entry_row(entry) if entry is not None else dict(located or {})
    job = row["job"]
    failure = job.get("failure") if isinstance(job.get("failure"), dict) else None
    retry = job.get("retry")
    retries_left = None
    if failure and isinstance(failure.get("remaining"), int):
        retries_left = failure["remaining"]
    elif isinstance(retry, int) and failure:
        retries_left = max(0, retry - int(failure.get("retry_count", 0)) - 1)
    return {
        **row,
        "set": name.value,
        "route": route_for_set(name),
        "in_set": entry is not None,
        "limits": (
            await job_limits_view(manager, entry.payload) if entry else row.get("limits", {})
        ),
        "location": {k: located[k] for k in ("where", "queue")} if located else None,
        "custom": job.get("custom") or {},
        "failure": failure,
        "retries_left": retries_left,
        "next_retry": failure.get("next_at") if failure else None,
    }


def _reservation_row(res: Reservation, now: float) -> dict[str, Any]:
    row = job_row(res.payload)
    row.update(
        wid=res.wid,
        reserved_at=iso_time(res.reserved_at),
        expires_at=iso_time(res.expires_at),
        running_seconds=max(0.0, now - res.reserved_at),
    )
    return row


async def busy_view(manager: Manager, listing: Listing) -> dict[str, Any]:
    now = time.time()
    workers = []
    for view in sorted(await manager.workers(), key=lambda v: v.record.wid):
        rec = view.record
        workers.append(
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
        )
    page = await manager.busy(listing.offset, listing.per_page)
    return {
        "workers": workers,
        "jobs": [_reservation_row(r, now) for r in page.items],
        "paging": _paging(listing, page.total),
    }
