"""Password checks off the event loop, and slow for addresses that keep failing.

Checking a HELLO's ``pwdhash`` means 4,000 to 8,095 rounds of SHA-256 (Faktory's scheme), about
2 ms of CPU. On the event loop, a client trying passwords as fast as it could took that time
from every other client: 1,000 attempts at 440/s raised a legitimate connect+PUSH from 5.7 to
33.9 ms. So:

* checks run in one worker thread, one at a time, in the order they came; a connection that
  closed while it waited for its turn costs nothing;
* a failed check is answered after a delay that doubles with each recent failure from the same
  address (50 ms, 100 ms, ... up to 1 s; an address is forgotten after a minute without
  failures), so a client guessing in sequence gets about one guess a second;
* an address may have at most ``MAX_CHECKS_PER_ADDRESS`` checks under way (waiting, hashing or
  serving their delay); more are refused at once, without hashing.

"Address" is the peer's IP. Clients behind one NAT, or on one machine over loopback, share one,
and so share its failures. A legitimate client among them is not slowed by the others'
failures (only a failed check waits), but a flood of parallel attempts from its address can
fill the address's places and get its HELLO refused; it then connects again, as after any
error.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from conveyor.protocol import Challenge, Hello, password_matches

__all__ = ["MAX_CHECKS_PER_ADDRESS", "PasswordGuard", "Verdict"]

log = logging.getLogger("conveyor.server")

FIRST_FAILURE_DELAY_SECONDS = 0.05
MAX_FAILURE_DELAY_SECONDS = 1.0
FAILURE_MEMORY_SECONDS = 60.0
MAX_CHECKS_PER_ADDRESS = 8
_SWEEP_ABOVE = 10_000  # addresses remembered before the forgotten ones are swept out


class Verdict(enum.Enum):
    OK = "ok"
    WRONG = "wrong"  # answered after the failure delay
    BUSY = "busy"  # too many checks from the address at once: refused without a check


@dataclass(slots=True)
class _Address:
    failures: int = 0
    last_failure: float = 0.0
    checking: int = 0


class PasswordGuard:
    """Checks HELLO passwords for one server. ``close`` stops its worker thread."""

    def __init__(self, password: str) -> None:
        self.password = password
        self._turn = asyncio.Lock()  # one hash at a time, first come first served
        self._executor: ThreadPoolExecutor | None = None
        self._addresses: dict[str, _Address] = {}

    async def check(
        self, hello: Hello, challenge: Challenge, address: str, wanted: Callable[[], bool]
    ) -> Verdict:
        """Check ``hello``'s password; ``wanted()`` false means its connection is gone."""
        record = self._addresses.get(address)
        if record is None:
            record = self._addresses[address] = _Address()
        if record.checking >= MAX_CHECKS_PER_ADDRESS:
            return Verdict.BUSY
        record.checking += 1
        loop = asyncio.get_running_loop()
        try:
            async with self._turn:
                if not wanted():
                    return Verdict.WRONG  # nobody to answer: no hash
                matches = await loop.run_in_executor(
                    self._worker(), password_matches, hello, self.password, challenge
                )
            if matches:
                return Verdict.OK
            await asyncio.sleep(self._failed(record, address, loop.time()))
            return Verdict.WRONG
        finally:
            record.checking -= 1

    def failures(self, address: str) -> int:
        """Recent failures from ``address`` (for tests and logs)."""
        record = self._addresses.get(address)
        return 0 if record is None else record.failures

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def _worker(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="conveyor-password")
        return self._executor

    def _failed(self, record: _Address, address: str, now: float) -> float:
        """Count a failure; returns how long to wait before answering it."""
        if now - record.last_failure > FAILURE_MEMORY_SECONDS:
            record.failures = 0
        record.failures += 1
        record.last_failure = now
        count = record.failures
        if count & (count - 1) == 0:  # 1, 2, 4, 8...: the log shows a flood without flooding
            log.warning("invalid password from %s (%d recent failures)", address, count)
        if len(self._addresses) > _SWEEP_ABOVE:
            self._sweep(now)
        doublings = min(count - 1, 16)
        return min(MAX_FAILURE_DELAY_SECONDS, FIRST_FAILURE_DELAY_SECONDS * float(1 << doublings))

    def _sweep(self, now: float) -> None:
        self._addresses = {
            address: record
            for address, record in self._addresses.items()
            if record.checking or now - record.last_failure <= FAILURE_MEMORY_SECONDS
        }
