"""A connection's FETCH and ACK pattern: when its ACK may reserve for the FETCH that should
follow (``manager/ahead.py`` says why and how)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from conveyor.manager.ahead import Ahead, same_queues
from conveyor.protocol import bulk

if TYPE_CHECKING:
    from conveyor.manager import Manager
    from conveyor.manager.later import Later

__all__ = ["Rhythm"]

_MAX_MISSES = 6


class Rhythm:
    """One connection's FETCH and ACK pattern: whether its ACK may reserve for the FETCH
    that should follow (module docstring)."""

    __slots__ = ("_acked", "_candidate", "_misses", "_skips", "_used", "ahead", "queues", "steady")

    def __init__(self) -> None:
        self.queues: Sequence[str] | None = None  # the last FETCH's
        self.steady = False  # the last FETCH followed an ACK, named the same queues, found a job
        self.ahead: Ahead | None = None
        self._acked = False  # an ACK came since the last FETCH
        self._candidate = False  # this FETCH followed an ACK and named the same queues
        self._used = False  # this FETCH was given the jobs reserved ahead
        self._misses = 0  # reserves ahead in a row that no FETCH took a job from
        self._skips = 0  # steady ACKs still to pass by without a reserve (after misses)

    def acked(self, manager: Manager, wid: str) -> None:
        """An ACK was sent to a store that is not in process: reserve for the next FETCH."""
        self._acked = True
        queues = self.queues
        if not self.steady or queues is None or self.ahead is not None:
            return
        if self._skips:  # the last ones were wasted: fewer, until one finds a job again
            self._skips -= 1
            return
        hold = manager.config.fetch_ahead_seconds
        if hold <= 0 or not manager.fetches_ahead(queues, wid):
            return
        ahead = Ahead(manager, queues)
        if ahead.send(wid, hold):
            self.ahead = ahead

    def fetch(self, queues: Sequence[str], wid: str) -> list[bytes] | Later[list[bytes]] | None:
        """A FETCH answered at once came: the jobs reserved ahead for it, or None (the usual
        FETCH). ``one_job`` then says what it got."""
        self._candidate = self._acked and same_queues(queues, self.queues)
        self._acked = False
        self.queues = queues
        ahead, self.ahead = self.ahead, None
        if ahead is None:
            self._used = False
            return None
        taken = ahead.take(queues, wid)
        self._used = taken is not None
        if taken is None:  # given back: not for this FETCH, or held too long
            self._missed()
        return taken

    def one_job(self, jobs: list[bytes] | None) -> bytes | None:
        """The reply to that FETCH (None: it found nothing and waits, the long way). A job
        found at once, after an ACK, keeps the rhythm."""
        if self._used:
            self._used = False
            if jobs:
                self._misses = 0
            else:
                self._missed()
        if jobs:
            self.steady = self._candidate
            return bulk(jobs[0])
        self.steady = False
        return None

    def _missed(self) -> None:
        """A reserve ahead was wasted (it found nothing, or no FETCH took its job): pass the
        next 1, 3, 7 ... 63 chances by, so a connection that pushes before it fetches (each
        ACK finding its queue empty) or asks elsewhere sends a reserve ahead rarely."""
        self._misses = min(self._misses + 1, _MAX_MISSES)
        self._skips = (1 << self._misses) - 1

    def broken(self) -> None:
        """Anything else that FETCHes (one that waits in the runner, FETCHB): no rhythm, and
        what was reserved ahead goes back."""
        self.steady = self._acked = False
        self.queues = None
        self.close()

    def close(self) -> None:
        """The connection closed: give back what was reserved for it."""
        ahead, self.ahead = self.ahead, None
        if ahead is not None:
            ahead.give_back()
