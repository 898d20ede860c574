"""Cron schedules: when an entry's ticks fall, in its time zone (docs/cron.md).

Parsing and iteration are croniter's; what this module adds is the three things croniter
leaves to its caller:

* **the formats**: 5 fields (minute precision), 6 fields with *seconds first* (as Quartz,
  robfig/cron and Faktory Enterprise's peers write them), the ``@hourly`` family, and
  ``@every <duration>`` (Go duration syntax: ``30s``, ``1h30m``);
* **the DST rule** (Vixie cron's): a wall time that a spring-forward gap skips fires once, at
  the first instant after the gap (croniter does this); a wall time that a fall-back overlap
  repeats fires once, at its first occurrence -- unless the schedule's hour field is ``*``
  (every hour), where both passes fire, so "every 15 minutes" stays every 15 minutes of real
  time. Ticks never repeat and never go backwards;
* **``@every`` ticks aligned on the Unix epoch** (``@every 1h30m`` fires at multiples of 5400 s
  since 1970-01-01T00:00Z), so that every server computes the same ticks without talking to
  the others -- which is what lets them agree on one claim per tick.

Times are float seconds since the epoch; ticks are whole seconds.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from croniter.croniter import CroniterError

__all__ = [
    "MACROS",
    "Schedule",
    "ScheduleError",
    "parse_duration",
    "parse_zone",
    "tick_datetime",
]

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_SEARCH_LIMIT = 10_000
"""Ticks looked at before giving up on finding the next one the DST rule lets through."""


class ScheduleError(ValueError):
    """A schedule or time zone that cannot be used; the message says what is wrong."""


def parse_duration(text: str) -> float:
    """A Go duration (``30s``, ``1h30m``, ``1.5h``) in seconds."""
    compact = text.strip()
    pos = 0
    total = 0.0
    for match in _DURATION_PART.finditer(compact):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if not compact or pos != len(compact):
        raise ScheduleError(f"{text!r} is not a duration like 30s, 5m or 1h30m")
    return total


def parse_zone(name: str) -> ZoneInfo:
    """An IANA time zone (``Europe/Paris``, ``UTC``)."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        message = f"unknown time zone {name!r} (use an IANA name like Europe/Paris)"
        raise ScheduleError(message) from None


