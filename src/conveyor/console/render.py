"""Tables and numbers for people (rich); ``--json`` output never goes through here."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from rich.table import Table

from conveyor.timefmt import human_duration as duration
from conveyor.timefmt import parse_time

__all__ = ["duration", "job_table", "queue_table", "worker_table"]


def queue_table(queues: Sequence[dict[str, Any]]) -> Table:
    table = Table(box=None, header_style="bold")
    table.add_column("QUEUE")
    table.add_column("SIZE", justify="right")
    table.add_column("LATENCY", justify="right")
    table.add_column("STATE")
    for q in queues:
        paused = q.get("paused")
        state = "[yellow]paused[/]" if paused else ("?" if paused is None else "running")
        table.add_row(q["name"], f"{q['size']:,}", duration(q.get("latency") or 0.0), state)
    return table


_COLUMNS: dict[str, tuple[str, ...]] = {
    "retries": ("jid", "jobtype", "queue", "at", "retry_count", "error"),
    "scheduled": ("jid", "jobtype", "queue", "at", "args"),
    "dead": ("jid", "jobtype", "queue", "failed_at", "error"),
    "busy": ("jid", "jobtype", "queue", "wid", "running_seconds", "args"),
    "completed": ("jid", "jobtype", "queue", "finished_at", "duration", "result"),
    "group members": ("jid", "jobtype", "added_at", "args"),  # no queue has a space
}
_QUEUE_COLUMNS = ("jid", "jobtype", "enqueued_at", "args")
_HEADERS = {
    "at": "DUE",
    "retry_count": "RETRIES",
    "running_seconds": "RUNNING",
    "failed_at": "FAILED",
    "enqueued_at": "ENQUEUED",
    "finished_at": "FINISHED",
    "added_at": "ADDED",
    "duration": "RAN",
}


_TIMES = ("at", "failed_at", "enqueued_at", "finished_at", "added_at")


def job_table(where: str, jobs: Sequence[dict[str, Any]], now: float | None = None) -> Table:
    columns = _COLUMNS.get(where, _QUEUE_COLUMNS)
    table = Table(box=None, header_style="bold")
    for column in columns:
        header = _HEADERS.get(column, column.upper())
        if column in ("jid", "jobtype", "queue", "wid"):
            table.add_column(header, no_wrap=True)  # people copy these: never cut them
        else:
            table.add_column(header, overflow="ellipsis", no_wrap=True, max_width=60)
    now = time.time() if now is None else now
    for job in jobs:
        table.add_row(*(_cell(column, job.get(column), now) for column in columns))
    return table


def relative(when: str, now: float) -> str:
    """``3m ago`` / ``in 2h`` for an RFC 3339 time (the text itself when it is not one)."""
    try:
        delta = now - parse_time(when)
    except ValueError:
        return when
    amount = duration(abs(delta)).split(" ")[0]
    if abs(delta) < 10:
        amount = f"{int(abs(delta))}s"
    return f"in {amount}" if delta < 0 else f"{amount} ago"


def _cell(column: str, value: Any, now: float) -> str:
    if column in ("running_seconds", "duration"):
        return duration(float(value or 0))
    if column in _TIMES and isinstance(value, str) and value:
        return relative(value, now)
    if isinstance(value, str):
        return value
    return "" if value is None else json.dumps(value)


def worker_table(workers: Sequence[dict[str, Any]]) -> Table:
    table = Table(box=None, header_style="bold")
    for column in ("WID", "HOST", "PID", "STATE", "BUSY", "RSS", "LAST BEAT", "LABELS"):
        table.add_column(column, justify="right" if column in ("PID", "BUSY", "RSS") else "left")
    for w in workers:
        state = w["state"]
        colour = {"quiet": "yellow", "terminate": "red"}.get(state)
        table.add_row(
            w["wid"],
            w["hostname"],
            str(w["pid"]),
            f"[{colour}]{state}[/]" if colour else state,
            str(w["busy"]),
            f"{w['rss_kb'] / 1024:.1f} MB",
            w["last_beat"],
            ", ".join(w["labels"]),
        )
    return table
