"""SyncClient: the async Client from blocking code, on its private loop thread.

The server runs on the test's event loop, so the blocking calls run in worker threads
(``asyncio.to_thread``), exactly as blocking application code would.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from conveyor.client import Client, SyncClient
from conveyor.errors import CommandError, ConnectError, JobNotFound
from tests.support.server import RunningServer
from tests.support.services import free_port


def loop_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "conveyor-sync-client"]


def test_every_async_command_has_a_blocking_twin_with_the_same_signature() -> None:
    commands = {
        name
        for name, member in vars(Client).items()
        if inspect.iscoroutinefunction(member)
        and not name.startswith("_")
        and name not in {"connect", "close"}
    }
    assert {"push", "fetch", "ack", "fail", "beat", "info", "mutate", "raw"} <= commands
    for name in commands:
        blocking = getattr(SyncClient, name)
        assert not inspect.iscoroutinefunction(blocking), name
        assert inspect.signature(blocking) == inspect.signature(getattr(Client, name)), name
        assert blocking.__doc__ == getattr(Client, name).__doc__
    assert inspect.signature(SyncClient.connect) == inspect.signature(Client.connect)


async def test_push_fetch_ack_from_blocking_code(server: RunningServer) -> None:
    def work() -> tuple[str, dict[str, Any] | None, dict[str, Any]]:
        with SyncClient.connect(server.url) as client:
            jid = client.push({"jobtype": "Sync", "args": ["x"]})
            fetched = client.fetch("default")
            assert fetched is not None
            client.ack(fetched["jid"])
            return jid, fetched, client.info()

    jid, fetched, info = await asyncio.to_thread(work)
    assert fetched is not None
    assert fetched["jid"] == jid
    assert fetched["args"] == ["x"]
    assert info["faktory"]["total_processed"] == 1


async def test_errors_are_the_same_classes(server: RunningServer) -> None:
    def work() -> list[BaseException]:
        caught: list[BaseException] = []
        with SyncClient.connect(server.url) as client:
            for call in (
                lambda: client.fail("not-reserved-1", "E", "m"),
                lambda: client.queue_latency("*"),
                lambda: client.fetch(),
            ):
                try:
                    call()
                except (CommandError, ValueError) as exc:
                    caught.append(exc)
        return caught

    caught = await asyncio.to_thread(work)
    assert [type(exc) for exc in caught] == [JobNotFound, CommandError, ValueError]


async def test_threads_can_share_one_sync_client(server: RunningServer) -> None:
    def work() -> int:
        with SyncClient.connect(server.url) as client:
            with ThreadPoolExecutor(4) as pool:
                list(pool.map(lambda n: client.push({"jobtype": "T", "args": [n]}), range(40)))
            queues: dict[str, int] = client.info()["faktory"]["queues"]
            return queues["default"]

    assert await asyncio.to_thread(work) == 40


async def test_close_stops_the_private_loop_thread(server: RunningServer) -> None:
    before = len(loop_threads())
    client = await asyncio.to_thread(SyncClient.connect, server.url)
    assert len(loop_threads()) == before + 1
    await asyncio.to_thread(client.close)
    await asyncio.to_thread(client.close)  # twice is fine
    assert client.closed
    assert len(loop_threads()) == before


def test_failed_connect_leaves_no_thread_behind() -> None:
    before = len(loop_threads())
    with pytest.raises(ConnectError):
        SyncClient.connect(f"tcp://127.0.0.1:{free_port()}", timeout=2)
    assert len(loop_threads()) == before
