"""Cancellation: stop a job wherever it is, and remember that it was stopped (docs/cancellation.md).

A job waiting in a queue, a sorted set (scheduled, retries) or an aggregating group is taken
out of it; a job being worked on loses its reservation, and the worker holding it is told
(``watch``, the ``CANCELS`` verb). Either way one store step (``Store.cancel_job``) removes
the job, writes its record (space ``cancelled``, kept ``retention``) and counts it, so the
job's page shows it as *cancelled*, it is never retried or dead, and it is counted apart.

A job that moves while it is being cancelled (fetched, promoted, flushed) is looked for again
where it went, a few times. The worker's late ACK is a no-op like any ACK of an unknown job;
its late FAIL is answered ``+OK`` (``unreserved_fail``) and retries nothing.

**Telling the worker.** Our worker keeps one connection in ``CANCELS``, a blocking wait like
FETCH: it returns the jids of that worker's jobs cancelled since, at once when there are any.
A notice is a record (space ``cancel-notices``, jid -> wid) so any server can deliver it.
This server keeps the notices in memory: a cancel made here wakes the waiting ``CANCELS`` at
once; on a shared store (Redis) the notices space is read every ``NOTICE_POLL_SECONDS``, only
while a worker watches through this server, so a cancel made on another server reaches the
worker within about half a second. An idle server with no watching worker reads nothing.
Design notes: docs/design/cancel-aggregate.md.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Self

import msgspec

from conveyor.errors import CommandError, ConfigError
from conveyor.manager.features.base import Feature, Loop
from conveyor.manager.features.cron_schedule import ScheduleError, parse_duration
from conveyor.store.base import Reservation
from conveyor.store.cancels import (
    CANCEL_FROM,
    CANCELLED_SPACE,
    COUNTS_SPACE,
    NOTICES_SPACE,
    TOTAL_KEY,
    CancelOutcome,
    CancelTarget,
    decode_count,
)
from conveyor.store.records import Record
from conveyor.timefmt import day_key, format_time

if TYPE_CHECKING:
    from conveyor.manager.admin import JobLocation
    from conveyor.manager.types import ClientInfo

__all__ = ["CancelFeature", "CancelReport", "Cancelled"]

log = logging.getLogger("conveyor.cancel")

RETENTION_SECONDS = 7 * 86_400.0
"""How long the record of a cancelled job is kept (``[cancellation] retention``)."""
NOTICE_SECONDS = 300.0
"""How long a running job's worker may take to hear of its cancellation."""
NOTICE_POLL_SECONDS = 0.5
"""On a shared store, how often the notices are read while a worker watches here."""
WATCHED_RECENTLY_SECONDS = 10.0
MAX_WAIT_SECONDS = 10.0
"""The longest a ``CANCELS`` may wait (a stopping server waits for it)."""
LOCATE_ATTEMPTS = 3
OUTCOMES = ("cancelled", "already", "finished", "unknown", "moving", "refused")
"""What a cancel says of each job (``CancelReport.outcome``, docs/cancellation.md)."""


class Cancelled(msgspec.Struct, omit_defaults=True):
    """The record of a cancelled job (space ``cancelled``): when, from where, and the job."""

    at: float
    was: str
    queue: str = ""
    wid: str = ""
    group: str = ""
    job: msgspec.Raw = msgspec.Raw(b"null")


class CancelReport(msgspec.Struct):
    """What a cancel did to one job: ``outcome`` is one of ``OUTCOMES``; ``was`` where the
    job was (``queued``, ``working``, ...; empty when it was found nowhere)."""

    jid: str
    outcome: str
    was: str
    message: str

    def to_json(self) -> dict[str, str]:
        return msgspec.to_builtins(self)  # type: ignore[no-any-return]


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Cancelled)


@dataclass(slots=True)
class _Notice:
    expires_at: float
    told: list[ClientInfo] = field(default_factory=list)
    """The connections that were told already (a reconnected worker is told again)."""


def decode_cancelled(value: bytes) -> Cancelled | None:
    try:
        return _decoder.decode(value)
    except msgspec.DecodeError:
        return None


