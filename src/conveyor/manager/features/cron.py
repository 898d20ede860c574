"""Cron: periodic jobs run inside the server, each tick enqueued once (docs/cron.md).

Every server runs the same planner, with no leader: it sleeps until the earliest next tick
of all entries, then *claims* the tick in the store (``claim_record`` of ``<id>@<tick>``:
one server wins) and the winner pushes the job through the manager's push path, with a jid
that is a function of (entry, tick). The claim carries a lease: a server that dies between
its claim and its push leaves a claim that another server's sweep takes over once the lease
runs out (docs/design/cron.md). Missed ticks (every server down, or this one stalled) follow
the entry's ``missed`` policy: ``one`` catch-up job, or ``skip``.

Entries come from ``[[cron]]`` tables (reloaded on SIGHUP) and from the store (added at run
time through ``ADMIN cron.add``, the JSON API or ``@app.cron``); servers poll a version record
every ``REFRESH_SECONDS`` to see each other's changes. The management API is in
``cron_admin.py``; the records' layout in ``cron_records.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, Self

import msgspec

from conveyor.errors import CommandError, ConfigError
from conveyor.manager.config import ManagerConfig
from conveyor.manager.features.base import Loop
from conveyor.manager.features.cron_admin import CronAdmin
from conveyor.manager.features.cron_entry import (
    CronEntry,
    EntryError,
    check_template,
    parse_entry,
)
from conveyor.manager.features.cron_records import (
    END_SUFFIX,
    HISTORY_RUNS,
    JID_PREFIX,
    SPACE_CURSOR,
    SPACE_ENTRIES,
    SPACE_META,
    SPACE_PAUSED,
    VERSION_KEY,
    Cursor,
    Ending,
    Run,
    StoredEntry,
    decode,
    encode,
    jid_for,
    parse_jid,
    runs_space,
    tick_key,
)
from conveyor.manager.middleware import AckContext, FailContext, Next
from conveyor.store.base import SortedSet
from conveyor.store.records import Record
from conveyor.timefmt import format_time, parse_time

__all__ = ["CronFeature"]

log = logging.getLogger("conveyor.cron")

CLAIM_LEASE_SECONDS = 30.0
"""How long a claimed tick's owner has to push its job before another server takes over."""
MAX_LATE_SECONDS = 20.0
"""A tick the planner reaches later than this is missed: the ``missed`` policy decides.
Shorter than the lease, so a late planner never races a takeover for the same tick."""
MIN_KEEP_SECONDS = 300.0
"""A claim lives at least this long, whatever the schedule: no server can try the same tick
again after it is gone (a tick older than ``MAX_LATE_SECONDS`` is only ever the latest one)."""
REFRESH_SECONDS = 1.0
SWEEP_SECONDS = 5.0
IDLE_SECONDS = 60.0
CLAIM_ATTEMPTS = 3


