"""Aggregation: jobs of one group wait together and run as one job (docs/aggregation.md).

A job pushed with ``custom.aggregate`` (``{"max_size": .., "max_delay": .., "grace": ..}``)
and ``custom.group`` is not queued: it joins the aggregating group of its queue, jobtype and
group name (``Store.add_to_groups``), and the PUSH is answered once it is stored there. When
the group is due -- ``max_size`` members, ``max_delay`` seconds after its oldest member, or
``grace`` seconds after its newest -- one job is enqueued whose ``args`` is one array: each
member's ``args``, in arrival order. That job keeps the jobtype, queue and options of the
oldest member, its jid is ``agg:<oldest member's jid>``, and ``custom.aggregated`` says what
it holds.

Every server runs the same loop, with no leader: it sleeps until the earliest due group (or a
push here that makes one due sooner), reads its members and flushes them
(``Store.flush_group``): one atomic step that removes exactly those members and enqueues the
aggregate only if all of them are still there, so of several servers one flushes the group
and the others find it gone. On a shared store the loop also looks again every
``SHARED_REPLAN_SECONDS``, for groups whose pushes went to a server that has stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from conveyor.errors import InvalidJob, StoreError
from conveyor.job import Job, decode_job, encode_job
from conveyor.manager.features.base import Feature, Loop
from conveyor.manager.middleware import Drop, Next, PushContext
from conveyor.store.groups import GroupAdd, GroupMember, GroupSpec, GroupState
from conveyor.timefmt import format_time, now_iso, parse_time

if TYPE_CHECKING:
    from conveyor.manager.admin import JobLocation

__all__ = [
    "AGGREGATE_KEY",
    "GROUP_KEY",
    "AggregateFeature",
    "group_key",
    "group_row",
    "parse_group_key",
    "parse_spec",
]

log = logging.getLogger("conveyor.aggregation")

AGGREGATE_KEY = "aggregate"
GROUP_KEY = "group"
AGGREGATED_KEY = "aggregated"
JID_PREFIX = "agg:"
DEFAULTS = GroupSpec(max_size=100, max_delay=60.0, grace=5.0)
MAX_SIZE = 10_000
MAX_SECONDS = 86_400.0
MAX_GROUP_CHARS = 256
FLUSH_BATCH = 100
IDLE_SECONDS = 60.0
SHARED_REPLAN_SECONDS = 5.0
MIN_SLEEP_SECONDS = 0.01


def group_key(queue: str, jobtype: str, group: str) -> str:
    """The store's key of a group: its queue, jobtype and name, as a JSON array."""
    return msgspec.json.encode([queue, jobtype, group]).decode()


def parse_group_key(key: str) -> tuple[str, str, str]:
    """``group_key`` read back; a key that is not one gives ``("", "", key)``."""
    try:
        queue, jobtype, group = msgspec.json.decode(key, type=tuple[str, str, str])
    except (msgspec.DecodeError, msgspec.ValidationError):
        return "", "", key
    return queue, jobtype, group


def parse_spec(custom: Mapping[str, Any]) -> tuple[GroupSpec, str]:
    """The group spec and name of a job to aggregate; ``InvalidJob`` says what is wrong."""
    group = custom.get(GROUP_KEY)
    if not isinstance(group, str) or not group or len(group) > MAX_GROUP_CHARS:
        raise InvalidJob(
            f"custom.aggregate needs custom.group: a group name of 1 to {MAX_GROUP_CHARS} "
            f"characters, got {group!r}"
        )
    raw = custom[AGGREGATE_KEY]
    if not isinstance(raw, dict):
        raise InvalidJob('custom.aggregate must be an object like {"max_size":100,"max_delay":60}')
    unknown = sorted(set(raw) - {"max_size", "max_delay", "grace"})
    if unknown:
        raise InvalidJob(f"custom.aggregate: unknown key {unknown[0]!r}")
    size = raw.get("max_size", DEFAULTS.max_size)
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_SIZE:
        raise InvalidJob(
            f"custom.aggregate.max_size must be an integer from 1 to {MAX_SIZE}, got {size!r}"
        )
    seconds = [_seconds(raw, name, default) for name, default in
               (("max_delay", DEFAULTS.max_delay), ("grace", DEFAULTS.grace))]  # fmt: skip
    return GroupSpec(size, seconds[0], seconds[1]), group


