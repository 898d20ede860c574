"""The manager's view of workers: connections, heartbeats, quiet/terminate, the reaper.

Mixed into ``Manager``. A worker's record lives in the store, shared by every server on a
Redis store; what is kept here is this server's part: its connections to each worker (to
close them when the worker is reaped) and the last state it saw (FETCH consults it without a
store read).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from conveyor.errors import UnknownWorker
from conveyor.manager.types import ClientInfo, WorkerState
from conveyor.store.base import Store, WorkerRecord

if TYPE_CHECKING:
    from conveyor.manager.config import ManagerConfig
    from conveyor.manager.flow import FlowControl

__all__ = ["WorkerOps"]

log = logging.getLogger("conveyor.manager")


class WorkerOps:
    """Mixed into ``Manager``, whose ``store``, ``config`` and ``flow`` it uses."""

    store: Store
    config: ManagerConfig
    flow: FlowControl
    _worker_states: dict[str, str]
    """The state each worker was last seen in (running, quiet, terminate)."""
    _local_clients: dict[str, set[int]]
    """The connections of each worker to this server (``id`` of each ``ClientInfo``)."""
    _closers: dict[int, ClientInfo]
    """Those connections, by ``id``: how to close them when their worker is reaped."""

    async def connect(self, client: ClientInfo) -> None:
        if not client.wid:
            return
        self._closers[id(client)] = client
        local = self._local_clients.setdefault(client.wid, set())
        local.add(id(client))
        now = time.time()
        # One atomic step: another server may be connecting the same worker right now.
        first = WorkerRecord(
            wid=client.wid,
            hostname=client.hostname,
            pid=client.pid,
            labels=list(client.labels),
            started_at=now,
            last_beat=now,
        )
        record = await self.store.update_worker(client.wid, connections_delta=1, create=first)
        self._worker_states[client.wid] = record.state if record else WorkerState.RUNNING

    async def disconnect(self, client: ClientInfo) -> None:
        if not client.wid:
            return
        self._closers.pop(id(client), None)
        local = self._local_clients.get(client.wid)
        if local is None or id(client) not in local:
            return  # already reaped
        local.discard(id(client))
        if not local:
            del self._local_clients[client.wid]
        # The store deletes the record when this was the worker's last connection anywhere
        # (Faktory forgets a worker at once when it hangs up).
        record = await self.store.update_worker(client.wid, connections_delta=-1)
        if record is None or record.connections <= 0:
            self._worker_states.pop(client.wid, None)
            await self.flow.worker_gone(client.wid)

    async def beat(self, wid: str, rss_kb: int = 0, current_state: str | None = None) -> str:
        """Record a heartbeat; the state only moves forward (a worker's own report of quiet or
        terminate counts too). Atomic, so a quiet signalled on another server is never lost."""
        record = await self.store.update_worker(
            wid, rss_kb=rss_kb, last_beat=time.time(), state=current_state
        )
        if record is None:
            raise UnknownWorker(f"unknown worker {wid}")
        self._worker_states[wid] = record.state
        return record.state

    async def signal_workers(self, wids: Sequence[str] | None, state: str) -> int:
        """Quiet or terminate some workers (None = all); states never move backwards. Returns
        how many workers were signalled (a worker gone meanwhile is not counted)."""
        if state not in (WorkerState.QUIET, WorkerState.TERMINATE):
            raise ValueError(f"cannot signal workers to {state!r}")
        if wids is None:
            chosen = [record.wid for record in await self.store.list_workers()]
        else:
            chosen = list(dict.fromkeys(wids))
        signalled = 0
        for wid in chosen:
            record = await self.store.update_worker(wid, state=state)
            if record is not None:
                self._worker_states[wid] = record.state
                signalled += 1
        return signalled

    async def reap_workers(self) -> int:
        """Forget workers silent for longer than the timeout and close their connections."""
        cutoff = time.time() - self.config.worker_timeout_seconds
        reaped = 0
        for record in await self.store.list_workers():
            if record.last_beat >= cutoff:
                continue
            if not await self.store.delete_worker(record.wid, silent_before=cutoff):
                continue  # it beat (maybe on another server) since we listed it
            self._worker_states.pop(record.wid, None)
            reaped += 1
            await self.flow.worker_gone(record.wid)
            for key in self._local_clients.pop(record.wid, set()):
                client = self._closers.pop(key, None)
                if client is not None and client.close is not None:
                    client.close()
        if reaped:
            log.info(
                "reaped %d workers silent for over %ss", reaped, self.config.worker_timeout_seconds
            )
        return reaped
