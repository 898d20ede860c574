"""How the manager calls the features' own hooks, beyond the four middleware chains: the
pushes some features take together (``Feature.push_many``, ``push_many_now``) and the ACKs
some end themselves (``Feature.take_acks``). Mixed into ``Manager``; docs/design/batches.md.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from conveyor.errors import CommandError
from conveyor.job import Job
from conveyor.manager.middleware import Drop
from conveyor.timefmt import day_key

if TYPE_CHECKING:
    from conveyor.manager.features import Feature
    from conveyor.store.base import Store

__all__ = ["NOT_NOW", "FeatureCalls"]

NOT_NOW = object()
"""``_push_many_now``: the PUSH cannot be done at once; nothing was done."""


class FeatureCalls:
    """Mixed into ``Manager``; relies on its store and the feature lists it builds."""

    store: Store
    _push_gated: bool
    _chain_gates: list[Callable[[Job], bool]]
    _bulk_pushers: list[Feature]
    _ack_takers: list[Feature]

    def _pushes(self, job: Job) -> bool:
        """Whether the push chain must run for ``job``: some hook's gate wants it."""
        return not self._push_gated or any(wants(job) for wants in self._chain_gates)

    def _push_many_now(self, job: Job) -> CommandError | Drop | object | None:
        """``_push_many`` of one job done at once (``Feature.push_many_now``): what refused
        it or kept it out of the queue, None to store it, ``NOT_NOW`` (nothing done) when a
        feature cannot."""
        wanting = [f for f in self._bulk_pushers if f.wants_push(job)]
        if len(wanting) != 1:
            return NOT_NOW  # several: they take their steps one after the other, not now
        done = wanting[0].push_many_now(job)
        if done is None:
            return NOT_NOW
        return done.get(job.jid)

    async def _push_many(self, jobs: Sequence[Job]) -> dict[str, CommandError | Drop]:
        """The features that take pushed jobs together; the jobs they refused or kept out of
        the queue (``Drop``), by jid."""
        refused: dict[str, CommandError | Drop] = {}
        for feature in self._bulk_pushers:
            wanted = [job for job in jobs if job.jid not in refused and feature.wants_push(job)]
            if wanted:
                refused.update(await feature.push_many(wanted))
        return refused

    def _held(self, jids: Sequence[str]) -> bool:
        """Whether a feature may end some of these ACKs itself (a set lookup per jid at most)."""
        for taker in self._ack_takers:  # noqa: SIM110 - no generator on every ACK
            if taker.holds_acks(jids):
                return True
        return False

    async def _store_ack(self, jids: Sequence[str]) -> int:
        """``Store.ack``, after the features that end some ACKs themselves took theirs."""
        day = day_key(time.time())
        done = 0
        for taker in self._ack_takers:
            if jids and taker.holds_acks(jids):
                taken, left = await taker.take_acks(jids, day)
                done += taken
                jids = left
        return done + await self.store.ack(jids, day) if jids else done
