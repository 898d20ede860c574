"""Cron schedules (``manager/features/cron_schedule.py``) and entries (``cron_entry.py``):
the formats, the DST rule and the messages for bad input, with fixed times (no clock)."""

from __future__ import annotations

import itertools
import re
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from conveyor.manager.features.cron_entry import EntryError, parse_entry
from conveyor.manager.features.cron_schedule import Schedule, ScheduleError, parse_duration

PARIS = ZoneInfo("Europe/Paris")


def at(*fields: int, zone: ZoneInfo = PARIS, fold: int = 0) -> float:
    return datetime(*fields, tzinfo=zone, fold=fold).timestamp()  # type: ignore[misc]


def wall(tick: float) -> str:
    return datetime.fromtimestamp(tick, PARIS).strftime("%m-%d %H:%M:%S%z")


def utc(tick: float) -> str:
    return datetime.fromtimestamp(tick, UTC).strftime("%m-%d %H:%M:%S")


def test_five_fields_are_minutes_and_six_fields_put_seconds_first() -> None:
    start = at(2026, 1, 5, 10, 0, 0, zone=ZoneInfo("UTC"))
    assert [utc(t) for t in Schedule.parse("*/20 * * * *").upcoming(start, 3)] == [
        "01-05 10:20:00",
        "01-05 10:40:00",
        "01-05 11:00:00",
    ]
    assert [utc(t) for t in Schedule.parse("*/15 * * * * *").upcoming(start, 3)] == [
        "01-05 10:00:15",
        "01-05 10:00:30",
        "01-05 10:00:45",
    ]
    # seconds first: "30 0 * * * *" is at second 30 of minute 0 of every hour
    assert [utc(t) for t in Schedule.parse("30 0 * * * *").upcoming(start, 2)] == [
        "01-05 10:00:30",
        "01-05 11:00:30",
    ]


def test_macros_and_every_durations_aligned_on_the_epoch() -> None:
    start = at(2026, 1, 5, 10, 7, 0, zone=ZoneInfo("UTC"))
    assert utc(Schedule.parse("@hourly").next_after(start)) == "01-05 11:00:00"
    assert utc(Schedule.parse("@daily").next_after(start)) == "01-06 00:00:00"
    assert utc(Schedule.parse("@weekly").next_after(start)) == "01-11 00:00:00"  # a Sunday
    assert utc(Schedule.parse("@monthly").next_after(start)) == "02-01 00:00:00"
    assert utc(Schedule.parse("@yearly").next_after(start)) == "01-01 00:00:00"
    every = Schedule.parse("@every 1h30m")
    ticks = every.upcoming(start, 3)
    assert all(tick % 5400 == 0 for tick in ticks)  # any server computes the same ticks
    assert [b - a for a, b in itertools.pairwise(ticks)] == [5400, 5400]
    assert Schedule.parse("@every 30s").latest_at_or_before(start + 31) == start + 30
    assert parse_duration("1h30m") == 5400
    assert parse_duration("1.5h") == 5400


def test_spring_forward_gap_fires_a_skipped_time_once_right_after_the_gap() -> None:
    # Europe/Paris, 2025-03-30: 02:00 CET jumps to 03:00 CEST; 02:30 does not exist
    daily = Schedule.parse("30 2 * * *", "Europe/Paris")
    ticks = daily.upcoming(at(2025, 3, 29, 12, 0), 3)
    assert [wall(t) for t in ticks] == [
        "03-30 03:00:00+0200",  # once, at the first instant after the gap
        "03-31 02:30:00+0200",
        "04-01 02:30:00+0200",
    ]
    # two skipped times land on the same instant: still one tick
    twice = Schedule.parse("15,45 2 * * *", "Europe/Paris")
    assert [wall(t) for t in twice.upcoming(at(2025, 3, 30, 0, 0), 2)] == [
        "03-30 03:00:00+0200",
        "03-31 02:15:00+0200",
    ]
    # an hourly-ish schedule simply has no ticks in the gap: 15 real minutes apart
    quarter = Schedule.parse("*/15 * * * *", "Europe/Paris")
    ticks = quarter.upcoming(at(2025, 3, 30, 1, 40), 3)
    assert [wall(t) for t in ticks] == [
        "03-30 01:45:00+0100",
        "03-30 03:00:00+0200",
        "03-30 03:15:00+0200",
    ]
    assert ticks[1] - ticks[0] == 15 * 60


