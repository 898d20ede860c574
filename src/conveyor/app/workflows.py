"""Workflows: chains, groups and DAGs, stored on the server (docs/batches.md).

* ``send.s(1)`` is a **signature**: a job and its args, not pushed yet.
* ``chain(a.s(1), b.s(), c.s())``: one after the other. Each step after the first is pushed
  at once with ``custom.after`` naming the previous step's jobs: the server keeps it among
  the *waiting* jobs until they have succeeded, and sends it to the dead set if one dies. A
  step may be a ``group``: its jobs run in parallel, and the next step waits for all of them.
* ``group([...]).then(cb)``: in parallel, then ``cb``: a Faktory Enterprise batch whose success
  callback is ``cb`` (visible on the dashboard's Batches page, with its progress).
* A DAG: ``job.options(track=True)`` for the jobs others wait for, ``.options(after=[jid,
  ...])`` for those that wait.

Everything is in the server's store when ``push()`` returns: a workflow outlives workers and
servers that restart.

**Results.** A job pushed with ``custom.results_of`` (chain steps, a group's callback) takes
the results of those jobs as its args *when results are stored*: a single job's result as
its one argument, a group's as a list. Until conveyor stores results, ``App.results_source``
is None and each job runs with its own args: that attribute is the seam a results store
plugs into (``take_results``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Union

from conveyor.app.batches import BatchBlock
from conveyor.job import Job

if TYPE_CHECKING:
    from conveyor.app.core import App, PushResult
    from conveyor.app.jobs import JobDef

__all__ = [
    "RESULTS_KEY",
    "Chain",
    "JobGroup",
    "ResultsSource",
    "Signature",
    "chain",
    "group",
    "take_results",
]

RESULTS_KEY = "results_of"
"""``custom`` key: the jids whose results become this job's args, when results are stored."""

ResultsSource = Callable[[Sequence[str]], Awaitable[Sequence[Any] | None]]
"""``await source(jids)``: the results of those jobs in order, or None when not stored."""


@dataclass(frozen=True, slots=True)
class Signature:
    """A job with its args, ready to push: ``send_email.s(msg)``."""

    jobdef: JobDef[Any, Any]
    args: tuple[Any, ...]

    def build(self, **custom: Any) -> Job:
        job = self.jobdef.build(*self.args)
        if custom:
            job.custom = {**(job.custom or {}), **custom}
        return job

    @property
    def app(self) -> App:
        return self.jobdef.app

    async def push(self) -> str:
        return await self.jobdef.push(*self.args)


Step = Union[Signature, "JobGroup"]


@dataclass(slots=True)
class JobGroup:
    """Signatures run in parallel: ``group([a.s(1), a.s(2)])``."""

    signatures: list[Signature]
    callback: Signature | None = None
    description: str = ""
    bid: str = ""
    """After ``push()`` with a ``then``: the batch's id."""
    jids: list[str] = field(default_factory=list)

    def then(self, callback: Signature, *, description: str = "") -> JobGroup:
        """Call ``callback`` once every job of the group has succeeded."""
        return JobGroup(list(self.signatures), callback, description)

    @property
    def app(self) -> App:
        if not self.signatures:
            raise ValueError("an empty group has no app to push with")
        return self.signatures[0].app

    async def push(self) -> list[str]:
        """Push the group (a batch when it has a ``then``); returns the jids."""
        jobs = [signature.build() for signature in self.signatures]
        self.jids = [job.jid for job in jobs]
        if self.callback is None:
            _raise_refused(await self.app.push_bulk(jobs))
            return self.jids
        results_of = {RESULTS_KEY: self.jids}
        callback = self.callback.build(**results_of)
        description = self.description or f"group of {len(jobs)} then {callback.jobtype}"
        block = BatchBlock(self.app, description=description, on_success=callback)
        async with block:
            self.bid = block.bid
            _raise_refused(await self.app.push_bulk(jobs))
        return self.jids


@dataclass(slots=True)
class Chain:
    """Steps run one after the other: ``chain(a.s(1), group([...]), c.s())``."""

    steps: list[Step]
    jids: list[list[str]] = field(default_factory=list)
    """After ``push()``: the jids of each step."""

    async def push(self) -> list[list[str]]:
        """Push every step now, each waiting for the one before; returns the jids per step."""
        if not self.steps:
            raise ValueError("an empty chain")
        app = self.steps[0].app
        jobs: list[Job] = []
        previous: list[str] = []
        self.jids = []
        for step in self.steps:
            signatures = [step] if isinstance(step, Signature) else step.signatures
            if isinstance(step, JobGroup) and step.callback is not None:
                raise ValueError("a group with then() cannot be a step of a chain")
            custom: dict[str, Any] = {"track": 1}
            if previous:
                custom.update(after=previous, **{RESULTS_KEY: previous})
            built = [signature.build(**custom) for signature in signatures]
            jobs += built
            previous = [job.jid for job in built]
            self.jids.append(previous)
        _raise_refused(await app.push_bulk(jobs))
        return self.jids

    @property
    def last(self) -> list[str]:
        return self.jids[-1] if self.jids else []


def chain(*steps: Step) -> Chain:
    return Chain(list(steps))


def group(signatures: Iterable[Signature]) -> JobGroup:
    return JobGroup(list(signatures))


def _raise_refused(results: Sequence[PushResult]) -> None:
    refused = [r for r in results if not r.ok]
    if refused:
        from conveyor.errors import CommandError

        raise CommandError(f"job {refused[0].jid} was refused: {refused[0].error}")


async def take_results(app: App, job: Job) -> None:
    """Give ``job`` the results of the jobs its ``custom.results_of`` names as args, when a
    results store (``app.results_source``) has them; otherwise leave its own args."""
    source = app.results_source
    custom = job.custom or {}
    jids = custom.get(RESULTS_KEY)
    if source is None or not isinstance(jids, list) or not jids:
        return
    results = await source([str(jid) for jid in jids])
    if results is None:
        return
    job.args = [results[0]] if len(jids) == 1 else [list(results)]
