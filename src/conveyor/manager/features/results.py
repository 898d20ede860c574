"""Results and completed jobs: what a job's handler returned, and finished jobs kept for a while
(docs/results.md; the decisions: docs/design/results.md).

* A job asks for its **result** with ``custom.result_ttl`` (seconds); its worker then sends the
  handler's value with the ACK (``ACK {"jid":..,"result":"<json>"}``). The outcome (succeeded
  with the value, or failed with the error when the job dies) is stored as a record for that
  long. ``RESULT`` waits for it without polling: a waiter per jid, woken by the ACK or FAIL
  that stores it, on this server or (a store signal) on any other.
* A job asks to be **kept** after success with ``custom.retain`` (seconds): its ACK moves it
  into the ``completed`` set in the same atomic step (``Store.ack_returning`` with ``keep``,
  the step that also frees its throttle slot and moves its batch), with its result, worker,
  run time and finishing time; a loop purges it when it expires.
* ``[results]`` holds the server's defaults for jobs that do not say (off), stamped into each
  job's ``custom`` at PUSH so its worker knows, and the largest result an ACK may carry.

The ACK of a job that asked for neither is untouched: only ACKs that carry a result (or every
ACK, while a default is on) are read to learn what their job asked for.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Self

import msgspec

from conveyor.errors import CommandError, ConfigError, InvalidJob, StoreError
from conveyor.job import Job
from conveyor.manager.features.base import Feature, Loop
from conveyor.manager.features.results_model import (
    FAILED,
    MAX_KEEP_SECONDS,
    SPACE,
    SUCCEEDED,
    Completion,
    Outcome,
    completion_of,
    decode_policy,
    encode,
    invalid_seconds,
    seconds_of,
    seconds_or,
    with_completion,
)
from conveyor.manager.middleware import FailContext, Next, PushContext
from conveyor.store.base import Reservation, SetEntry, SortedSet
from conveyor.store.records import Record
from conveyor.timefmt import format_time

__all__ = [
    "DEFAULT_MAX_RESULT_BYTES",
    "ResultsFeature",
    "ResultsSettings",
    "died_outcome",
]

log = logging.getLogger("conveyor.results")

DEFAULT_MAX_RESULT_BYTES = 1024 * 1024
MAX_WAIT_SECONDS = 3600.0
"""The longest one ``RESULT`` may wait (a client waits longer by asking again)."""
EXPECT_MARGIN_SECONDS = 1.0
"""How much longer than its wait a ``RESULT``'s registration with the store lasts."""
PURGE_BATCH = 1000
SIGNAL = "result"

_KEYS = {"ttl_seconds", "retain_seconds", "max_bytes"}
_PUSH_KEYS = frozenset(("result_ttl", "retain"))
_ABSENT = object()
_NO_RESULTS: Mapping[str, bytes] = MappingProxyType({})
_SETTLE_MARKS = (b'"result_ttl"', b'"retain"')
"""What a job that asks for something of its ACK holds (its ``custom`` keys; a default on
stamps them into every job): ``Endings.settle_marks``."""
_check_json = msgspec.json.Decoder(msgspec.Raw).decode
"""Decodes a result just enough to know it is one JSON value (a decoder made once: half the
cost of ``msgspec.json.decode(..., type=...)``, once a result)."""


@dataclass(frozen=True, slots=True)
class ResultsSettings:
    """``[results]``: the defaults for jobs that do not say, and the result size limit."""

    ttl_seconds: float = 0.0
    """How long a result is kept when the job does not say (``custom.result_ttl``); 0: off."""
    retain_seconds: float = 0.0
    """How long a succeeded job is kept when it does not say (``custom.retain``); 0: off."""
    max_bytes: int = DEFAULT_MAX_RESULT_BYTES
    """The largest result (its JSON) an ACK may carry."""

    @classmethod
    def parse(cls, table: Any) -> ResultsSettings:
        if not isinstance(table, dict):
            raise ConfigError("[results] must be a table")
        unknown = set(table) - _KEYS
        if unknown:
            known = ", ".join(sorted(_KEYS))
            raise ConfigError(f"[results]: unknown key {sorted(unknown)[0]!r} (known: {known})")
        values: dict[str, Any] = {}
        for key in ("ttl_seconds", "retain_seconds"):
            if key in table:
                if invalid_seconds(table[key]):
                    raise ConfigError(
                        f"[results] {key} must be a number of seconds from 0 to "
                        f"{MAX_KEEP_SECONDS}, got {table[key]!r}"
                    )
                values[key] = float(table[key])
        if "max_bytes" in table:
            size = table["max_bytes"]
            if isinstance(size, bool) or not isinstance(size, int) or not 2 <= size <= 1 << 30:
                raise ConfigError(
                    f"[results] max_bytes must be an integer from 2 to 2**30, got {size!r}"
                )
            values["max_bytes"] = size
        return cls(**values)


