"""Completed jobs: the reservations read by the batch (the ACK that keeps a job is
``Endings.ack_returning`` with ``keep``).

A job pushed with a retention (``custom.retain``, or the server's default) is kept after it
succeeds, in the ``completed`` sorted set (score: when it expires), with its result
(docs/results.md). Keeping it must happen *with* the ACK: a job acknowledged and then lost
before it reached the set, or kept and then failed by the reaper because its reservation was
still there, would each show a finished job wrongly. So it is not a transition of its own but
a part of the ACK's (``ack_returning(..., keep=entries)``): the one step that also frees
throttle slots and ends the marks of batch and tracked jobs (docs/design/batches.md).

``reservations_of`` reads the reservations of many jids in one call (one round trip on Redis):
the ACKs that carry results are read to learn what each job asked for.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # base.py includes this capability in Store
    from conveyor.store.base import Reservation

__all__ = ["Completions"]


class Completions(abc.ABC):
    """The completed-jobs capability; every backend implements it (``Store`` includes it)."""

    @abc.abstractmethod
    async def reservations_of(self, jids: Sequence[str]) -> list[Reservation]:
        """The reservations of those jids that have one, in ``jids`` order (each jid once)."""
