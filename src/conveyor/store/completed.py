"""Completed jobs: the ACK that keeps its job, and reservations read by the batch.

A job pushed with a retention (``custom.retain``, or the server's default) is kept after it
succeeds, in the ``completed`` sorted set (score: when it expires), with its result
(docs/results.md). Keeping it must happen *with* the ACK: a job acknowledged and then lost
before it reached the set, or kept and then failed by the reaper because its reservation was
still there, would each show a finished job wrongly. So ``complete`` is one atomic transition,
the ACK of ``ack`` plus the set entry of ``add_to_set`` (a feature-specific transition, as
docs/design/layout.md allows).

``reservations_of`` reads the reservations of many jids in one call (one round trip on Redis):
the ACKs that carry results are read to learn what each job asked for.
"""

from __future__ import annotations

import abc
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # base.py includes this capability in Store
    from conveyor.store.base import Reservation, SetEntry

__all__ = ["Completions"]


class Completions(abc.ABC):
    """The completed-jobs capability; every backend implements it (``Store`` includes it)."""

    @abc.abstractmethod
    async def complete(
        self,
        entries: Sequence[SetEntry],
        day: str,
        throttled: Collection[str] = (),
        marks: Sequence[bytes] | None = None,
    ) -> list[Reservation]:
        """For each entry whose jid holds a reservation, in one atomic step: end the
        reservation, count it as processed (total and ``day``), as ``ack`` does, and put the
        entry into the ``completed`` set (replacing an entry of the same jid). Entries of jids
        without a reservation change nothing. Returns the reservations it ended, as
        ``Endings.ack_returning`` does (``throttled``: their slots are freed and their queues
        announced in the same step; ``marks``: payloads holding none may come back empty), so
        the features hear of the jobs that succeeded (a unique job's lock is released). Not
        awaited for durability, like ``ack``."""

    @abc.abstractmethod
    async def reservations_of(self, jids: Sequence[str]) -> list[Reservation]:
        """The reservations of those jids that have one, in ``jids`` order (each jid once)."""