class CronFeature(CronAdmin):
    """The ``[[cron]]`` feature: see the module docstring."""

    name = "cron"
    tables = ("cron",)

    def __init__(
        self, entries: Sequence[CronEntry] = (), clock: Callable[[], float] = time.time
    ) -> None:
        self._file: dict[str, CronEntry] = {entry.id: entry for entry in entries}
        self._runtime: dict[str, CronEntry] = {}
        self.clock = clock
        self.owner = uuid.uuid4().hex[:12]
        """This server's name in the claims it takes."""
        self._next: dict[str, tuple[CronEntry, float]] = {}
        self._version: bytes | None = None
        self._unsure: set[str] = set()
        """Entries whose last claim failed on a store error: their next tick catches up."""
        self._loaded = False
        self._wake = asyncio.Event()

    # ------------------------------------------------------------------ configuration

    @classmethod
    def from_config(cls, tables: Mapping[str, Any]) -> Self:
        raw = tables.get("cron", [])
        if not isinstance(raw, list):
            raise ConfigError("cron must be an array of tables: write [[cron]], not [cron]")
        entries: list[CronEntry] = []
        where: dict[str, int] = {}
        for number, table in enumerate(raw, 1):
            try:
                entry = parse_entry(table, "file", f"[[cron]] #{number}")
            except EntryError as exc:
                raise ConfigError(str(exc)) from None
            if entry.id in where:
                raise ConfigError(
                    f"[[cron]] #{number}: id {entry.id!r} is also the id of [[cron]] "
                    f"#{where[entry.id]} (two identical entries need distinct ids)"
                )
            where[entry.id] = number
            entries.append(entry)
        return cls(entries)

    def check_limits(self, config: ManagerConfig) -> None:
        """The job of every file entry must be one a PUSH accepts under ``config``."""
        for entry in self._file.values():
            try:
                check_template(entry, config)
            except EntryError as exc:
                raise ConfigError(str(exc)) from None

    def reconfigure(self, new: Self) -> None:
        self._file = dict(new._file)
        self._changed()

    @property
    def entries(self) -> dict[str, CronEntry]:
        """Every entry this server runs; a file entry shadows a run-time one of its id."""
        return {**self._runtime, **self._file}

    def _changed(self) -> None:
        self._wake.set()

    def loops(self) -> Sequence[Loop]:
        return (
            Loop("cron", 1.0, self._plan_forever),
            Loop("cron-refresh", REFRESH_SECONDS, self.refresh),
            Loop("cron-sweep", SWEEP_SECONDS, self.sweep),
        )

    # ------------------------------------------------------------------ the planner

    async def _plan_forever(self) -> None:
        """Sleep until the earliest next tick (or a change of entries), fire, repeat. Never
        returns; the manager restarts it a second later if it raises."""
        while True:
            self._wake.clear()
            wake_at = await self.step(self.clock())
            delay = wake_at - self.clock()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._wake.wait()

    async def step(self, now: float) -> float:
        """Fire every tick due at ``now``; returns when the next one is due. The planner's
        one step, called with a fixed clock by the tests."""
        if not self._loaded:
            await self.refresh(force=True)
        entries = self.entries
        for entry_id, (planned, _) in list(self._next.items()):
            if entries.get(entry_id) != planned:
                del self._next[entry_id]
        fresh = [entry for entry_id, entry in entries.items() if entry_id not in self._next]
        for entry in fresh:
            self._next[entry.id] = (entry, entry.schedule.next_after(now))
        if fresh:
            await self._catch_up_all(fresh, now)
        due = [(entry, tick) for entry, tick in self._next.values() if tick <= now]
        if due:
            await self._fire_due(due, now)
        return min((tick for _, tick in self._next.values()), default=now + IDLE_SECONDS)

    async def _fire_due(self, due: list[tuple[CronEntry, float]], now: float) -> None:
        skip = await self._not_firing([entry.id for entry, _ in due], now)
        firing: list[Coroutine[Any, Any, object]] = []
        for entry, first in due:
            ticks = [first]
            following = entry.schedule.next_after(first)
            while following <= now and len(ticks) < HISTORY_RUNS:
                ticks.append(following)
                following = entry.schedule.next_after(following)
            if following <= now:
                following = entry.schedule.next_after(now)
            self._next[entry.id] = (entry, following)
            if entry.id in skip:
                continue
            if entry.id in self._unsure or now - ticks[0] > MAX_LATE_SECONDS:
                firing.append(self._recover(entry, now))  # missed, not just late
            else:
                firing += [self._fire(entry, tick, "tick") for tick in ticks]
        work = asyncio.ensure_future(asyncio.gather(*firing))
        try:
            await asyncio.shield(work)
        except asyncio.CancelledError:
            await work  # a server stopping finishes the ticks it claimed (milliseconds)
            raise

    async def _not_firing(self, ids: list[str], now: float) -> set[str]:
        """The entries not to fire: paused, or run-time ones deleted or changed on another
        server since this one read them (the next refresh brings the change)."""
        store = self.manager.store
        skip = set(await store.get_records(SPACE_PAUSED, ids, now))
        entries = self.entries
        runtime = [entry_id for entry_id in ids if entries[entry_id].source != "file"]
        if runtime:
            stored = await store.get_records(SPACE_ENTRIES, runtime, now)
            for entry_id in runtime:
                record = stored.get(entry_id)
                if record is None or _stored_rev(record.value) != entries[entry_id].rev:
                    skip.add(entry_id)
                    self._version = None  # re-read at the next refresh
        return skip

    async def _catch_up_all(self, entries: list[CronEntry], now: float) -> None:
        paused = await self.manager.store.get_records(
            SPACE_PAUSED, [entry.id for entry in entries], now
        )
        await asyncio.gather(*(self._catch_up(e, now) for e in entries if e.id not in paused))

    async def _recover(self, entry: CronEntry, now: float) -> None:
        """``_catch_up`` after ticks this server could not claim or slept through."""
        self._unsure.discard(entry.id)
        try:
            await self._catch_up(entry, now)
        except Exception:
            log.exception("cron %s: cannot catch up yet; trying again at the next tick", entry.id)
            self._unsure.add(entry.id)

    async def _catch_up(self, entry: CronEntry, now: float) -> None:
        """Apply the missed policy to the ticks since the last one handled (the cursor)."""
        store = self.manager.store
        found = (await store.get_records(SPACE_CURSOR, [entry.id], now)).get(entry.id)
        cursor = _cursor(found.value) if found is not None else None
        if cursor is None or cursor.rev != entry.rev:  # new or changed: nothing was missed
            fresh = Cursor(now, entry.rev)
            await store.put_records(SPACE_CURSOR, [Record(entry.id, encode(fresh))])
            return
        latest = entry.schedule.latest_at_or_before(now)
        if latest is None or latest <= cursor.tick:
            return
        missed = entry.schedule.count_between(cursor.tick, latest)
        if missed == 1 and now - latest <= MAX_LATE_SECONDS:  # just late: a tick like any
            await self._fire(entry, latest, "tick")
            return
        if entry.spec.missed == "skip":
            log.info("cron %s: skipped %d missed tick(s) up to %s", entry.id, missed, latest)
            skipped = Cursor(latest, entry.rev)
            await store.put_records(SPACE_CURSOR, [Record(entry.id, encode(skipped))])
            return
        await self._fire(entry, latest, "catch-up", missed=missed)

    # ------------------------------------------------------------------ claim and push

    async def _fire(self, entry: CronEntry, tick: float, kind: str, missed: int = 0) -> str | None:
        """Claim ``tick`` of ``entry`` and push its job; the jid, or None when another server
        (or an earlier pass) has the tick."""
        key = tick_key(tick) if kind != "manual" else format_time(tick)
        now = self.clock()
        run = Run(jid_for(entry.id, key), self.owner, "claimed", now + CLAIM_LEASE_SECONDS)
        run = msgspec.structs.replace(run, kind=kind, missed=missed)
        record = Record(key, encode(run), self._keep_until(entry, tick, now))
        try:
            holder = await self._claim(runs_space(entry.id), record, now)
        except Exception:
            log.exception("cron %s: cannot claim tick %s; the next tick catches up", entry.id, key)
            self._unsure.add(entry.id)
            return None
        if holder is not None:
            return None
        await self._push(entry, tick, key, run, record.expires_at)
        return run.jid

    async def _claim(self, space: str, record: Record, now: float) -> bytes | None:
        """``claim_record``, tried again after a store error: the same value makes a retry
        after a lost reply succeed, so the claim is never lost to a blip."""
        for attempt in range(CLAIM_ATTEMPTS):
            try:
                return await self.manager.store.claim_record(space, record, now)
            except Exception:
                if attempt == CLAIM_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(0.05 * (attempt + 1))
        raise AssertionError("unreachable")

    async def _push(
        self,
        entry: CronEntry,
        tick: float,
        key: str,
        run: Run,
        keep: float | None,
        advance_cursor: bool = True,
    ) -> None:
        """Push the job of a claimed tick and record how that went. A store failure leaves
        the claim as it is: the lease runs out and a sweep pushes the job again."""
        custom: dict[str, Any] = {"cron_id": entry.id, "cron_tick": key}
        if run.missed:
            custom["cron_missed"] = run.missed
        store = self.manager.store
        try:
            await self.manager.push_job(entry.job(run.jid, custom))
        except CommandError as exc:  # refused: a full queue, NOTUNIQUE, a bad job
            log.warning("cron %s: the job of tick %s was refused: %s", entry.id, key, exc)
            done = msgspec.structs.replace(run, state="error", lease=0.0, error=str(exc))
        except Exception:
            log.exception("cron %s: cannot push the job of tick %s; retried later", entry.id, key)
            return
        else:
            done = msgspec.structs.replace(run, state="enqueued", lease=0.0)
        done = msgspec.structs.replace(done, at=self.clock())
        await store.put_records(runs_space(entry.id), [Record(key, encode(done), keep)])
        if advance_cursor and run.kind != "manual":
            cursor = Cursor(tick, entry.rev)
            await store.put_records(SPACE_CURSOR, [Record(entry.id, encode(cursor))])

    def _keep_until(self, entry: CronEntry, tick: float, now: float) -> float:
        """A run is kept until ``HISTORY_RUNS`` more ticks have passed, and at least
        ``MIN_KEEP_SECONDS``: long enough to be shown, and to stop a second claim."""
        later = entry.schedule.upcoming(tick, HISTORY_RUNS + 1)
        return max(later[-1] if later else now, now + MIN_KEEP_SECONDS)

    # ------------------------------------------------------------------ recovery

    async def sweep(self) -> None:
        """Take over the ticks whose owner claimed them and went silent past the lease."""
        now = self.clock()
        store = self.manager.store
        for entry in list(self.entries.values()):
            space = runs_space(entry.id)
            records = await store.list_records(space, now, limit=1_000_000)
            ended = {r.key[: -len(END_SUFFIX)] for r in records if r.key.endswith(END_SUFFIX)}
            for record in records:
                if record.key.endswith(END_SUFFIX):
                    continue
                try:
                    run = decode(record.value, Run)
                except msgspec.DecodeError:
                    continue
                if run.state == "claimed" and run.lease < now:
                    await self._take_over(entry, record, run, record.key in ended, now)

    async def _take_over(
        self, entry: CronEntry, record: Record, run: Run, ended: bool, now: float
    ) -> None:
        store = self.manager.store
        space = runs_space(entry.id)
        # delete-if-unchanged, then claim: of several sweeping servers only one gets both
        if await store.delete_records(space, [record.key], if_value=record.value) != 1:
            return
        mine = msgspec.structs.replace(run, owner=self.owner, lease=now + CLAIM_LEASE_SECONDS)
        taken = Record(record.key, encode(mine), record.expires_at)
        if await store.claim_record(space, taken, now) is not None:
            return
        log.warning(
            "cron %s: server %s claimed tick %s and did not push its job; pushing it now",
            entry.id,
            run.owner,
            record.key,
        )
        if ended:  # it did push, and the job has already run: only the record was missing
            done = msgspec.structs.replace(mine, state="enqueued", lease=0.0, at=now)
            await store.put_records(space, [Record(record.key, encode(done), record.expires_at)])
            return
        tick = parse_time(record.key)
        await self._push(entry, tick, record.key, mine, record.expires_at, advance_cursor=False)

    # ------------------------------------------------------------------ run-time entries

    async def refresh(self, force: bool = False) -> None:
        """Read the run-time entries again when another server (or this one) changed them."""
        store = self.manager.store
        now = self.clock()
        found = (await store.get_records(SPACE_META, [VERSION_KEY], now)).get(VERSION_KEY)
        version = found.value if found is not None else b""
        if not force and self._loaded and version == self._version:
            return
        runtime: dict[str, CronEntry] = {}
        for record in await store.list_records(SPACE_ENTRIES, now, limit=1_000_000):
            try:
                stored = decode(record.value, StoredEntry)
                data = msgspec.to_builtins(stored.spec)
                runtime[record.key] = parse_entry(data, stored.source, f"cron entry {record.key}")
            except (msgspec.DecodeError, msgspec.ValidationError, EntryError) as exc:
                log.error("cron entry %s in the store is unusable: %s", record.key, exc)
        self._version = version
        self._loaded = True
        if runtime != self._runtime:
            self._runtime = runtime
            self._changed()

    async def _bump_version(self) -> None:
        token = uuid.uuid4().hex.encode()
        await self.manager.store.put_records(SPACE_META, [Record(VERSION_KEY, token)])

    # ------------------------------------------------------------------ how jobs end

    def wants_ack(self, jid: str) -> bool:
        return jid.startswith(JID_PREFIX)

    async def ack(self, ctx: AckContext, call_next: Next) -> None:
        await call_next()
        parsed = parse_jid(ctx.jid)
        if parsed is not None and ctx.reservation is not None:
            await self._record_ending(parsed, Ending("done", self.clock()))

    async def fail(self, ctx: FailContext, call_next: Next) -> None:
        await call_next()
        parsed = parse_jid(ctx.reservation.jid)
        if parsed is None:
            return
        state = _ENDINGS.get(ctx.outcome.target, "discarded")
        error = f"{ctx.report.errtype}: {ctx.report.message}"
        await self._record_ending(parsed, Ending(state, self.clock(), error))

    async def _record_ending(self, parsed: tuple[str, str], ending: Ending) -> None:
        entry_id, key = parsed
        try:
            tick = parse_time(key)
        except ValueError:
            return
        entry = self.entries.get(entry_id)
        now = self.clock()
        keep = self._keep_until(entry, tick, now) if entry is not None else now + 86_400
        record = Record(key + END_SUFFIX, encode(ending), keep)
        try:
            await self.manager.store.put_records(runs_space(entry_id), [record])
        except Exception:  # history only: the job's own transition is done
            log.exception("cron %s: cannot record how the job of %s ended", entry_id, key)


_ENDINGS: dict[SortedSet | None, str] = {SortedSet.RETRIES: "retrying", SortedSet.DEAD: "dead"}


def _stored_rev(value: bytes) -> str:
    try:
        return str(decode(value, StoredEntry).rev)
    except msgspec.DecodeError:
        return ""


def _cursor(value: bytes) -> Cursor | None:
    try:
        cursor: Cursor = decode(value, Cursor)
    except msgspec.DecodeError:
        return None
    return cursor
