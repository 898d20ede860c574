"""The ``Feature`` base class (see the package docstring)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Self

from conveyor.job import Job
from conveyor.manager.middleware import Middleware

if TYPE_CHECKING:
    from conveyor.manager.admin import JobLocation
    from conveyor.manager.core import Manager

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

    def wants_ack(self, jid: str) -> bool:
        """Whether this feature's ack hook must see the ACK of ``jid``. An ack hook makes the
        manager read each acked job's reservation and ACK jobs one by one; the jids every
        ack hook declines keep the batched ACK that does neither (e.g. cron's jids start
        with ``cron:``)."""
        return True

    async def locate(self, jids: Sequence[str]) -> Mapping[str, JobLocation]:
        """Where jobs are that only this feature holds (a job waiting in an aggregating
        group): asked for the jids not reserved and not in a sorted set, before the queues
        are searched."""
        return {}

    async def history(self, jids: Sequence[str]) -> Mapping[str, JobLocation]:
        """What became of jobs that are nowhere any more (a cancelled job): asked last, for
        the jids found nowhere else. ``JobLocation.where`` names their end state."""
        return {}

    async def unreserved_fail(self, jid: str) -> bool:
        """A FAIL of ``jid``, which holds no reservation: True if this feature answers for
        it, and the FAIL is then ``+OK`` and changes nothing (a job cancelled while it ran,
        whose worker reports it late). False: ``Job not found``, as in Faktory."""
        return False

    async def info(self) -> Mapping[str, Any] | None:
        """This feature's section of INFO (``features.<name>``), or None for none."""
        return None
