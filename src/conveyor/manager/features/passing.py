"""Workflow steps given the results of the steps before them (docs/batches.md#workflows;
the decision: docs/design/batches.md, *Chains pass results*).

A job pushed with ``custom.results_of = [jid, ...]`` (a chain's step, a group's callback) is
handed out with those jobs' results first in its args: one jid, its result; several, the
list of theirs, in that order. The server does it at every FETCH of the job, from the result
records (``custom.result_ttl``, which the chain sets on the steps before), so a worker in any
language gets the args, a retry gets them again, and nothing is lost by a restart between
the steps. When one of them has no succeeded record (it asked for none, its worker sent no
result, the record expired), the job is sent as it was pushed: its own args.

The stored job is never changed: its reservation, retries and dead entry hold the args it
was pushed with.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import msgspec

from conveyor.manager.features.results_model import SUCCEEDED
from conveyor.manager.middleware import FetchContext, Next

if TYPE_CHECKING:
    from conveyor.manager.core import Manager

__all__ = ["RESULTS_KEY", "PassResults"]

RESULTS_KEY = "results_of"
_MARK = f'"{RESULTS_KEY}":'.encode()


class PassResults:
    """The fetch hook (a mixin of ``BatchFeature``, which owns the jobs waiting for others)."""

    manager: Manager
    fetch_marks: ClassVar[tuple[bytes, ...] | None] = (_MARK,)

    def wants_fetch(self, payload: bytes) -> bool:
        return _MARK in payload

    async def fetch(self, ctx: FetchContext, call_next: Next) -> None:
        await call_next()
        jids = (ctx.job.custom or {}).get(RESULTS_KEY)
        if not isinstance(jids, list) or not jids or not all(isinstance(j, str) for j in jids):
            return
        results = await self.results_of(jids)
        if results is not None:
            ctx.send = _with_first_arg(ctx.reservation.payload, results)

    async def results_of(self, jids: Sequence[str]) -> msgspec.Raw | None:
        """The value a job after ``jids`` takes first: one job's result, or the list of
        theirs (as JSON); None when one of them has none stored."""
        feature = self.manager.results
        if feature is None:
            return None
        found = await feature.recorded(jids)
        values: list[msgspec.Raw] = []
        for jid in jids:
            outcome = found.get(jid)
            if outcome is None or outcome.state != SUCCEEDED:
                return None
            if not isinstance(outcome.result, msgspec.Raw):
                return None
            values.append(outcome.result)
        return values[0] if len(jids) == 1 else msgspec.Raw(msgspec.json.encode(values))


def _with_first_arg(payload: bytes, value: msgspec.Raw) -> bytes:
    """The job ``payload`` with ``value`` put before its args; every other member as it was."""
    job: dict[str, Any] = msgspec.json.decode(payload)
    args = job.get("args")
    job["args"] = [value, *(args if isinstance(args, list) else ())]
    return msgspec.json.encode(job)
