"""Unique jobs (Faktory Enterprise, reference §4.1): ``custom.unique_for`` and
``custom.unique_until``.

A job pushed with ``unique_for`` (seconds, a JSON number >= 1) takes a lock on its identity,
(queue, jobtype, args) in a canonical form: the same args written with other spacing, key order
or ``60`` for ``60.0`` are the same job (Faktory decodes numbers as float64 too). While the
lock is held, a job with the same identity and ``unique_for`` gets ``-NOTUNIQUE Job not
unique`` (in a PUSHB, that text for the job); one without ``unique_for`` bypasses the check,
as in Faktory.

The lock lives ``unique_for`` seconds from the PUSH (from ``at`` for a scheduled job) and is
released earlier:

* ``unique_until: "success"`` (the default): when the job is ACKed; a failed job keeps it;
* ``unique_until: "start"``: when the job is fetched;
* either way, when the job is removed for good: deleted or killed (MUTATE, the dashboard),
  purged from the dead set, expired, or refused by a full queue.

The lock is a record (``conveyor.store.records``) whose value is the holder's jid: a PUSH
retried after a lost reply claims it again (same value), and a release removes it only from
its holder. Bad values (``"sixty"``, ``0``, ``unique_until: "never"``) get a clear ``-ERR`` and
nothing is stored.
"""

from __future__ import annotations

import hashlib
import importlib
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import msgspec

from conveyor.errors import InvalidJob, NotUnique
from conveyor.job import Job, decode_job
from conveyor.manager.features.base import Feature
from conveyor.manager.middleware import FetchContext, Next, PushContext
from conveyor.store.endings import Acked
from conveyor.store.records import Record
from conveyor.timefmt import parse_time

__all__ = ["SPACE", "UniqueJobs", "unique_key", "unique_terms"]

SPACE = "unique"
"""The records space of the locks: unique key -> the holder's jid."""

UNTIL_SUCCESS, UNTIL_START = "success", "start"
MAX_UNIQUE_FOR_SECONDS = 10 * 366 * 86_400
"""Longest accepted ``unique_for`` (ten years): a lock must end some day."""

_START_MARK = b'"unique_until":"start"'
_UNIQUE_MARK = b'"unique_for":'
_canonical = msgspec.json.Encoder(order="sorted")


def _builtin_sha256() -> Callable[[bytes], Any]:
    """CPython's own SHA-256 (``_sha2``, ``_sha256`` before 3.12), else ``hashlib``'s.

    The same digest: the keys stored in job rows and on Redis do not change. For the few
    dozen bytes of an identity, OpenSSL's (``hashlib.sha256``) costs more to set up than to
    hash: a context fetched through its provider, cleansed when freed; about a quarter more
    instructions per key, and more of the cache (docs/design/admission.md)."""
    for name in ("_sha2", "_sha256"):
        try:
            return importlib.import_module(name).sha256  # type: ignore[no-any-return]
        except (ImportError, AttributeError):
            continue
    return hashlib.sha256


_sha256 = _builtin_sha256()


def _json(value: Any) -> str:
    try:
        return msgspec.json.encode(value).decode()
    except (TypeError, msgspec.EncodeError):
        return repr(value)


def unique_terms(job: Job) -> tuple[float, str] | None:
    """The job's (``unique_for`` seconds, ``unique_until``), None when it is not unique.
    Raises ``InvalidJob`` for a bad value of either key."""
    custom = job.custom or {}
    until = custom.get("unique_until", UNTIL_SUCCESS)
    if until not in (UNTIL_SUCCESS, UNTIL_START):
        raise InvalidJob(f'invalid unique_until {_json(until)}: must be "success" or "start"')
    seconds: Any = custom.get("unique_for")
    if seconds is None:
        if "unique_for" not in custom:
            return None
    elif type(seconds) is int and 1 <= seconds <= MAX_UNIQUE_FOR_SECONDS:  # the usual value
        return float(seconds), until
    number = isinstance(seconds, int | float) and not isinstance(seconds, bool)
    if not number or not math.isfinite(seconds) or not 1 <= seconds <= MAX_UNIQUE_FOR_SECONDS:
        raise InvalidJob(
            f"invalid unique_for {_json(seconds)}: must be a number of seconds, "
            f"from 1 to {MAX_UNIQUE_FOR_SECONDS}"
        )
    return float(seconds), until


