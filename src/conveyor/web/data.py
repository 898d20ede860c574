"""What each view shows, gathered from the manager as plain JSON-ready dicts.

Pages render these dicts with templates and the JSON API returns them as they are, so the two
can never disagree. Only the manager is called, never the store.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec

from conveyor.backtraces import trim
from conveyor.manager import views
from conveyor.manager.jobinfo import job_extras, job_info
from conveyor.manager.types import ServerStats
from conveyor.manager.views import history_view, job_row, queues_view
from conveyor.protocol.info import summary
from conveyor.store.base import SetEntry, SortedSet
from conveyor.timefmt import now_iso
from conveyor.web.limits import job_limits_view, queue_limits_view
from conveyor.web.present import Listing, job_key, page_count, route_for_set

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
    """Faktory's ``/health`` (the time and the server section without memory and uptime),
    plus ``status``: ``ok``, or ``unavailable`` with the ``store``'s problem."""
    problem = await manager.storage_problem()
    numbers = stats()
    health: dict[str, Any] = {
        "now": now_iso(),
        "server": {
            "description": manager.description,
            "faktory_version": manager.version,
            "connections": numbers.connections,
            "command_count": numbers.command_count,
        },
        "status": "ok" if problem is None else "unavailable",
    }
    if problem is not None:
        health["store"] = problem
    return health


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
    row = views.entry_row(entry)
    row["key"] = job_key(entry.score, row["jid"])
    return row


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


async def locate_view(
    manager: Manager, jid: str, queue: str | None = None
) -> dict[str, Any] | None:
    """Where a job is now (queue, a set, or being worked on) and its payload there, its state
    and, when it ended, its outcome (``manager.jobinfo``), and its unique lock and expiry
    (``limits``); ``queue`` narrows the search of the queues (a link from a queue's page
    knows it)."""
    info = await job_info(manager, jid, queue)
    if info is None:
        return None
    located = info["where"] and isinstance(info.get("job"), dict)
    payload = msgspec.json.encode(info["job"]) if located else None
    return {**info, "limits": await job_limits_view(manager, payload) if payload else {}}


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
        **(await job_extras(manager, jid, job) if entry is not None else {}),
        "set": name.value,
        "route": route_for_set(name),
        "in_set": entry is not None,
        "limits": (
            await job_limits_view(manager, entry.payload) if entry else row.get("limits", {})
        ),
        "location": {k: located[k] for k in ("where", "queue")} if located else None,
        "custom": job.get("custom") or {},
        "failure": failure,
        "backtrace": _backtrace(failure),
        "retries_left": retries_left,
        "next_retry": failure.get("next_at") if failure else None,
        "completed": job.get("completed") if isinstance(job.get("completed"), dict) else None,
    }


def _backtrace(failure: dict[str, Any] | None) -> dict[str, Any] | None:
    """The failure's backtrace with the worker's own frames left out (``conveyor.backtraces``),
    and the whole of it, for the page to offer both."""
    lines = failure.get("backtrace") if failure else None
    if not isinstance(lines, list) or not lines:
        return None
    full = [str(line) for line in lines]
    trimmed, hidden = trim(full)
    return {"lines": trimmed, "hidden": hidden, "full": full}


async def busy_view(manager: Manager, listing: Listing) -> dict[str, Any]:
    jobs, total = await views.busy_rows(manager, listing.offset, listing.per_page)
    return {
        "workers": await views.workers_view(manager),
        "jobs": jobs,
        "paging": _paging(listing, total),
    }
