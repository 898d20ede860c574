"""Reading the INFO document (``manager/info.py`` writes it): the numbers every view of a
server shows first, the same in the web dashboard, the terminal dashboard and ``conveyor
stats``. Plain dictionaries only, so the command line imports nothing heavy for it."""

from __future__ import annotations

from typing import Any

__all__ = ["summary"]


def summary(info: dict[str, Any]) -> dict[str, int]:
    """Faktory's seven numbers (processed, failed, busy, enqueued, retries, scheduled, dead),
    then the jobs cancelled and those waiting in aggregating groups, from the INFO JSON."""
    faktory = info.get("faktory", {})
    sets = faktory.get("sets", {})
    features = info.get("features", {})
    return {
        "processed": int(faktory.get("total_processed", 0)),
        "failed": int(faktory.get("total_failures", 0)),
        "busy": int(sets.get("working", 0)),
        "enqueued": int(faktory.get("total_enqueued", 0)),
        "retries": int(sets.get("retries", 0)),
        "scheduled": int(sets.get("scheduled", 0)),
        "dead": int(sets.get("dead", 0)),
        "cancelled": int(features.get("cancellation", {}).get("cancelled", 0)),
        "aggregating": int(features.get("aggregation", {}).get("aggregating", 0)),
    }