def _canonical_value(value: Any) -> Any:
    """``value`` with integral floats as ints (``60.0`` is ``60``), recursively."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_canonical_value(item) for item in value]
    if isinstance(value, dict):
        return {key: _canonical_value(item) for key, item in value.items()}
    return value


_FLAT = frozenset({str, int, bool, type(None)})
"""The types of args already in canonical form (no float to write as an int, no keys)."""


def unique_key(job: Job) -> str:
    """The lock's key: a digest of (queue, jobtype, args) in canonical JSON (sorted keys)."""
    args = job.args or []
    flat = _FLAT
    for arg in args:  # the usual args (strings, ints) are canonical as they stand
        if type(arg) not in flat:
            args = _canonical_value(args)
            break
    identity = _canonical.encode([job.queue, job.jobtype, args])
    return _sha256(identity).hexdigest()  # type: ignore[no-any-return]


class UniqueJobs(Feature):
    name = "unique"

    gates_on_custom = True
    fetch_marks = (_START_MARK,)
    push_keys = frozenset(("unique_for", "unique_until"))
    acked_marks = (_UNIQUE_MARK,)

    def wants_push(self, job: Job) -> bool:
        custom = job.custom
        return custom is not None and ("unique_for" in custom or "unique_until" in custom)

    async def push(self, ctx: PushContext, call_next: Next) -> None:
        job = ctx.job
        terms = unique_terms(job)
        if terms is not None:
            now = time.time()
            lock = _lock(job, terms[0], now)
            if await self.manager.store.claim_record(SPACE, lock, now) is not None:
                raise NotUnique("Job not unique")
        await call_next()

    def push_now(self, job: Job) -> bool:
        """``push`` in the caller's step: the lock claimed from an in-process store."""
        custom = job.custom or {}
        seconds: Any = custom.get("unique_for")
        if (
            type(seconds) is not int
            or len(custom) != 1
            or not 1 <= seconds <= MAX_UNIQUE_FOR_SECONDS
        ):
            # not the usual {"unique_for": <int>} alone: unique_terms says (or refuses)
            terms = unique_terms(job)
            if terms is None:
                return True
            seconds = terms[0]
        now = time.time()
        start = max(now, parse_time(job.at)) if job.at else now  # _lock, inline
        lock = Record(unique_key(job), job.jid.encode(), start + seconds)
        if self.manager.store.claim_record_now(SPACE, lock, now) is not None:
            raise NotUnique("Job not unique")
        return True

    def wants_fetch(self, payload: bytes) -> bool:
        return _START_MARK in payload

    async def fetch(self, ctx: FetchContext, call_next: Next) -> None:
        terms = _terms_or_none(ctx.job)
        if terms is not None and terms[1] == UNTIL_START:
            await self._release([ctx.job])
        await call_next()

    async def acked(self, acked: Acked) -> None:
        await self._release(_unique_jobs(r.payload for r in acked.ended))

    async def removed(self, payloads: Sequence[bytes]) -> None:
        await self._release(_unique_jobs(payloads))

    async def watches_removals(self) -> bool:
        return await self.manager.store.count_records(SPACE, time.time()) > 0

    async def _release(self, jobs: Iterable[Job]) -> None:
        store = self.manager.store
        for job in jobs:
            if _terms_or_none(job) is not None:
                await store.delete_records(SPACE, [unique_key(job)], if_value=job.jid.encode())

    async def lock_of(self, job: Job) -> Record | None:
        """The lock on ``job``'s identity, whoever holds it (the dashboard's job page)."""
        if _terms_or_none(job) is None:
            return None
        found = await self.manager.store.get_records(SPACE, [unique_key(job)], time.time())
        return next(iter(found.values()), None)

    async def info(self) -> Mapping[str, Any] | None:
        return {"locks": await self.manager.store.count_records(SPACE, time.time())}


def _lock(job: Job, seconds: float, now: float) -> Record:
    """The lock a PUSH of ``job`` claims, for ``seconds`` from now (a scheduled job's from
    its ``at``)."""
    start = max(now, parse_time(job.at)) if job.at else now
    return Record(unique_key(job), job.jid.encode(), start + seconds)


def _terms_or_none(job: Job) -> tuple[float, str] | None:
    try:
        return unique_terms(job)
    except InvalidJob:  # stored before it was checked (cannot happen through PUSH)
        return None


def _unique_jobs(payloads: Iterable[bytes]) -> list[Job]:
    return [decode_job(payload) for payload in payloads if _UNIQUE_MARK in payload]