@dataclass(frozen=True)
class Schedule:
    """One entry's schedule: ``text`` as written, ticks computed in ``zone``."""

    text: str
    zone: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))
    every: float = 0.0
    """The interval of an ``@every`` schedule, else 0."""
    expression: str = ""
    """The cron expression (macros expanded); empty for ``@every``."""
    seconds_first: bool = False
    every_hour: bool = False
    """The hour field is ``*``: fall-back overlaps fire in both passes."""

    @classmethod
    def parse(cls, text: str, zone: str = "UTC") -> Schedule:
        """Raises ``ScheduleError`` with a message for a person."""
        tz = parse_zone(zone)
        written = " ".join(text.split())
        if not written:
            raise ScheduleError("the schedule is empty")
        if written.lower().startswith("@every"):
            return cls(written, tz, every=_every_seconds(written))
        expression = MACROS.get(written.lower(), written)
        if expression.startswith("@"):
            known = ", ".join([*MACROS, "@every <duration>"])
            raise ScheduleError(f"unknown schedule {written!r} (known: {known})")
        fields = expression.split()
        if len(fields) not in (5, 6):
            raise ScheduleError(
                f"{written!r} has {len(fields)} fields: write 5 (minute hour day month weekday) "
                "or 6 (second first)"
            )
        seconds_first = len(fields) == 6
        try:
            parsed = croniter(expression, second_at_beginning=seconds_first)
        except (CroniterError, ValueError, KeyError) as exc:
            raise ScheduleError(f"{written!r} is not a valid cron expression: {exc}") from None
        every_hour = parsed.expanded[1] == ["*"]
        return cls(written, tz, 0.0, expression, seconds_first, every_hour)

    # ------------------------------------------------------------------ ticks

    def next_after(self, when: float) -> float:
        """The first tick strictly after ``when``."""
        return next(self.ticks_after(when))

    def ticks_after(self, when: float) -> Iterator[float]:
        """The ticks strictly after ``when``, in order, forever."""
        if self.every:
            tick = (math.floor(when / self.every) + 1) * self.every
            while True:
                yield tick
                tick += self.every
        last = when
        it = croniter(
            self.expression,
            datetime.fromtimestamp(math.floor(when), self.zone),
            second_at_beginning=self.seconds_first,
        )
        skipped = 0
        while True:
            moment = it.get_next(datetime)
            tick = moment.timestamp()
            if tick <= last or self._repeated_wall_time(moment):
                skipped += 1
                if skipped > _SEARCH_LIMIT:
                    return
                continue
            skipped = 0
            last = tick
            yield tick

    def latest_at_or_before(self, when: float) -> float | None:
        """The last tick at or before ``when`` (None if none in ~the last 10,000 ticks)."""
        if self.every:
            return math.floor(when / self.every) * self.every
        it = croniter(
            self.expression,
            datetime.fromtimestamp(math.floor(when) + 1, self.zone),
            second_at_beginning=self.seconds_first,
        )
        for _ in range(_SEARCH_LIMIT):
            moment: datetime = it.get_prev(datetime)
            tick = moment.timestamp()
            if tick > when or self._repeated_wall_time(moment):
                continue
            return tick
        return None

    def count_between(self, after: float, until: float, limit: int = 1000) -> int:
        """How many ticks fall in (``after``, ``until``], counting up to ``limit``."""
        count = 0
        for tick in self.ticks_after(after):
            if tick > until or count >= limit:
                break
            count += 1
        return count

    def upcoming(self, when: float, count: int) -> list[float]:
        ticks = self.ticks_after(when)
        return [tick for tick, _ in zip(ticks, range(count), strict=False)]

    def _repeated_wall_time(self, moment: datetime) -> bool:
        """Whether ``moment`` is the second pass over a wall time of a fall-back overlap, which
        the DST rule drops unless the schedule fires every hour."""
        if self.every_hour:
            return False
        first = moment.replace(fold=0)
        # the same wall time, first pass: earlier in real time when the wall time repeats
        return first.utcoffset() != moment.utcoffset() and _instant(first) < _instant(moment)

    # ------------------------------------------------------------------ words

    def describe(self) -> str:
        """The schedule in English words (cron-descriptor), with its time zone."""
        if self.every:
            return f"Every {_words_of_seconds(self.every)}"
        from cron_descriptor import Options, get_description

        options = Options()
        options.use_24hour_time_format = True
        options.verbose = False
        try:
            words = str(get_description(self.expression, options))
        except Exception:  # a description is a nicety; the schedule itself is valid
            words = self.expression
        zone = str(self.zone.key)
        return words if zone == "UTC" else f"{words} ({zone})"


def _instant(moment: datetime) -> datetime:
    return moment.astimezone(UTC)


def _every_seconds(written: str) -> float:
    _, _, rest = written.partition(" ")
    seconds = parse_duration(rest) if rest.strip() else 0.0
    if not rest.strip():
        raise ScheduleError("@every needs a duration, e.g. @every 30s or @every 1h30m")
    if seconds < 1 or seconds != int(seconds):
        raise ScheduleError(f"{written!r}: the interval must be a whole number of seconds, >= 1s")
    return seconds


def _words_of_seconds(seconds: float) -> str:
    left = int(seconds)
    parts = []
    for unit, size in (("hour", 3600), ("minute", 60), ("second", 1)):
        amount, left = divmod(left, size)
        if amount:
            parts.append(f"{amount} {unit}{'s' if amount > 1 else ''}")
    return " ".join(parts) if len(parts) > 1 or not parts[0].startswith("1 ") else parts[0][2:]


def tick_datetime(tick: float, zone: ZoneInfo) -> datetime:
    """A tick as an aware datetime in ``zone`` (for display)."""
    return datetime.fromtimestamp(tick, UTC).astimezone(zone)