class CancelFeature(Feature):
    """Cancelling jobs, and the channel that tells workers (see the module docstring)."""

    name = "cancellation"
    tables = ("cancellation",)

    def __init__(
        self, retention: float = RETENTION_SECONDS, clock: Callable[[], float] = time.time
    ) -> None:
        self.retention = retention
        self.clock = clock
        self._notices: dict[str, dict[str, _Notice]] = {}  # wid -> jid -> notice
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}
        self._loaded = False
        self._watched_at = -WATCHED_RECENTLY_SECONDS

    @classmethod
    def from_config(cls, tables: Mapping[str, Any]) -> Self:
        table = tables.get("cancellation", {})
        if not isinstance(table, dict):
            raise ConfigError("[cancellation] must be a table")
        unknown = sorted(set(table) - {"retention"})
        if unknown:
            raise ConfigError(f"[cancellation]: unknown key {unknown[0]!r} (known: retention)")
        raw = table.get("retention", "168h")
        try:
            retention = parse_duration(raw) if isinstance(raw, str) else -1.0
        except ScheduleError as exc:
            raise ConfigError(f"[cancellation] retention: {exc}") from None
        if retention <= 0:
            raise ConfigError(f"[cancellation] retention must be a duration like 168h, not {raw!r}")
        return cls(retention)

    def reconfigure(self, new: Self) -> None:
        self.retention = new.retention

    def loops(self) -> Sequence[Loop]:
        return (Loop("cancel-notices", NOTICE_POLL_SECONDS, self._poll),)

    # ------------------------------------------------------------------ cancelling

    async def cancel(self, jids: Sequence[str]) -> list[CancelReport]:
        """Cancel each job wherever it is; one report per distinct jid, in order."""
        reports: dict[str, CancelReport] = {}
        pending = list(dict.fromkeys(jids))
        for _ in range(LOCATE_ATTEMPTS):
            if not pending:
                break
            located = await self.manager.locate_many(pending)
            moved = []
            for jid in pending:
                report = await self._cancel_one(jid, located.get(jid))
                if report is None:
                    moved.append(jid)
                else:
                    reports[jid] = report
            pending = moved
        for jid in pending:
            message = "it kept moving on while it was being cancelled: try again"
            reports[jid] = CancelReport(jid, "moving", "", message)
        return [reports[jid] for jid in dict.fromkeys(jids)]

    async def _cancel_one(self, jid: str, located: JobLocation | None) -> CancelReport | None:
        """Cancel ``jid`` where it was found; None when it moved meanwhile."""
        if located is None:
            message = "no such job: it may have finished (acknowledged) or never existed"
            return CancelReport(jid, "unknown", "", message)
        where = located.where
        if where == "cancelled":
            return CancelReport(jid, "already", str(located.details.get("was", "")), _already)
        if where == "waiting":  # for the jobs of its custom.after (the batches feature's)
            return CancelReport(jid, "refused", where, _WAITING)
        if where not in CANCEL_FROM:
            message = f"it has finished: it is {where}" + (
                " (delete it instead)" if where == "dead" else ""
            )
            return CancelReport(jid, "finished", where, message)
        now = self.clock()
        target = CancelTarget(jid, where, located.queue, located.score, located.wid, located.group)
        cancelled = Cancelled(
            now, where, located.queue, located.wid, located.group, msgspec.Raw(located.payload)
        )
        record = Record(jid, _encoder.encode(cancelled), now + self.retention)
        notice = None
        if where == "working" and located.wid:
            notice = Record(jid, located.wid.encode(), now + NOTICE_SECONDS)
        outcome = await self.manager.store.cancel_job(target, record, notice, day_key(now), now)
        if outcome is CancelOutcome.MOVED:
            return None
        if outcome is CancelOutcome.ALREADY:
            return CancelReport(jid, "already", where, _already)
        # its unique lock, expiry deadline and throttle slot go with it (docs/admission.md)
        reservation = None
        if where == "working":
            reservation = Reservation(jid, located.queue, located.payload, located.wid, now, now)
        await self.manager.taken_away(located.payload, reservation)
        if notice is not None:
            self._add_notice(located.wid, jid, notice.expires_at or now)
            log.info("cancelled job %s while worker %s ran it", jid, located.wid)
            message = f"cancelled while worker {located.wid} ran it: it is told to stop"
        else:
            message = f"cancelled: it was {where}"
        return CancelReport(jid, "cancelled", where, message)

    # ------------------------------------------------------------------ what is known of it

    async def history(self, jids: Sequence[str]) -> Mapping[str, JobLocation]:
        from conveyor.manager.admin import JobLocation

        found = await self.manager.store.get_records(CANCELLED_SPACE, jids, self.clock())
        located = {}
        for jid, record in found.items():
            cancelled = decode_cancelled(record.value)
            if cancelled is None:
                continue
            details = {"cancelled_at": format_time(cancelled.at), "was": cancelled.was}
            if cancelled.group:
                details["group"] = cancelled.group
            payload = bytes(cancelled.job)
            located[jid] = JobLocation("cancelled", cancelled.queue, payload, cancelled.wid,
                                       details=details)  # fmt: skip
        return located

    async def counts(self, days: Sequence[str] = ()) -> dict[str, int]:
        """Jobs cancelled in all (``total``) and on each of ``days`` (``YYYY-MM-DD``)."""
        keys = [TOTAL_KEY, *days]
        found = await self.manager.store.get_records(COUNTS_SPACE, keys, self.clock())
        return {key: decode_count(found[key].value if key in found else None) for key in keys}

    async def info(self) -> Mapping[str, Any] | None:
        now = self.clock()
        today = day_key(now)
        counts = await self.counts([today])
        return {"cancelled": counts[TOTAL_KEY], "cancelled_today": counts[today]}

    async def unreserved_fail(self, jid: str) -> bool:
        store = self.manager.store
        found = (await store.get_records(CANCELLED_SPACE, [jid], self.clock())).get(jid)
        if found is None:
            return False
        cancelled = decode_cancelled(found.value)
        # the worker has stopped the job: its notice is done with
        await store.delete_records(NOTICES_SPACE, [jid])
        if cancelled is not None:
            self._forget_notice(cancelled.wid, jid)
        return True

    # ------------------------------------------------------------------ telling workers

    async def watch(self, client: ClientInfo, wait: float) -> list[str]:
        """``CANCELS``: the jids of ``client``'s worker cancelled while it ran them that this
        connection was not told of yet; waits up to ``wait`` seconds for one."""
        wid = client.wid
        if not wid:
            raise CommandError("CANCELS is for worker connections: say HELLO with a wid")
        if not 0 <= wait <= MAX_WAIT_SECONDS:
            raise CommandError(f"CANCELS wait must be from 0 to {MAX_WAIT_SECONDS:g} seconds")
        if not self._loaded:
            await self._refresh()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            self._watched_at = self.clock()
            fresh = self._untold(wid, client)
            remaining = deadline - loop.time()
            if fresh or remaining <= 0:
                return fresh
            future = loop.create_future()
            waiting = self._waiters.setdefault(wid, set())
            waiting.add(future)
            try:
                async with asyncio.timeout(remaining):
                    await future
            except TimeoutError:
                pass
            finally:
                waiting.discard(future)
                if not waiting:
                    self._waiters.pop(wid, None)

    def _untold(self, wid: str, client: ClientInfo) -> list[str]:
        notices = self._notices.get(wid)
        if not notices:
            return []
        now = self.clock()
        fresh = []
        for jid, notice in list(notices.items()):
            if notice.expires_at <= now:
                del notices[jid]
            elif not any(told is client for told in notice.told):
                notice.told.append(client)
                fresh.append(jid)
        if not notices:
            del self._notices[wid]
        return fresh

    def _add_notice(self, wid: str, jid: str, expires_at: float) -> None:
        notices = self._notices.setdefault(wid, {})
        if jid not in notices:
            notices[jid] = _Notice(expires_at)
        self._wake(wid)

    def _forget_notice(self, wid: str, jid: str) -> None:
        notices = self._notices.get(wid)
        if notices is not None:
            notices.pop(jid, None)
            if not notices:
                del self._notices[wid]

    def _wake(self, wid: str) -> None:
        for future in self._waiters.get(wid, ()):
            if not future.done():
                future.set_result(None)

    async def _poll(self) -> None:
        """On a shared store, read the notices other servers wrote, while a worker watches
        here. A store one server owns has them all in memory after the first read."""
        if self._loaded and self.manager.store.in_process:
            return
        if not self._waiters and self.clock() - self._watched_at > WATCHED_RECENTLY_SECONDS:
            return
        await self._refresh()

    async def _refresh(self) -> None:
        """Take the notices of the store, keeping who was told of each already."""
        now = self.clock()
        records = await self.manager.store.list_records(NOTICES_SPACE, now, limit=1_000_000)
        notices: dict[str, dict[str, _Notice]] = {}
        for record in records:
            wid = record.value.decode("utf-8", "replace")
            old = self._notices.get(wid, {}).get(record.key)
            expires_at = record.expires_at if record.expires_at is not None else now + 60
            notice = _Notice(expires_at, old.told if old is not None else [])
            notices.setdefault(wid, {})[record.key] = notice
        self._notices = notices
        self._loaded = True
        for wid in notices:
            self._wake(wid)


_already = "it was cancelled already"
_WAITING = (
    "it waits for other jobs (custom.after) and cannot be cancelled there: it is released when"
    " they have succeeded, and dies with them if one dies"
)
