"""Timestamps as Faktory writes and reads them: RFC 3339 with up to nanoseconds, in UTC.

Faktory (Go) formats with ``2006-01-02T15:04:05.999999999Z07:00``: the fraction has its trailing
zeros trimmed and disappears when zero. Parsing accepts ``Z`` or a ``±HH:MM`` offset and 0-9
fraction digits, and rejects naive times, space separators and ``+0000``.

Internally times are float seconds since the epoch (the same scores Faktory puts in its
sorted sets).
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

__all__ = ["day_key", "format_time", "human_duration", "now_iso", "parse_time"]

# ASCII digits only: ``\d`` alone would take "٢٠٢٤" (Arabic-Indic) for 2024, as ``int()`` does.
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})",
    re.ASCII,
)

_second_cache: tuple[int, str] = (-1, "")


def _format_seconds(seconds: int) -> str:
    global _second_cache
    cached_second, text = _second_cache
    if cached_second != seconds:
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        _second_cache = (seconds, text)
    return text


def format_ns(ns: int) -> str:
    """Format integer nanoseconds since the epoch the way Go's RFC3339Nano does (UTC)."""
    seconds, frac = divmod(ns, 1_000_000_000)
    head = _format_seconds(seconds)
    if frac == 0:
        return head + "Z"
    return f"{head}.{frac:09d}".rstrip("0") + "Z"


def format_time(ts: float) -> str:
    """Format float seconds since the epoch as RFC 3339 UTC (microsecond precision): what
    ``format_ns`` gives for the time rounded to the microsecond, without its nanoseconds (an
    ACK that stores a result formats its finishing time with this)."""
    seconds, micros = divmod(round(ts * 1_000_000), 1_000_000)
    cached_second, head = _second_cache
    if cached_second != seconds:
        head = _format_seconds(seconds)
    if micros % 10:  # nine times in ten: no trailing zero to trim
        return f"{head}.{micros:06d}Z"
    if micros == 0:
        return head + "Z"
    return f"{head}.{micros:06d}".rstrip("0") + "Z"


def now_iso() -> str:
    """The current time, formatted as Faktory formats ``created_at`` and ``enqueued_at``."""
    return format_ns(time.time_ns())


def parse_time(text: str) -> float:
    """Parse an RFC 3339 timestamp into float seconds since the epoch.

    Raises ``ValueError`` with a message naming the text when it is not RFC 3339 with a zone.
    """
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise ValueError(
            f"{text!r} is not an RFC 3339 time with a zone (e.g. 2030-01-01T00:00:00Z)"
        )
    year, month, day, hour, minute, second, frac, zone = match.groups()
    try:
        moment = datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second), tzinfo=UTC
        )
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a valid time: {exc}") from None
    ts = moment.timestamp()
    if frac:
        ts += int(frac) / 10 ** len(frac)
    if zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        offset_hours, offset_minutes = int(zone[1:3]), int(zone[4:6])
        if offset_hours > 23 or offset_minutes > 59:
            raise ValueError(f"{text!r} has an invalid zone offset")
        ts -= sign * (offset_hours * 3600 + offset_minutes * 60)
    return ts


_day_cache: tuple[int, str] = (-1, "")


def day_key(ts: float) -> str:
    """The UTC day of a timestamp, ``YYYY-MM-DD``, as used for the daily counters."""
    global _day_cache
    second = int(ts // 1)  # gmtime floors
    cached_second, text = _day_cache
    if cached_second != second:  # every ACK asks: formatted once a second, not per call
        text = time.strftime("%Y-%m-%d", time.gmtime(second))
        _day_cache = (second, text)
    return text


def human_duration(seconds: float) -> str:
    """Durations for humans: ``0.25s``, ``12s``, ``3m 4s``, ``2h 5m``, ``3d 1h``; whole
    seconds (uptime) never get decimals."""
    if seconds < 10 and not isinstance(seconds, int):
        return f"{seconds:.2f}s"
    whole = int(seconds)
    days, rest = divmod(whole, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"