def _seconds(raw: Mapping[str, Any], name: str, default: float) -> float:
    value = raw.get(name, default)
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not 0 < value <= MAX_SECONDS
    ):
        raise InvalidJob(
            f"custom.aggregate.{name} must be a number of seconds above 0 and at most "
            f"{MAX_SECONDS:g}, got {value!r}"
        )
    return float(value)


class AggregateFeature(Feature):
    """Aggregating groups (see the module docstring)."""

    name = "aggregation"
    gates_on_custom = True  # wants_push: only jobs with custom.aggregate
    push_keys = frozenset((AGGREGATE_KEY,))

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._wake = asyncio.Event()
        self._wake_at = math.inf
        self._adds: list[GroupAdd] = []
        """Members pushed since the writer last ran: it stores them in one store call."""
        self._written: asyncio.Future[None] | None = None
        """Done once ``_adds`` are stored and durable (or failed to be)."""
        self._writer: asyncio.Task[None] | None = None

    def loops(self) -> Sequence[Loop]:
        return (Loop("aggregation", 1.0, self._plan_forever),)

    # ------------------------------------------------------------------ joining a group

    def wants_push(self, job: Job) -> bool:
        return job.custom is not None and AGGREGATE_KEY in job.custom

    async def push(self, ctx: PushContext, call_next: Next) -> None:
        job = ctx.job
        if job.custom is None or AGGREGATE_KEY not in job.custom:  # ungated middleware's chain
            await call_next()
            return
        spec, group = parse_spec(job.custom)
        if job.at and parse_time(job.at) > self.clock():
            raise InvalidJob("a job to aggregate (custom.aggregate) cannot be scheduled: drop 'at'")
        await call_next()  # every other push hook accepts the job first
        key = group_key(job.queue, job.jobtype, group)
        member = GroupMember(job.jid, encode_job(job), self.clock())
        raise Drop(durable=self._add(GroupAdd(key, member, spec)))

    def _add(self, add: GroupAdd) -> asyncio.Future[None]:
        """Queue a member for the writer; the future is done once it is stored and durable.
        The members of one PUSHB, and of PUSHes that arrive together, share one store call
        and one commit (on Redis: one script call instead of a round trip each)."""
        self._adds.append(add)
        loop = asyncio.get_running_loop()
        if self._written is None:
            self._written = loop.create_future()
            # a PUSH that went away never awaits its failure: do not log it as unretrieved
            self._written.add_done_callback(lambda f: f.cancelled() or f.exception())
        if self._writer is None:
            self._writer = loop.create_task(self._write_all())
        return self._written

    async def _write_all(self) -> None:
        """Store the queued members, a batch at a time, in the order they were pushed."""
        try:
            while self._adds:
                adds, self._adds = self._adds, []
                written, self._written = self._written, None  # later ones: the next batch
                assert written is not None
                await self._write(adds, written)
        finally:
            self._writer = None

    async def _write(self, adds: list[GroupAdd], written: asyncio.Future[None]) -> None:
        store = self.manager.store
        try:
            states = await store.add_to_groups(adds)
            await store.durable()  # taken in the step of the write: bound to its transaction
        except Exception as exc:
            written.set_exception(exc)
            return
        except BaseException:
            written.set_exception(StoreError("the server stopped before the job was stored"))
            raise
        written.set_result(None)
        if any(state.due_at < self._wake_at for state in states):
            self._wake.set()

    # ------------------------------------------------------------------ the loop

    async def _plan_forever(self) -> None:
        """Sleep until the next group is due (or a push makes one due sooner), flush, repeat.
        Never returns; the manager restarts it a second later if it raises."""
        shared = not self.manager.store.in_process
        while True:
            self._wake.clear()
            wake_at = await self.step(self.clock())
            now = self.clock()
            longest = SHARED_REPLAN_SECONDS if shared else IDLE_SECONDS
            self._wake_at = min(wake_at, now + longest)
            delay = max(self._wake_at - now, MIN_SLEEP_SECONDS)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()

    async def step(self, now: float) -> float:
        """Flush every group due at ``now``; returns when the next one is due. The loop's one
        step, called with a fixed clock by the tests."""
        store = self.manager.store
        while True:  # a group left full after a flush is due again at once
            due = await store.due_groups(now, FLUSH_BATCH)
            flushed = [await self.flush(state, now) for state in due]
            if not any(flushed):
                break
        upcoming = await store.next_group_due()
        if upcoming is not None and upcoming <= now and due and not any(flushed):
            return now + MIN_SLEEP_SECONDS  # members moved under us: look again soon
        return upcoming if upcoming is not None else now + IDLE_SECONDS

    async def flush(self, state: GroupState, now: float) -> bool:
        """Enqueue the oldest ``max_size`` members of a group as one job; False when another
        server did (or members left meanwhile)."""
        store = self.manager.store
        members = await store.group_members(state.key, 0, state.spec.max_size)
        if not members:
            return False
        job = self._aggregate(state.key, members)
        job.enqueued_at = now_iso()
        flushed = await store.flush_group(
            state.key, [m.jid for m in members], self.manager.queued(job), now
        )
        if flushed:
            log.debug("group %s: enqueued %s with %d jobs", state.key, job.jid, len(members))
        return flushed

    def _aggregate(self, key: str, members: Sequence[GroupMember]) -> Job:
        """The one job of these members: the oldest member's options, their args in order."""
        queue, jobtype, group = parse_group_key(key)
        jobs: list[Job] = []
        for member in members:
            try:
                jobs.append(decode_job(member.payload))
            except msgspec.DecodeError:
                log.error("group %s: member %s is not a job; left out", key, member.jid)
        first = jobs[0] if jobs else Job(jobtype=jobtype, queue=queue)
        custom = {k: v for k, v in (first.custom or {}).items() if k not in _MEMBER_KEYS}
        custom[AGGREGATED_KEY] = {
            "group": group,
            "size": len(jobs),
            "first_at": format_time(members[0].added_at),
            "jids": [job.jid for job in jobs],
        }
        return Job(
            retry=first.retry,
            custom=custom,
            jid=JID_PREFIX + members[0].jid,
            queue=first.queue or queue,
            jobtype=first.jobtype or jobtype,
            created_at=now_iso(),
            args=[[job.args or [] for job in jobs]],
            reserve_for=first.reserve_for,
            backtrace=first.backtrace,
        )

    # ------------------------------------------------------------------ reading

    async def locate(self, jids: Sequence[str]) -> Mapping[str, JobLocation]:
        from conveyor.manager.admin import JobLocation

        found = await self.manager.store.find_group_members(jids)
        located = {}
        for jid, (key, member) in found.items():
            queue, _jobtype, group = parse_group_key(key)
            details = {"group": group, "group_key": key, "added_at": format_time(member.added_at)}
            located[jid] = JobLocation("aggregating", queue, member.payload, group=key,
                                       details=details)  # fmt: skip
        return located

    async def info(self) -> Mapping[str, Any] | None:
        groups, jobs = await self.manager.store.group_counts()
        return {"groups": groups, "aggregating": jobs}

    async def groups_view(self, offset: int, limit: int) -> dict[str, Any]:
        """One page of the groups, soonest due first, and how many there are."""
        page = await self.manager.store.list_groups(offset, limit)
        now = self.clock()
        return {"total": page.total, "groups": [group_row(state, now) for state in page.items]}

    async def group_view(self, key: str, offset: int, limit: int) -> dict[str, Any] | None:
        """A group and one page of its members (oldest first); None when there is none."""
        from conveyor.manager.views import job_row

        store = self.manager.store
        found = await store.get_groups([key])
        if not found:
            return None
        members = await store.group_members(key, offset, limit)
        rows = [{**job_row(m.payload), "added_at": format_time(m.added_at)} for m in members]
        return {"group": group_row(found[0], self.clock()), "offset": offset, "members": rows}


_MEMBER_KEYS = frozenset({AGGREGATE_KEY, GROUP_KEY})
"""What a member's ``custom`` says that its aggregate must not: it is not to be grouped."""


def group_row(state: GroupState, now: float) -> dict[str, Any]:
    """A group as the dashboard, the JSON API and ``ADMIN group.*`` show it."""
    queue, jobtype, group = parse_group_key(state.key)
    return {
        "key": state.key,
        "queue": queue,
        "jobtype": jobtype,
        "group": group,
        "size": state.size,
        "max_size": state.spec.max_size,
        "max_delay": state.spec.max_delay,
        "grace": state.spec.grace,
        "first_at": format_time(state.first_at),
        "last_at": format_time(state.last_at),
        "due_at": format_time(max(state.due_at, state.first_at)),
        "due_in": max(0.0, state.due_at - now),
        "oldest_seconds": max(0.0, now - state.first_at),
    }
