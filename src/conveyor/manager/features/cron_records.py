"""What cron keeps in the store, as records (``conveyor.store.records``), and how to read it.

Spaces (docs/design/cron.md says why each exists)::

    cron-entry        <id>           run-time entry (API, CLI, @app.cron): spec, source
    cron-meta         version        a token rewritten on every run-time change (servers poll it)
    cron-paused       <id>           present while the entry is paused (file entries too)
    cron-cursor       <id>           the last tick handled, and the entry's rev then
    cron-runs:<id>    <tick>         the claim of one tick: jid, owner, state, lease
                      <tick>/end     how that tick's job ended (ack / fail hooks)

``<tick>`` is the tick's RFC 3339 UTC time (``2026-01-01T00:00:05Z``); a "run now" gets its
own time with microseconds. A cron job's jid is ``cron:<id>:<tick>``: deterministic, so a
takeover re-enqueues the same jid, and recognisable, so ACK finds cron jobs without a lookup.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from conveyor.manager.features.cron_entry import CronEntry, CronSpec
from conveyor.timefmt import format_time, parse_time

__all__ = [
    "END_SUFFIX",
    "HISTORY_RUNS",
    "JID_PREFIX",
    "SPACE_CURSOR",
    "SPACE_ENTRIES",
    "SPACE_META",
    "SPACE_PAUSED",
    "VERSION_KEY",
    "Cursor",
    "Ending",
    "EntryView",
    "Paused",
    "Run",
    "RunView",
    "StoredEntry",
    "decode",
    "encode",
    "jid_for",
    "parse_jid",
    "runs_space",
    "tick_key",
]

SPACE_ENTRIES = "cron-entry"
SPACE_META = "cron-meta"
SPACE_PAUSED = "cron-paused"
SPACE_CURSOR = "cron-cursor"
VERSION_KEY = "version"
JID_PREFIX = "cron:"
END_SUFFIX = "/end"
HISTORY_RUNS = 20
"""Runs kept (and shown) per entry."""


def runs_space(entry_id: str) -> str:
    return f"cron-runs:{entry_id}"


def tick_key(tick: float) -> str:
    return format_time(tick)


def jid_for(entry_id: str, key: str) -> str:
    return f"{JID_PREFIX}{entry_id}:{key}"


def parse_jid(jid: str) -> tuple[str, str] | None:
    """``(entry id, tick key)`` of a cron job's jid, else None. Ids hold no ``:``."""
    if not jid.startswith(JID_PREFIX):
        return None
    entry_id, sep, key = jid[len(JID_PREFIX) :].partition(":")
    return (entry_id, key) if sep and entry_id and key else None


class Run(msgspec.Struct, omit_defaults=True):
    """The claim of one tick. ``state``: ``claimed`` (the owner is enqueueing; ``lease`` is
    when another server may take over), ``enqueued`` or ``error`` (the push was refused)."""

    jid: str
    owner: str
    state: str
    lease: float = 0.0
    kind: str = "tick"
    """``tick``, ``catch-up`` (one job for missed ticks) or ``manual`` (run now)."""
    missed: int = 0
    at: float = 0.0
    error: str = ""


class Ending(msgspec.Struct, omit_defaults=True):
    """How a tick's job ended: ``done``, ``retrying``, ``dead`` or ``discarded``."""

    state: str
    at: float
    error: str = ""


class Cursor(msgspec.Struct):
    tick: float
    rev: str


class Paused(msgspec.Struct):
    at: float


class StoredEntry(msgspec.Struct):
    spec: CronSpec
    source: str
    rev: str
    created_at: float


_encoder = msgspec.json.Encoder()


def encode(value: Any) -> bytes:
    return _encoder.encode(value)


def decode(data: bytes, kind: type[Any]) -> Any:
    return msgspec.json.decode(data, type=kind)


@dataclass(frozen=True, slots=True)
class RunView:
    """One run of an entry, for the dashboard, the API and the CLI."""

    key: str
    tick: float
    run: Run
    ending: Ending | None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "tick": self.key,
            "jid": self.run.jid,
            "kind": self.run.kind,
            "state": self.run.state,
        }
        if self.run.at:
            data["enqueued_at"] = format_time(self.run.at)
        if self.run.missed:
            data["missed"] = self.run.missed
        if self.run.error:
            data["error"] = self.run.error
        if self.ending is not None:
            data["outcome"] = self.ending.state
            data["ended_at"] = format_time(self.ending.at)
            if self.ending.error:
                data["outcome_error"] = self.ending.error
        return data

    @classmethod
    def parse(cls, key: str, value: bytes, ending: bytes | None) -> RunView | None:
        try:
            run = decode(value, Run)
            tick = parse_time(key)
            end = decode(ending, Ending) if ending is not None else None
        except (msgspec.DecodeError, ValueError):
            return None
        return cls(key, tick, run, end)


@dataclass(frozen=True, slots=True)
class EntryView:
    """An entry as the dashboard shows it."""

    entry: CronEntry
    paused_at: float | None
    next_runs: list[float]
    runs: list[RunView]

    @property
    def last_error(self) -> RunView | None:
        return next((run for run in self.runs if run.run.state == "error"), None)

    def to_json(self) -> dict[str, Any]:
        entry = self.entry
        data: dict[str, Any] = {
            "id": entry.id,
            "source": entry.source,
            "schedule": entry.spec.schedule,
            "tz": entry.spec.tz,
            "missed": entry.spec.missed,
            "description": entry.schedule.describe(),
            "job": entry.to_dict()["job"],
            "paused": self.paused_at is not None,
            "next_runs": [format_time(t) for t in self.next_runs],
            "runs": [run.to_json() for run in self.runs],
        }
        if self.paused_at is not None:
            data["paused_at"] = format_time(self.paused_at)
        if (error := self.last_error) is not None:
            data["last_error"] = {"tick": error.key, "error": error.run.error}
        return data
