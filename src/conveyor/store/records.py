"""Records: small values under a key, with an optional expiry, in named spaces.

The generic storage primitive that features build on instead of one bespoke store method
each (docs/design/layout.md): a unique job's lock, the claim of a cron tick, a job's tracking
data or result, a cancel request. A feature picks a *space* (``"unique"``, ``"cron-tick"``,
...) and keys within it; spaces never see each other's keys.

* A record whose ``expires_at`` has passed is gone for every reader, whether or not the
  janitor (``purge_records``) has deleted it yet. ``expires_at`` None keeps it until deleted.
* ``claim_record`` is the atomic set-if-absent: the one step that lets several servers agree
  on a single owner (a lock, a tick). Claiming again with the *same value* succeeds and
  refreshes the record, so a write retried after a lost reply is harmless; every other
  method is idempotent as it stands.
* Writes are not awaited for durability one by one (a PUSH with a unique lock would pay two
  commits): a caller that needs them durable awaits ``Store.durable()`` -- or the durable
  write that follows them, such as the ``enqueue`` of the job the lock is for -- made in the
  same step (no suspending ``await`` in between), so that it is bound to the same
  transaction: a commit can fail (a full disk) and a later one succeed.
* ``list_records`` pages through a space in key order. It is meant for small spaces (cron
  entries, throttle states: thousands, not millions); on Redis it reads the whole space.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

import msgspec

__all__ = ["Record", "Records"]


class Record(msgspec.Struct, frozen=True, gc=False):
    """``value`` under ``key``; ``expires_at`` in seconds since the epoch, None for never.

    A frozen struct rather than a frozen dataclass: every unique PUSH makes one, and a
    dataclass's ``__init__`` (``object.__setattr__`` a field) was a tenth of what the lock
    costs; untracked by the collector (no field can hold a container)."""

    key: str
    value: bytes
    expires_at: float | None = None

    def live(self, now: float) -> bool:
        return self.expires_at is None or self.expires_at > now


class Records(abc.ABC):
    """The records capability; every backend implements it (``Store`` includes it)."""

    @abc.abstractmethod
    async def claim_record(self, space: str, record: Record, now: float) -> bytes | None:
        """Atomically store ``record`` if ``space`` holds no live record under its key, or one
        with the same value (then its expiry is replaced); return None. Otherwise change
        nothing and return the value of the record in the way."""

    def claim_record_now(self, space: str, record: Record, now: float) -> bytes | None:
        """``claim_record`` done in the caller's step, only for ``in_process`` stores (the
        PUSH fast path of a unique job: no coroutine). Its write is bound to the transaction
        of the writes made in the same step, as ``claim_record``'s."""
        raise NotImplementedError(f"{type(self).__name__} is not an in-process store")

    @abc.abstractmethod
    async def put_records(self, space: str, records: Sequence[Record]) -> None:
        """Store each record, replacing whatever was under its key."""

    @abc.abstractmethod
    async def get_records(self, space: str, keys: Sequence[str], now: float) -> dict[str, Record]:
        """The live records of these keys (absent keys are left out)."""

    @abc.abstractmethod
    async def delete_records(
        self, space: str, keys: Sequence[str], if_value: bytes | None = None
    ) -> int:
        """Delete the records of these keys -- with ``if_value``, only those holding exactly
        that value (a lock is released only by its holder). Returns how many were deleted,
        expired ones included."""

    @abc.abstractmethod
    async def list_records(
        self, space: str, now: float, after: str = "", limit: int = 100
    ) -> list[Record]:
        """Up to ``limit`` live records of ``space`` with keys greater than ``after``, in key
        order (by code point)."""

    @abc.abstractmethod
    async def count_records(self, space: str, now: float) -> int:
        """How many live records ``space`` holds."""

    @abc.abstractmethod
    async def purge_records(self, now: float, limit: int) -> int:
        """Delete up to ``limit`` expired records, of any space. Returns how many."""