Deliver = Callable[[bytes], bool]
"""Sends a waiting ``RESULT``'s reply (the outcome's JSON) from the step that stored it;
False when it could not (its connection closed): then the waiter is woken to look."""


class _Waiters:
    """``RESULT`` commands waiting, by jid; a signal for a jid wakes its waiters. A waiter
    with a ``Deliver`` is answered by the ACK's own step, when that step knows the outcome
    (``deliver``): no task to wake, no store read, before any other work of the loop."""

    def __init__(self) -> None:
        self._by_jid: dict[str, dict[asyncio.Future[bool], Deliver | None]] = {}

    def add(self, jid: str, deliver: Deliver | None = None) -> asyncio.Future[bool]:
        """A future set to True once the outcome was delivered, False when woken to look."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._by_jid.setdefault(jid, {})[future] = deliver
        return future

    def discard(self, jid: str, future: asyncio.Future[bool]) -> None:
        waiting = self._by_jid.get(jid)
        if waiting is not None:
            waiting.pop(future, None)
            if not waiting:
                del self._by_jid[jid]

    def deliver(self, outcomes: Mapping[str, bytes]) -> None:
        """Answer the waiters of these jids that can be with their outcome (its JSON)."""
        if not self._by_jid:
            return
        for jid, body in outcomes.items():
            for future, send in self._by_jid.get(jid, {}).items():
                if not future.done() and send is not None and send(body):
                    future.set_result(True)

    def wake(self, jids: Sequence[str] | None) -> None:
        if not self._by_jid:
            return
        chosen = list(self._by_jid) if jids is None else jids
        for jid in chosen:
            for future in self._by_jid.get(jid, ()):
                if not future.done():
                    future.set_result(False)

    def __len__(self) -> int:
        return sum(len(waiting) for waiting in self._by_jid.values())

    @property
    def any(self) -> bool:
        """Whether some ``RESULT`` waits (a dict's truth: asked once an ACK)."""
        return bool(self._by_jid)


class _Settle:
    """What one ACK stores with each reservation it ends (``conveyor.store.endings.Settle``):
    the outcome record of a job that asked for its result, the completed entry of a job kept.
    ``told``: the jids of both, whose waiters are woken after. Only the jobs whose ACK carries
    a result are looked at, unless a default is on (then every job may keep something).

    Called once an ACK, in its step: it reads only what it needs of the job (``Asks``: two
    members of ``custom``), and formats the finishing time once, when something is stored."""

    __slots__ = (
        "_finished", "every", "now", "outcomes", "results", "settings", "signalled", "told",
    )  # fmt: skip
    space = SPACE
    topic = SIGNAL

    def __init__(
        self, settings: ResultsSettings, every: bool, results: Mapping[str, bytes]
    ) -> None:
        self.settings = settings
        self.results = results
        self.every = every
        self.now = time.time()
        self._finished = ""
        self.told: list[str] = []
        self.signalled = False
        """The store published the signal with its ACK (Redis): only this server is told."""
        self.outcomes: dict[str, bytes] = {}
        """The outcome records stored, by jid: what a waiting ``RESULT`` is answered."""

    def wants(self, jid: str) -> bool:
        return self.every or jid in self.results

    def __call__(self, reservation: Reservation) -> tuple[Record | None, SetEntry | None]:
        jid = reservation.jid
        result = self.results.get(jid)
        if result is None and not self.every:
            return None, None
        try:
            policy = decode_policy(reservation.payload)
        except (msgspec.DecodeError, RecursionError):
            return None, None  # not a job
        settings, asks = self.settings, policy.custom
        ttl, retain = settings.ttl_seconds, settings.retain_seconds
        if asks is not None:  # each None when not given: the default stays
            asked = asks.result_ttl
            if asked is not None:
                kind = asked.__class__  # the usual value, checked inline (seconds_or)
                if (kind is int or kind is float) and 0 <= asked <= MAX_KEEP_SECONDS:
                    ttl = float(asked)
                else:
                    ttl = seconds_or(asked, ttl)
            asked = asks.retain
            if asked is not None:
                retain = seconds_or(asked, retain)
        if not (ttl or retain):
            return None, None
        self.told.append(jid)
        now = self.now
        finished = self._finished
        if not finished:
            finished = self._finished = format_time(now)
        value = msgspec.Raw(result if result is not None else b"null")
        ran = now - reservation.reserved_at
        duration = int(ran * 1_000_000 + 0.5) / 1_000_000 if ran > 0 else 0.0  # round(ran, 6)
        record = entry = None
        if ttl:
            outcome = Outcome(
                jid, SUCCEEDED, finished, policy.jobtype, reservation.queue,
                reservation.wid, duration, value,
            )  # fmt: skip
            body = encode(outcome)
            record = Record(jid, body, now + ttl)
            self.outcomes[jid] = body
        if retain:
            completion = Completion(finished, reservation.wid, duration, value)
            payload = with_completion(reservation.payload, completion)
            entry = SetEntry(now + retain, jid, payload, reservation.queue, policy.jobtype)
        return record, entry


class ResultsFeature(Feature):
    """See the module docstring."""

    name = "results"
    tables = ("results",)

    def __init__(self, settings: ResultsSettings | None = None) -> None:
        self.settings = settings or ResultsSettings()
        self.every_ack = self._defaults_on()
        """A default is on: any ACK may be of a job that keeps something."""
        self._stamps = self.every_ack
        self._waiters = _Waiters()
        self._closed = False

    # ------------------------------------------------------------------ configuration

    @classmethod
    def from_config(cls, tables: Mapping[str, Any]) -> Self:
        if "results" not in tables:
            return cls()
        return cls(ResultsSettings.parse(tables["results"]))

    def reconfigure(self, new: Self) -> None:
        self.settings = new.settings
        self.every_ack = self._stamps = self._defaults_on()

    def bind(self, manager: Any) -> None:
        super().bind(manager)
        manager.on_signal(SIGNAL, self._waiters.wake)
        self._listeners: list[object] = manager._signal_handlers[SIGNAL]
        """This server's listeners of the signal (``Manager.on_signal``), this one's first."""
        manager.store.settle_marks = _SETTLE_MARKS  # noted at FETCH for their ACK (Redis)

    def close(self) -> None:
        self._closed = True
        self._waiters.wake(None)

    @property
    def pushes_on_custom(self) -> bool:
        return not self._stamps  # the defaults are stamped into every job that lacks them

    @property
    def push_keys(self) -> frozenset[str] | None:
        return None if self._stamps else _PUSH_KEYS  # stamps: a job without them is wanted

    def _defaults_on(self) -> bool:
        return bool(self.settings.ttl_seconds or self.settings.retain_seconds)

    def loops(self) -> Sequence[Loop]:
        interval = self.manager.config.dead_purge_interval_seconds
        return (Loop("completed", interval, self.purge_completed),)

    def policy(self, custom: dict[str, Any] | None) -> tuple[float, float]:
        """``(result_ttl, retain)`` of a job: its own, else the server's default."""
        settings = self.settings
        return (
            seconds_of(custom, "result_ttl", settings.ttl_seconds),
            seconds_of(custom, "retain", settings.retain_seconds),
        )

    # ------------------------------------------------------------------ push

    def wants_push(self, job: Job) -> bool:
        custom = job.custom
        if not custom:  # the usual job: only the defaults' stamps may concern it
            return self._stamps
        ttl, retain = custom.get("result_ttl", _ABSENT), custom.get("retain", _ABSENT)
        if ttl is not _ABSENT:
            kind = ttl.__class__  # the usual value, checked inline (invalid_seconds)
            usual = (kind is int or kind is float) and 0 <= ttl <= MAX_KEEP_SECONDS
            if not usual and invalid_seconds(ttl):
                return True
        if retain is not _ABSENT and invalid_seconds(retain):
            return True
        return self._stamps and (ttl is _ABSENT or retain is _ABSENT)

    async def push(self, ctx: PushContext, call_next: Next) -> None:
        job = ctx.job
        custom = job.custom or {}
        for key in ("result_ttl", "retain"):
            if key in custom and invalid_seconds(custom[key]):
                raise InvalidJob(
                    f"custom.{key} must be a number of seconds from 0 to {MAX_KEEP_SECONDS}, "
                    f"got {custom[key]!r}"
                )
        # Stamp the defaults, so the job's worker knows to send its result.
        defaults = {"result_ttl": self.settings.ttl_seconds, "retain": self.settings.retain_seconds}
        missing = {
            k: int(v) if v == int(v) else v for k, v in defaults.items() if v and k not in custom
        }
        if missing:
            job.custom = {**custom, **missing}
        await call_next()

    # ------------------------------------------------------------------ ack

    def check_result(self, jid: str, result: bytes) -> None:
        """Refuse a result that is too large or not JSON (``CommandError``)."""
        limit = self.settings.max_bytes
        if len(result) > limit:
            raise CommandError(
                f"result of {jid} is {len(result)} bytes; the limit is {limit} "
                "([results] max_bytes)"
            )
        try:
            _check_json(result)
        except (msgspec.DecodeError, RecursionError) as exc:
            why = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
            raise CommandError(f"result of {jid} is not JSON: {why}") from None

    async def acknowledge(self, jids: Sequence[str], results: Mapping[str, bytes]) -> int:
        """End these reservations, storing the results and keeping the jobs that asked for
        it, in the ACK's own step; returns how many reservations existed
        (``Manager.ack_many``)."""
        settle = self.settle(results)
        manager = self.manager
        done = await manager.ack_jobs(jids, settle=settle)  # one step: stored, kept, ...
        if settle.signalled or (settle.told and manager.store.in_process):
            self.told(settle)  # Redis told the other servers in the ACK's step; local: at once
        elif settle.told:
            self._waiters.deliver(settle.outcomes)
            await self._tell(settle.told)
        return done

    def settle(self, results: Mapping[str, bytes]) -> _Settle:
        """What one ACK stores with the jobs it ends (``Store.ack_returning``'s ``settle``),
        its results checked first (``CommandError``, with nothing done)."""
        limit = self.settings.max_bytes
        try:  # the usual results, checked inline; a bad one is told by check_result
            for sent in results.values():
                if len(sent) > limit:
                    break
                _check_json(sent)
            else:
                return _Settle(self.settings, self.every_ack, results)
        except (msgspec.DecodeError, RecursionError):
            pass
        for jid, sent in results.items():
            self.check_result(jid, sent)  # raises for the first bad one
        raise AssertionError("a result was refused, then accepted")  # pragma: no cover

    def settle_one(self, jid: str, result: bytes | None) -> _Settle:
        """``settle`` of one ACK's result (``soon.ack_settled``), without a mapping built
        first: the ACK that carries none (a default is on) has no result to check."""
        if result is None:
            return _Settle(self.settings, self.every_ack, _NO_RESULTS)
        if len(result) <= self.settings.max_bytes:
            try:
                _check_json(result)
            except (msgspec.DecodeError, RecursionError):
                pass
            else:
                return _Settle(self.settings, self.every_ack, {jid: result})
        self.check_result(jid, result)
        raise AssertionError("a result was refused, then accepted")  # pragma: no cover

    def told(self, settle: _Settle) -> None:
        """``_tell`` in the ACK's own step, for an in-process store (whose signals reach this
        server alone and call their listeners at once: ``LocalSignals``), and after a shared
        store's ACK that published the signal itself (``signalled``; its echo is skipped
        here): the waiting ``RESULT`` commands are answered there and then. Nothing to do,
        and nothing done, when no ``RESULT`` waits here and no other listener hears the
        signal on this server (the usual ACK: its outcome is read when asked for)."""
        if not self._waiters.any and len(self._listeners) <= 1:  # only _Waiters.wake
            return
        self._waiters.deliver(settle.outcomes)
        self.manager._signalled(SIGNAL, settle.told)

    # ------------------------------------------------------------------ fail

    async def fail(self, ctx: FailContext, call_next: Next) -> None:
        await call_next()
        if not ctx.moved or ctx.outcome.target is SortedSet.RETRIES:
            return  # not ended: it runs again
        ttl, _retain = self.policy(ctx.job.custom)
        store = self.manager.store
        if ttl:
            now = time.time()
            record = Record(ctx.job.jid, encode(_failed(ctx, now)), now + ttl)
            await store.put_records(SPACE, [record])
        if ttl or ctx.outcome.target is SortedSet.DEAD:
            await self._tell([ctx.job.jid])

    async def _tell(self, jids: list[str]) -> None:
        """Wake the ``RESULT`` commands waiting for these jids, on every server. A signal
        that cannot be sent is not the ACK's failure (what it ended is stored): a waiter on
        another server finds the outcome when it asks again (``app.result`` asks at least
        once a minute)."""
        try:
            await self.manager.store.signal(SIGNAL, jids)
        except StoreError as exc:
            log.warning("could not wake the waiters for %d results: %s", len(jids), exc)

    # ------------------------------------------------------------------ reading and waiting

    async def outcome(self, jid: str) -> Outcome | None:
        """How ``jid`` ended, if that is known: its result record, else its entry in the
        completed set, else its entry in the dead set (failed)."""
        store = self.manager.store
        found = (await store.get_records(SPACE, [jid], time.time())).get(jid)
        if found is not None:
            return _outcome(found.value)
        for entry in await store.get_set_entries(SortedSet.COMPLETED, [jid]):
            return completion_of(entry.payload)
        for entry in await store.get_set_entries(SortedSet.DEAD, [jid]):
            return died_outcome(entry)
        return None

    async def recorded(self, jids: Sequence[str]) -> dict[str, Outcome]:
        """The outcome records of these jids (one store read), by jid."""
        found = await self.manager.store.get_records(SPACE, jids, time.time())
        decoded = {jid: _outcome(record.value) for jid, record in found.items()}
        return {jid: outcome for jid, outcome in decoded.items() if outcome is not None}

    async def wait(
        self, jid: str, seconds: float, deliver: Deliver | None = None
    ) -> Outcome | None:
        """``outcome(jid)``, waiting up to ``seconds`` for it to be known (no polling: the
        ACK or FAIL that stores it wakes this waiter, on any server). With ``deliver``, an
        ACK on this server that stores the outcome may send it there and then: ``wait``
        then returns None (``deliver`` returned True)."""
        found = await self.outcome(jid)
        if found is not None or seconds <= 0 or self._closed:
            return found
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(seconds, MAX_WAIT_SECONDS)
        store, woken = self.manager.store, False
        while True:
            future = self._waiters.add(jid, deliver)
            try:
                if woken:  # mostly by this very outcome: a look, before registering again
                    found = await self.outcome(jid)
                    if future.done() and future.result():
                        return None
                    if found is not None or self._closed:
                        return found
                # registered here, then with every server (Redis publishes only the results
                # some server waits for), then the look: nothing is missed
                await store.expect(SIGNAL, jid, deadline - loop.time() + EXPECT_MARGIN_SECONDS)
                found = await self.outcome(jid)
                if future.done() and future.result():
                    return None  # delivered while it looked (a Redis read): sent once
                remaining = deadline - loop.time()
                if found is not None or remaining <= 0 or self._closed:
                    return found
                try:
                    async with asyncio.timeout(remaining):
                        if await future:
                            return None  # delivered by the ACK's step
                except TimeoutError:
                    self._waiters.discard(jid, future)  # no delivery during the last look
                    return await self.outcome(jid)
                woken = True
            finally:
                self._waiters.discard(jid, future)

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    # ------------------------------------------------------------------ the janitor

    async def purge_completed(self) -> None:
        """Drop completed jobs past their retention."""
        store = self.manager.store
        while await store.purge_set(SortedSet.COMPLETED, time.time(), PURGE_BATCH) >= PURGE_BATCH:
            pass


def _failed(ctx: FailContext, now: float) -> Outcome:
    """The outcome of a job that just died (or was discarded)."""
    job, report = ctx.job, ctx.report
    count = (job.failure or {}).get("retry_count")
    return Outcome(
        job.jid,
        FAILED,
        format_time(now),
        job.jobtype,
        job.queue,
        ctx.reservation.wid,
        round(max(0.0, now - ctx.reservation.reserved_at), 6),
        errtype=report.errtype,
        message=report.message,
        backtrace=list(report.backtrace),
        retry_count=count if isinstance(count, int) and not isinstance(count, bool) else None,
    )


def _outcome(value: bytes) -> Outcome | None:
    try:
        return msgspec.json.decode(value, type=Outcome)
    except msgspec.DecodeError:
        return None


def died_outcome(entry: SetEntry) -> Outcome | None:
    """The failed outcome a dead-set entry tells."""
    try:
        job = msgspec.json.decode(entry.payload, type=Job)
    except msgspec.DecodeError:
        return None
    failure = job.failure or {}
    backtrace = failure.get("backtrace")
    count = failure.get("retry_count")
    return Outcome(
        entry.jid,
        FAILED,
        str(failure.get("failed_at") or ""),
        job.jobtype,
        job.queue,
        errtype=str(failure.get("errtype") or ""),
        message=str(failure.get("message") or ""),
        backtrace=[str(line) for line in backtrace] if isinstance(backtrace, list) else [],
        retry_count=count if isinstance(count, int) and not isinstance(count, bool) else None,
    )
