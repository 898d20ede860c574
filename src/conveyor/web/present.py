"""Turning manager data into what pages and the JSON API show, and request parameters into
manager arguments. Pure functions: no I/O, no Starlette objects beyond ``QueryParams``."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from starlette.datastructures import QueryParams

from conveyor.manager.views import decode_payload, iso_time, short_args
from conveyor.store.base import JobFilter, SortedSet
from conveyor.timefmt import format_time, parse_time

__all__ = [
    "DEFAULT_PER_PAGE",
    "MAX_PER_PAGE",
    "SET_ROUTES",
    "Listing",
    "decode_payload",
    "iso_time",
    "job_key",
    "parse_job_key",
    "parse_listing",
    "relative_time",
    "set_for_route",
    "short_args",
]

DEFAULT_PER_PAGE = 25
"""Faktory shows 25 jobs per page."""
MAX_PER_PAGE = 500
MAX_ARG_CHARS = 1_000_000
"""Faktory shows up to 1 MB of args; more would only slow the browser down."""

SET_ROUTES: dict[str, SortedSet] = {
    "retries": SortedSet.RETRIES,
    "scheduled": SortedSet.SCHEDULED,
    "morgue": SortedSet.DEAD,
    "completed": SortedSet.COMPLETED,
}
"""URL segment -> sorted set, at Faktory's routes (the dead set lives at ``/morgue``)."""

_API_SET_NAMES: dict[str, SortedSet] = {**SET_ROUTES, "dead": SortedSet.DEAD}


def set_for_route(segment: str) -> SortedSet | None:
    """The sorted set a URL segment names (``retries``, ``scheduled``, ``morgue``/``dead``)."""
    return _API_SET_NAMES.get(segment)


def route_for_set(name: SortedSet) -> str:
    return "morgue" if name is SortedSet.DEAD else name.value


def job_key(score: float, jid: str) -> str:
    """Faktory's job key, ``<RFC3339Nano score>|<jid>``, URL-escaped for a path segment."""
    return quote(f"{format_time(score)}|{jid}", safe="")


def parse_job_key(key: str) -> tuple[float | None, str]:
    """(score, jid) from a (decoded) job key; a bare jid is accepted too (score None).

    Raises ``ValueError`` when the key has a time part that is not RFC 3339 or no jid.
    """
    text = key
    when, sep, jid = text.partition("|")
    if not sep:
        when, jid = "", text
    if not jid:
        raise ValueError(f"job key {text!r} names no jid")
    return (parse_time(when) if when else None), jid


@dataclass(frozen=True, slots=True)
class Listing:
    """Paging, sorting and filtering of one list view."""

    page: int
    per_page: int
    descending: bool
    queue: str
    jobtype: str
    text: str
    jid: str

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.per_page

    def job_filter(self) -> JobFilter:
        return JobFilter(
            jids=(self.jid,) if self.jid else (),
            queue=self.queue or None,
            jobtype=self.jobtype or None,
            text=self.text or None,
        )

    def query(self, **changes: Any) -> str:
        """The query string of this listing with some parameters changed (for links)."""
        params: dict[str, Any] = {
            "page": self.page,
            "per_page": self.per_page if self.per_page != DEFAULT_PER_PAGE else None,
            "sort": "desc" if self.descending else "asc",
            "queue": self.queue or None,
            "jobtype": self.jobtype or None,
            "q": self.text or None,
            "jid": self.jid or None,
        }
        params.update(changes)
        parts = [f"{k}={quote(str(v), safe='')}" for k, v in params.items() if v not in (None, "")]
        return "?" + "&".join(parts) if parts else "?"


def _int_param(params: QueryParams, name: str, default: int, low: int, high: int) -> int:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, not {raw!r}") from None
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high}, not {value}")
    return value


def default_descending(name: SortedSet) -> bool:
    """The dead and completed sets list the latest first (their score is the end plus the
    retention); the other sets list what is due soonest first."""
    return name in (SortedSet.DEAD, SortedSet.COMPLETED)


def parse_listing(params: QueryParams, *, default_descending: bool = False) -> Listing:
    """Read ``page``, ``per_page``, ``sort`` (asc|desc), ``queue``, ``jobtype``, ``q``, ``jid``.

    Raises ``ValueError`` with a message for the user on a bad value.
    """
    sort = params.get("sort", "")
    if sort not in ("", "asc", "desc"):
        raise ValueError(f"sort must be asc or desc, not {sort!r}")
    return Listing(
        page=_int_param(params, "page", 1, 1, 10**9),
        per_page=_int_param(params, "per_page", DEFAULT_PER_PAGE, 1, MAX_PER_PAGE),
        descending=(sort == "desc") if sort else default_descending,
        queue=params.get("queue", "").strip(),
        jobtype=params.get("jobtype", "").strip(),
        text=params.get("q", "").strip(),
        jid=params.get("jid", "").strip(),
    )


def pretty_json(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, indent=2, sort_keys=False)
    return text if len(text) <= MAX_ARG_CHARS else text[:MAX_ARG_CHARS] + "\n… (truncated)"


def relative_time(when: float | str | None, now: float | None = None) -> str:
    """``3m ago`` / ``in 2h`` style text for epoch seconds or an RFC 3339 time."""
    ts = parse_iso(when) if isinstance(when, str) else when
    if not ts:
        return ""
    delta = (now if now is not None else time.time()) - ts
    future = delta < 0
    seconds = abs(delta)
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size:
            amount = f"{int(seconds // size)}{unit}"
            break
    else:
        amount = f"{int(seconds)}s"
    return f"in {amount}" if future else f"{amount} ago"


def parse_iso(text: Any) -> float | None:
    """Seconds since the epoch for an RFC 3339 field of a job, None when absent or bad."""
    if not isinstance(text, str) or not text:
        return None
    try:
        return parse_time(text)
    except ValueError:
        return None


def human_count(value: int) -> str:
    """Thousands separated with thin spaces kept readable: 1,234,567."""
    return f"{value:,}"


def page_count(total: int, per_page: int) -> int:
    return max(1, -(-total // per_page))
