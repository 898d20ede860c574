"""What the dashboard shows of admission and flow control: the Throttles page (throttles, rate
limits, backpressure, jobs expired per day), a queue's limits, a job's unique lock and expiry.

Read through the manager's features (``Manager.feature``), never the store.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, TypeVar

from conveyor.job import decode_job
from conveyor.manager.features.backpressure import Backpressure
from conveyor.manager.features.expiring import ExpiringJobs, expires_at_of
from conveyor.manager.features.rate_limits import RateLimits
from conveyor.manager.features.throttles import Throttles
from conveyor.manager.features.unique import UniqueJobs, unique_terms
from conveyor.manager.flow import ALL_QUEUES
from conveyor.timefmt import day_key
from conveyor.web.present import iso_time

if TYPE_CHECKING:
    from conveyor.manager import Manager

__all__ = ["EXPIRED_DAYS", "job_limits_view", "queue_limits_view", "throttles_view"]

EXPIRED_DAYS = 7

F = TypeVar("F")


def _running(manager: Manager, kind: type[F]) -> F | None:
    """The running feature of class ``kind``; None when this manager runs without it."""
    try:
        return manager.feature(kind)  # type: ignore[type-var]
    except LookupError:
        return None


async def throttles_view(manager: Manager) -> dict[str, Any]:
    """Every throttle and rate limit (limit, in use now, what waits), the backpressure bounds
    with the queues' sizes, and the jobs expired each of the last days."""
    throttles = _running(manager, Throttles)
    rates = _running(manager, RateLimits)
    backpressure = _running(manager, Backpressure)
    sizes = {queue.name: queue.size for queue in await manager.queues()}
    bounds = backpressure.bounds() if backpressure else {ALL_QUEUES: 0}
    default = bounds.pop(ALL_QUEUES)
    bounded = [
        {"queue": name, "bound": bound, "size": sizes.get(name, 0)}
        for name, bound in sorted(bounds.items())
    ]
    return {
        "throttles": await throttles.usage() if throttles else [],
        "rate_limits": await rates.usage() if rates else [],
        "backpressure": {"default": default, "queues": bounded},
        "expired": await _expired_days(manager),
    }


async def _expired_days(manager: Manager) -> list[dict[str, Any]]:
    expiring = _running(manager, ExpiringJobs)
    now = time.time()
    days = [day_key(now - 86_400 * back) for back in range(EXPIRED_DAYS - 1, -1, -1)]
    counts = await expiring.expired_per_day(days) if expiring else {}
    return [{"day": day, "expired": counts.get(day, 0)} for day in days]


async def queue_limits_view(manager: Manager, name: str) -> dict[str, Any]:
    """One queue's limits: its bound, its throttle and rate limit (with their use now)."""
    view: dict[str, Any] = {"backpressure": manager.flow.bound(name) or None}
    throttles = _running(manager, Throttles)
    if throttles is not None and name in throttles.throttles:
        view["throttle"] = next(r for r in await throttles.usage() if r["queue"] == name)
    rates = _running(manager, RateLimits)
    if rates is not None and name in rates.queue_limits():
        view["rate_limit"] = next(r for r in await rates.usage() if r["queue"] == name)
    return view


async def job_limits_view(manager: Manager, payload: bytes) -> dict[str, Any]:
    """A job's unique lock (who holds it, until when) and its expiry."""
    job = decode_job(payload)
    view: dict[str, Any] = {}
    unique = _running(manager, UniqueJobs)
    try:
        terms = unique_terms(job)
    except ValueError:
        terms = None
    if unique is not None and terms is not None:
        lock = await unique.lock_of(job)
        view["unique"] = {
            "unique_for": terms[0],
            "until": terms[1],
            "held": lock is not None,
            "holder": lock.value.decode(errors="replace") if lock else None,
            "mine": lock is not None and lock.value == job.jid.encode(),
            "expires_at": iso_time(lock.expires_at) if lock and lock.expires_at else None,
        }
    expires = expires_at_of(job)
    if expires is not None:
        view["expiry"] = {"expires_at": iso_time(expires), "expired": expires <= time.time()}
    return view
