"""A cron entry: what to enqueue, on which schedule, validated once (docs/cron.md).

The same ``[[cron]]`` shape is read from the config file, from ``ADMIN cron.add`` (or the
``CRON ADD`` alias), the JSON API and ``@app.cron``; one function (``parse_entry``) checks
it, so a bad entry gets the same message whichever way it came, naming the entry and the
field. ``check_template`` then runs the manager's own PUSH validation on the job the entry
makes, against the server's limits: an entry whose every job a PUSH would refuse is refused
when it is added, with the PUSH's message, not at each tick.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from conveyor.errors import InvalidJob
from conveyor.job import Job, encode_job
from conveyor.manager.config import ManagerConfig
from conveyor.manager.features.cron_schedule import Schedule, ScheduleError
from conveyor.manager.validation import (
    TOO_DEEP,
    check_queue_name,
    decode_pushed,
    prepare_job,
)

__all__ = [
    "ENTRY_ID",
    "MISSED_POLICIES",
    "SOURCES",
    "CronEntry",
    "CronJobSpec",
    "CronSpec",
    "EntryError",
    "check_template",
    "parse_entry",
]

ENTRY_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")
MISSED_POLICIES = ("one", "skip")
SOURCES = ("file", "api", "code")


class EntryError(ValueError):
    """A cron entry that cannot be used: ``str()`` names the entry and the field."""


class CronJobSpec(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """``[cron.job]``: Faktory Enterprise's keys."""

    type: str
    queue: str = "default"
    args: list[Any] = msgspec.field(default_factory=list)
    retry: int | None = None
    reserve_for: int | None = None
    custom: dict[str, Any] = msgspec.field(default_factory=dict)


class CronSpec(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """One ``[[cron]]`` table as written."""

    schedule: str
    job: CronJobSpec
    id: str = ""
    tz: str = "UTC"
    missed: str = "one"


@dataclass(frozen=True, eq=False)
class CronEntry:
    """A valid entry. ``rev`` changes with anything that changes which jobs it makes;
    ``label`` is how messages name it (``[[cron]] #2 (id "x")``)."""

    id: str
    spec: CronSpec
    schedule: Schedule
    source: str
    rev: str
    label: str = ""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CronEntry) and (
            self.id,
            self.rev,
            self.source,
            self.spec.missed,
        ) == (other.id, other.rev, other.source, other.spec.missed)

    def __hash__(self) -> int:
        return hash((self.id, self.rev))

    def job(self, jid: str, custom: Mapping[str, Any]) -> Job:
        spec = self.spec.job
        return Job(
            jid=jid,
            jobtype=spec.type,
            queue=spec.queue,
            args=list(spec.args),
            retry=spec.retry,
            reserve_for=spec.reserve_for or 0,
            custom={**spec.custom, **custom},
        )

    def to_dict(self) -> dict[str, Any]:
        """The entry as ``[[cron]]`` would write it (with its id)."""
        data: dict[str, Any] = msgspec.to_builtins(self.spec)
        data["id"] = self.id
        return data


_CONTENT_ENCODER = msgspec.json.Encoder(order="deterministic")


def parse_entry(
    data: Any, source: str, where: str, limits: ManagerConfig | None = None
) -> CronEntry:
    """Validate one entry; ``where`` says which (``[[cron]] #2`` for a file). With ``limits``
    (the server's), ``check_template`` too. Raises ``EntryError`` with
    ``<where> (id "...") <field>: <problem>``."""
    if not isinstance(data, Mapping):
        raise EntryError(f"{where}: expected a table, got {data!r}")
    label = where + (f' (id "{data["id"]}")' if isinstance(data.get("id"), str) else "")
    try:
        spec = msgspec.convert(data, CronSpec, strict=True)
    except msgspec.ValidationError as exc:
        raise EntryError(f"{label} {_field_message(str(exc))}") from None
    entry = _check(spec, source, label)
    if limits is not None:
        check_template(entry, limits)
    return entry


