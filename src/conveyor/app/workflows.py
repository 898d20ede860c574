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

**Results.** Each step of a chain gets the previous step's result as its first argument,
before its own (Celery's partial call: ``b.s(2)`` after ``a`` runs ``b(a_result, 2)``); a
group's callback and the step after a group get the group's results as one list. The chain
asks the steps before the last to store their results (``custom.result_ttl``,
``CHAIN_RESULT_TTL`` unless the step or ``chain(..., result_ttl=)`` says otherwise) and names
them in the next step's ``custom.results_of``; the **server** puts them into that job's args
when it hands it out (every FETCH, so a retry gets them again), from the result records: a
worker in any language sees the args. When one of them stored nothing (results off for that
step, a worker that sends no result, an expired record), the step runs with its own args.
``signature.immutable`` (``job.si(...)``) keeps a step's own args whatever came before.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Union

from conveyor.app.batches import BatchBlock
from conveyor.job import Job

if TYPE_CHECKING:
    from conveyor.app.core import App
    from conveyor.app.jobs import JobDef
    from conveyor.app.producer import PushResult

__all__ = [
    "CHAIN_RESULT_TTL",
    "RESULTS_KEY",
    "Chain",
    "JobGroup",
    "Signature",
    "chain",
    "group",
]

RESULTS_KEY = "results_of"
"""``custom`` key: the jids whose results the server puts first in this job's args (one job:
its result; several: the list of theirs), when every one of them is stored."""

CHAIN_RESULT_TTL = 30 * 86_400
"""Seconds a workflow step keeps its result for the next one when neither the step nor the
workflow says (``result_ttl``): the retention of a committed batch, longer than a job's 25
retries (about 21 days), so a step retried late still finds it."""


@dataclass(frozen=True, slots=True)
class Signature:
    """A job with its args, ready to push: ``send_email.s(msg)``."""

    jobdef: JobDef[Any, Any]
    args: tuple[Any, ...]
    immutable: bool = False
    """``job.si(...)``: in a workflow it runs with these args only, never the results before."""

    def build(self, **custom: Any) -> Job:
        job = self.jobdef.build(*self.args)
        if self.immutable:
            custom.pop(RESULTS_KEY, None)
        if custom:
            job.custom = {**(job.custom or {}), **custom}
        return job

    def passing(self, result_ttl: float, **custom: Any) -> Job:
        """``build`` for a step whose result a later one takes: it keeps its result for
        ``result_ttl`` seconds unless it says how long itself (0: not at all)."""
        job = self.build(**custom)
        if "result_ttl" not in (job.custom or {}):
            ttl = int(result_ttl) if result_ttl == int(result_ttl) else result_ttl
            job.custom = {**(job.custom or {}), "result_ttl": ttl}
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
    result_ttl: float = CHAIN_RESULT_TTL
    """How long its jobs keep their results for the callback (a job's own ``result_ttl``
    wins)."""
    bid: str = ""
    """After ``push()`` with a ``then``: the batch's id."""
    jids: list[str] = field(default_factory=list)

    def then(
        self, callback: Signature, *, description: str = "", result_ttl: float = CHAIN_RESULT_TTL
    ) -> JobGroup:
        """Call ``callback`` once every job of the group has succeeded, with the list of
        their results first in its args (``result_ttl``: how long they are kept for it)."""
        return JobGroup(list(self.signatures), callback, description, result_ttl)

    @property
    def app(self) -> App:
        if not self.signatures:
            raise ValueError("an empty group has no app to push with")
        return self.signatures[0].app

    async def push(self) -> list[str]:
        """Push the group (a batch when it has a ``then``); returns the jids."""
        if self.callback is None:
            jobs = [signature.build() for signature in self.signatures]
        else:
            passes = not self.callback.immutable
            ttl = self.result_ttl
            jobs = [s.passing(ttl) if passes else s.build() for s in self.signatures]
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
    result_ttl: float = CHAIN_RESULT_TTL
    """How long a step keeps its result for the next one (a step's own ``result_ttl`` wins)."""

    async def push(self) -> list[list[str]]:
        """Push every step now, each waiting for the one before; returns the jids per step."""
        if not self.steps:
            raise ValueError("an empty chain")
        app = self.steps[0].app
        jobs: list[Job] = []
        previous: list[str] = []
        self.jids = []
        for index, step in enumerate(self.steps):
            signatures = [step] if isinstance(step, Signature) else step.signatures
            if isinstance(step, JobGroup) and step.callback is not None:
                raise ValueError("a group with then() cannot be a step of a chain")
            custom: dict[str, Any] = {"track": 1}
            if previous:
                custom.update(after=previous, **{RESULTS_KEY: previous})
            following = self.steps[index + 1] if index + 1 < len(self.steps) else None
            if following is not None and _takes_results(following):
                built = [s.passing(self.result_ttl, **custom) for s in signatures]
            else:
                built = [s.build(**custom) for s in signatures]
            jobs += built
            previous = [job.jid for job in built]
            self.jids.append(previous)
        _raise_refused(await app.push_bulk(jobs))
        return self.jids

    @property
    def last(self) -> list[str]:
        return self.jids[-1] if self.jids else []


def chain(*steps: Step, result_ttl: float = CHAIN_RESULT_TTL) -> Chain:
    """Steps one after the other, each given the results of the one before (module doc);
    ``result_ttl``: how long a step keeps its result for the next one."""
    if isinstance(result_ttl, bool) or not result_ttl >= 0:
        raise ValueError(f"result_ttl must be a number of seconds >= 0, got {result_ttl!r}")
    return Chain(list(steps), result_ttl=result_ttl)


def _takes_results(step: Step) -> bool:
    """Whether a step wants the results of the one before (not every job of it is ``si``)."""
    if isinstance(step, Signature):
        return not step.immutable
    return any(not signature.immutable for signature in step.signatures)


def group(signatures: Iterable[Signature]) -> JobGroup:
    return JobGroup(list(signatures))


def _raise_refused(results: Sequence[PushResult]) -> None:
    refused = [r for r in results if not r.ok]
    if refused:
        from conveyor.errors import CommandError

        raise CommandError(f"job {refused[0].jid} was refused: {refused[0].error}")
