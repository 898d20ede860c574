"""The ``Feature`` base class (see the package docstring)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Self

from conveyor.errors import CommandError
from conveyor.job import Job
from conveyor.manager.middleware import Drop, Middleware
from conveyor.store.batches import EndContext, MarkResult
from conveyor.store.endings import Acked
from conveyor.store.limits import QueueLimit

if TYPE_CHECKING:
    from conveyor.manager.admin import JobLocation
    from conveyor.manager.config import ManagerConfig
    from conveyor.manager.core import Manager
    from conveyor.store.base import QueuedJob

__all__ = ["Feature", "Loop"]


@dataclass(frozen=True, slots=True)
class Loop:
    """A background step a feature runs every ``interval_seconds`` on every server. It must
    be safe to run on several servers over one store at once (conditional store moves)."""

    name: str
    interval_seconds: float
    step: Callable[[], Awaitable[None]]


class Feature(Middleware):
    """One feature: middleware plus configuration, loops and a fast-path gate.

    Every registered feature is built at start, whatever the configuration says; one that is
    off by configuration does nothing in its hooks (and says so in ``wants_push``)."""

    name: ClassVar[str]
    """Short name, used in logs and the documentation."""

    tables: ClassVar[tuple[str, ...]] = ()
    """The top-level TOML tables this feature reads (e.g. ``("throttles",)``)."""

    manager: Manager

    @classmethod
    def from_config(cls, tables: Mapping[str, Any]) -> Self:
        """Build the feature from its tables (those absent from the files are absent from
        ``tables``). Raise ``conveyor.errors.ConfigError`` naming the table, entry and key of
        a bad value: the server then refuses to start, or a reload keeps the old settings."""
        return cls()

    def check_limits(self, config: ManagerConfig) -> None:
        """Check the settings against the server's job limits (what a PUSH accepts), known
        once the whole configuration is read: ``build_features`` calls it after
        ``from_config``. Raise ``ConfigError`` as ``from_config`` does."""

    def bind(self, manager: Manager) -> None:
        """Called once by the manager that runs this feature, before it starts."""
        self.manager = manager

    def reconfigure(self, new: Self) -> None:
        """Take the settings of ``new`` (built by ``from_config`` from reloaded files, and
        valid): SIGHUP applies a changed configuration without a restart."""

    def loops(self) -> Sequence[Loop]:
        return ()

    def close(self) -> None:
        """Called once when the manager stops, after its loops: let go of what waits (a
        ``RESULT`` waiting for a result answers now)."""

    def wants_push(self, job: Job) -> bool:
        """Whether this feature's push hook must see ``job``. With a push hook, return False
        for the jobs it leaves alone: those keep the PUSH fast path."""
        return True

    @property
    def push_keys(self) -> frozenset[str] | None:
        """The keys of ``custom`` one of which every job ``wants_push`` wants holds, under
        the current settings (read again after a reload); None when it cannot say. When the
        gates say, the manager asks only the gates of the keys a job's ``custom`` holds (a
        job whose ``custom`` serves another feature costs a set test, not a call a gate)."""
        return None

    def wants_ack(self, jid: str) -> bool:
        """Whether this feature's ack hook must see the ACK of ``jid``. An ack hook makes the
        manager read each acked job's reservation and ACK jobs one by one; the jids every
        ack hook declines keep the batched ACK that does neither (e.g. cron's jids start
        with ``cron:``)."""
        return True

    async def push_many(self, jobs: Sequence[Job]) -> dict[str, CommandError | Drop]:
        """The push hook of a feature that takes pushed jobs together (a PUSHB's in one store
        step rather than one step a job): ``jobs`` are those it wants (``wants_push``),
        validated, accepted by the push hooks of the features before it, not stored yet.
        Returns, by jid, those it refuses (the error) or keeps out of the queue itself
        (``Drop``); the others go on through the rest of the chain. A feature with this hook
        leaves ``push`` alone. Like ``push``, it must be idempotent (a PUSH sent again)."""
        return {}

    def push_many_soon(
        self,
        job: Job,
        done: Callable[[MarkResult | None, BaseException | None], object],
        queued: Sequence[QueuedJob] = (),
    ) -> bool:
        """``push_many`` of one job with a callback, for a store whose writes wait for I/O
        (soon.py): ``done`` gets how its step went (``MarkResult.READY``: queue it now; any
        other: the PUSH takes the long way, which runs ``push_many`` again: it must be
        idempotent per jid). With ``queued`` (the job's queue entry), ``READY`` means it was
        queued in that same step, and False is also the answer when the store cannot do
        that now (the caller asks again without it). False, with nothing done, when it
        cannot (the long way)."""
        return False

    def push_many_now(self, job: Job) -> dict[str, CommandError | Drop] | None:
        """``push_many([job])`` done in the caller's step, without awaiting anything, for
        the PUSH fast path of in-process stores (docs/design/hand-off.md); None, with nothing
        done, when it cannot be (the PUSH then takes the long way)."""
        return None

    def push_now(self, job: Job) -> bool:
        """The push hook (``push``) of a feature that is the only one to see ``job``, done in
        the caller's step without a coroutine, for the PUSH fast path of in-process stores:
        True when it let the job through (as ``push`` calling ``call_next``), raising what
        refuses it (``NotUnique``, ``InvalidJob``, ``Drop``) as ``push`` would; False, with
        nothing done, when it cannot (the manager then runs ``push``). Only called on a store
        that is ``in_process``; must do exactly what ``push`` does for that job."""
        return False

    gates_on_custom: ClassVar[bool] = False
    """True when its gates (``wants_push``, ``wants_fetch``, ``wants_acked``) only ever want
    jobs that have a ``custom`` object (Faktory Enterprise's features all read keys of it):
    the manager then asks them nothing about a job without one (one test for all of them)."""

    @property
    def pushes_on_custom(self) -> bool:
        """Whether ``wants_push`` only wants jobs with a ``custom`` object under the current
        settings: ``gates_on_custom``, unless a setting makes it want every job (results'
        server defaults, stamped into each job). Read again after a reload."""
        return self.gates_on_custom

    fetch_marks: ClassVar[tuple[bytes, ...] | None] = None
    """With a fetch hook: byte strings one of which the payload of every job ``wants_fetch``
    wants holds (``b'"expires_at":'``), None when it cannot say. When every gate says, the
    manager looks for all their marks at once (one search a job) and asks the gates only of
    the jobs that hold one."""

    def wants_fetch(self, payload: bytes) -> bool:
        """Whether this feature's fetch hook must see the job of ``payload`` (a stored job, in
        canonical JSON). With a fetch hook, return False for the jobs it leaves alone: they are
        not decoded for it, and a PUSH may hand them straight to a waiting FETCH
        (docs/design/hand-off.md); a job some gate wants is queued and fetched instead."""
        return True

    def queue_limits(self) -> Mapping[str, QueueLimit]:
        """The limits this feature puts on queues, by queue name (``"*"``: every queue not
        named; only ``backpressure`` may have such a default). The manager merges every
        feature's, field by field, and has the store apply them atomically
        (``conveyor.store.limits``); a queue without any keeps the plain PUSH and FETCH."""
        return {}

    acked_marks: ClassVar[tuple[bytes, ...] | None] = None
    """With ``acked``: byte strings one of which the payload of every job it must hear of
    holds (``b'"unique_for":'``), None for any job. A shared store (Redis) then sends back
    only those payloads with what an ACK ended, not every job's."""

    def wants_acked(self, payload: bytes) -> bool:
        """With ``acked``: whether it must hear of the job of ``payload`` when it is ACKed
        (by default: it holds one of ``acked_marks``). On a store one server owns (memory,
        SQLite) an ACK of a job no feature wants keeps the plain path; a shared store (Redis)
        always returns what an ACK ended."""
        marks = self.acked_marks
        return marks is None or any(mark in payload for mark in marks)

    def ack_ends(self) -> EndContext | None:
        """With ``acked``: for a feature whose store records must move in the ACK's own step
        (the marks of batch and tracked jobs, ``conveyor.store.batches``), how that step ends
        them (``Store.ack_returning(ends=...)``); what it set off comes back in
        ``Acked.fired``. None (the default): the ACK ends reservations only. At most one
        running feature may return one."""
        return None

    async def acked(self, acked: Acked) -> None:
        """Called after an ACK with what it ended: ``acked.ended`` the reservations (jobs that
        succeeded), ``acked.fired`` what ending their marks set off. Costs no store read: the
        ACK itself returns them (``conveyor.store.endings``)."""

    def acked_idle(self, acked: Acked) -> bool:
        """Whether ``acked(acked)`` would do nothing, so an ACK answered without a task may
        skip it (soon.py). By default: no job ended that ``wants_acked``. A feature whose
        ``acked`` acts on ``acked.fired`` says when that is empty for it."""
        return not any(self.wants_acked(r.payload) for r in acked.ended)

    async def removed(self, payloads: Sequence[bytes]) -> None:
        """Called with jobs gone for good without succeeding: deleted or killed (MUTATE, the
        dashboard), purged from the dead set, expired, cancelled, or refused by a full queue
        after the push hooks took them in."""

    async def watches_removals(self) -> bool:
        """Whether ``removed`` must hear of jobs an admin clears in bulk (a whole set or
        queue): then they are read before they are cleared. Asked before each such clear."""
        return False

    async def locate(self, jids: Sequence[str]) -> Mapping[str, JobLocation]:
        """Where jobs are that only this feature holds (a job waiting in an aggregating
        group): asked for the jids not reserved and not in a sorted set, before the queues
        are searched."""
        return {}

    async def history(self, jids: Sequence[str]) -> Mapping[str, JobLocation]:
        """What became of jobs that are nowhere any more (a cancelled job): asked last, for
        the jids found nowhere else. ``JobLocation.where`` names their end state."""
        return {}

    async def job_extras(self, jid: str, job: Mapping[str, Any] | None) -> Mapping[str, Any]:
        """What ``job_info`` (``ADMIN job.show``, the job's page) shows of job ``jid`` beside
        where it is and how it ended (its batch, its tracking). ``job``: its payload where it
        is now, decoded; None for a job known only by its outcome record."""
        return {}

    async def unreserved_fail(self, jid: str) -> bool:
        """A FAIL of ``jid``, which holds no reservation: True if this feature answers for
        it, and the FAIL is then ``+OK`` and changes nothing (a job cancelled while it ran,
        whose worker reports it late). False: ``Job not found``, as in Faktory."""
        return False

    async def info(self) -> Mapping[str, Any] | None:
        """This feature's section of INFO (``features.<name>``), or None for none."""
        return None