def _check(spec: CronSpec, source: str, label: str) -> CronEntry:
    def bad(field: str, problem: str) -> EntryError:
        return EntryError(f"{label} {field}: {problem}")

    if spec.id and ENTRY_ID.fullmatch(spec.id) is None:
        raise bad("id", "use 1 to 64 letters, digits, '_', '.' or '-'")
    try:
        schedule = Schedule.parse(spec.schedule, spec.tz)
    except ScheduleError as exc:
        raise bad("tz" if "time zone" in str(exc) else "schedule", str(exc)) from None
    if spec.missed not in MISSED_POLICIES:
        raise bad("missed", f'must be "one" or "skip", not {spec.missed!r}')
    job = spec.job
    if not job.type.strip():
        raise bad("job.type", "is required: the jobtype to enqueue")
    try:
        check_queue_name(job.queue)
    except InvalidJob as exc:
        raise bad("job.queue", exc.message) from None
    if job.retry is not None and job.retry < -1:
        raise bad("job.retry", "must be -1 (no retry, straight to dead) or more")
    if job.reserve_for is not None and job.reserve_for < 0:
        raise bad("job.reserve_for", "must be 0 (the server's default) or more seconds")
    for key in ("cron_id", "cron_tick"):
        if key in job.custom:
            raise bad(f"job.custom.{key}", "is set by cron itself")
    try:
        content = _CONTENT_ENCODER.encode([spec.schedule, spec.tz, msgspec.to_builtins(job)])
    except (TypeError, msgspec.EncodeError) as exc:
        raise bad("job", f"cannot be encoded as JSON: {exc}") from None
    rev = hashlib.sha256(content).hexdigest()[:12]
    return CronEntry(spec.id or f"cron-{rev}", spec, schedule, source, rev, label)


_SAMPLE_TICK = "2000-01-01T00:00:00.000000Z"
"""The widest tick key a job's jid and ``custom.cron_tick`` carry (a manual run's)."""


def check_template(entry: CronEntry, config: ManagerConfig) -> None:
    """Refuse an entry whose job a PUSH would refuse, whatever the tick: the job a tick
    makes goes through the manager's own PUSH validation (``decode_pushed`` on its JSON, then
    ``prepare_job``) under ``config``'s limits. Raises ``EntryError`` with the PUSH's
    message after the entry's label and the field it blames."""
    custom = {"cron_id": entry.id, "cron_tick": _SAMPLE_TICK, "cron_missed": 1}
    job = entry.job(f"cron:{entry.id}:{_SAMPLE_TICK}", custom)
    try:
        prepare_job(decode_pushed(encode_job(job), config), config)
    except InvalidJob as exc:
        field = _blamed_field(exc.message, entry, config)
        raise EntryError(f"{entry.label} {field}: {exc.message}") from None
    except RecursionError:  # too deep even to encode: far over the PUSH's nesting limit
        raise EntryError(f"{entry.label} job: {TOO_DEEP}") from None


def _blamed_field(message: str, entry: CronEntry, config: ManagerConfig) -> str:
    """The ``[cron.job]`` key a PUSH refusal is about (``job`` when it is the whole job)."""
    if message == TOO_DEEP:
        args_only = Job(jid="cron:args-only", jobtype="x", args=list(entry.spec.job.args))
        try:
            prepare_job(args_only, config)
        except InvalidJob:
            return "job.args"
        return "job.custom"
    for fragment, field in _FIELDS:
        if fragment in message:
            return field
    return "job"


_FIELDS = (
    ("queue", "job.queue"),
    ("reserved for", "job.reserve_for"),
    ("jobtype", "job.type"),
)


_AT_PATH = re.compile(r"^(.*?)(?: - at `\$\.?(.*)`)?$")
_MISSING = re.compile(r"Object missing required field `(\w+)`")
_UNKNOWN = re.compile(r"Object contains unknown field `(\w+)`")


def _field_message(message: str) -> str:
    """msgspec's ``Expected `str`, got `int` - at `$.job.type``` as ``job.type: expected ...``."""
    match = _AT_PATH.match(message)
    problem, path = (match.group(1), match.group(2) or "") if match else (message, "")
    prefix = f"{path}." if path else ""
    if found := _MISSING.fullmatch(problem):
        return f"{prefix}{found.group(1)}: is required"
    if found := _UNKNOWN.fullmatch(problem):
        return f"{prefix}{found.group(1)}: unknown key"
    return f"{path or 'entry'}: {problem[:1].lower() + problem[1:]}"