def test_fall_back_overlap_fires_a_fixed_time_once_and_every_hour_schedules_twice() -> None:
    # Europe/Paris, 2025-10-26: 03:00 CEST goes back to 02:00 CET; 02:00-02:59 happens twice
    daily = Schedule.parse("30 2 * * *", "Europe/Paris")
    ticks = daily.upcoming(at(2025, 10, 25, 12, 0), 3)
    assert [wall(t) for t in ticks] == [
        "10-26 02:30:00+0200",  # the first pass only
        "10-27 02:30:00+0100",
        "10-28 02:30:00+0100",
    ]
    # and counting back from inside the second pass finds the first one
    second_pass = at(2025, 10, 26, 2, 45, fold=1)
    latest = daily.latest_at_or_before(second_pass)
    assert latest is not None
    assert wall(latest) == "10-26 02:30:00+0200"
    # hour field "*": both passes fire, every 30 real minutes
    half_hourly = Schedule.parse("*/30 * * * *", "Europe/Paris")
    ticks = half_hourly.upcoming(at(2025, 10, 26, 1, 50), 6)
    assert [wall(t) for t in ticks] == [
        "10-26 02:00:00+0200",
        "10-26 02:30:00+0200",
        "10-26 02:00:00+0100",
        "10-26 02:30:00+0100",
        "10-26 03:00:00+0100",
        "10-26 03:30:00+0100",
    ]
    assert {b - a for a, b in itertools.pairwise(ticks)} == {1800}


def test_ticks_never_repeat_or_go_back_across_a_year_of_dst() -> None:
    schedule = Schedule.parse("0,30 1-3 * * *", "America/New_York")
    ticks = schedule.upcoming(at(2025, 1, 1, 0, 0, zone=ZoneInfo("America/New_York")), 365 * 6)
    assert all(b > a for a, b in itertools.pairwise(ticks))


def test_counting_missed_ticks() -> None:
    every = Schedule.parse("* * * * * *")
    start = at(2026, 1, 1, 0, 0, 0, zone=ZoneInfo("UTC"))
    assert every.count_between(start, start + 10) == 10
    assert every.count_between(start, start + 10_000, limit=50) == 50


@pytest.mark.parametrize(
    ("schedule", "zone", "message"),
    [
        ("61 * * * *", "UTC", "'61 * * * *' is not a valid cron expression"),
        ("* * *", "UTC", "has 3 fields: write 5"),
        ("@often", "UTC", "unknown schedule '@often'"),
        ("@every", "UTC", "@every needs a duration"),
        ("@every 500ms", "UTC", "whole number of seconds"),
        ("@every 3 days", "UTC", "is not a duration"),
        ("* * * * *", "Mars/Olympus", "unknown time zone 'Mars/Olympus'"),
        ("", "UTC", "the schedule is empty"),
    ],
)
def test_bad_schedules_say_what_is_wrong(schedule: str, zone: str, message: str) -> None:
    with pytest.raises(ScheduleError, match=re.escape(message)):
        Schedule.parse(schedule, zone)


def test_schedules_in_words() -> None:
    assert Schedule.parse("*/5 * * * *").describe() == "Every 5 minutes"
    assert Schedule.parse("*/2 * * * * *").describe() == "Every 2 seconds"
    assert Schedule.parse("@every 1h30m").describe() == "Every 1 hour 30 minutes"
    assert Schedule.parse("0 9 * * 1-5", "Europe/Paris").describe() == (
        "At 09:00, Monday through Friday (Europe/Paris)"
    )


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"job": {"type": "A"}}, r"#3 schedule: is required"),
        ({"schedule": "* * * * *"}, r"#3 job: is required"),
        ({"schedule": "* * * * *", "job": {}}, r"#3 job\.type: is required"),
        ({"schedule": "* * * * *", "job": {"type": 5}}, r"#3 job\.type: expected `str`"),
        ({"schedule": "* * * * *", "job": {"type": "A", "qeue": "x"}}, r"job\.qeue: unknown key"),
        ({"schedule": "* * * * *", "job": {"type": "A", "args": 1}}, r"job\.args: expected"),
        ({"schedule": "* * * * *", "job": {"type": "A", "queue": "a b"}}, r"job\.queue: cannot"),
        ({"schedule": "* * * * *", "job": {"type": "A", "retry": -2}}, r"job\.retry: must be"),
        ({"schedule": "nope", "job": {"type": "A"}}, r"#3 schedule: 'nope' has 1 fields"),
        ({"schedule": "* * * * *", "tz": "X/Y", "job": {"type": "A"}}, r"#3 tz: unknown time"),
        ({"schedule": "* * * * *", "missed": "all", "job": {"type": "A"}}, r"#3 missed: must be"),
        ({"id": "a b", "schedule": "* * * * *", "job": {"type": "A"}}, r'\(id "a b"\) id: use'),
    ],
)
def test_bad_entries_name_the_entry_and_the_field(entry: dict[str, object], message: str) -> None:
    with pytest.raises(EntryError, match=message):
        parse_entry(entry, "file", "[[cron]] #3")


def test_an_entry_id_comes_from_its_content_unless_given() -> None:
    base = {"schedule": "*/5 * * * *", "job": {"type": "A", "args": [1]}}
    first = parse_entry(base, "file", "e")
    assert first.id == parse_entry(dict(base), "api", "e").id  # stable
    assert first.id != parse_entry({**base, "job": {"type": "A", "args": [2]}}, "file", "e").id
    named = parse_entry({**base, "id": "reports"}, "file", "e")
    assert named.id == "reports"
    assert named.rev == first.rev
