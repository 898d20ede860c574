"""The Redis store through Redis's Unix socket (``redis+unix://``), as Faktory reaches the Redis
it starts: every connection of a server -- the scripts' pipe, redis-py's clients, the wake-up
channel -- goes through the socket, and servers on TCP and on the socket share one Redis."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from pathlib import Path

import pytest
import redis

from conveyor.errors import StoreError
from conveyor.store import open_store
from tests.support.server import TEST_TIMINGS, MakeServer, RawConnect
from tests.support.services import RedisServer


def push_line(jid: str) -> bytes:
    job = {"jid": jid, "jobtype": "Work", "args": [1], "queue": "default"}
    return b"PUSH " + json.dumps(job).encode()


@pytest.fixture
def unix_url(redis_server: RedisServer) -> str:
    client = redis.Redis(unix_socket_path=str(redis_server.socket))
    client.flushall()
    client.close()
    return redis_server.unix_url


def unix_clients(server: RedisServer) -> set[str]:
    """The addresses of the clients connected through the socket (``CLIENT LIST``)."""
    client = redis.Redis(port=server.port)
    try:
        listed = client.client_list()
    finally:
        client.close()
    return {c["addr"] for c in listed if c["addr"].startswith("/")}


async def test_a_job_goes_round_through_the_socket(
    unix_url: str, redis_server: RedisServer, make_server: MakeServer, raw_client: RawConnect
) -> None:
    server = await make_server(unix_url)
    over_tcp = await make_server(redis_server.url)
    client = await raw_client(server.port)
    assert await client.call(push_line("jid-unix-0001")) == b"+OK\r\n"
    # stored in the one Redis: a server reaching it over TCP sees the job queued
    looker = await raw_client(over_tcp.port)
    seen = json.loads((await looker.call(b"INFO")).split(b"\r\n")[1])
    assert seen["faktory"]["queues"] == {"default": 1}
    fetched = await client.call(b"FETCH default")
    assert json.loads(fetched.split(b"\r\n")[1])["jid"] == "jid-unix-0001"
    assert await client.call(b'ACK {"jid":"jid-unix-0001"}') == b"+OK\r\n"
    info = json.loads((await client.call(b"INFO")).split(b"\r\n")[1])
    assert info["faktory"]["total_processed"] == 1
    assert unix_clients(redis_server)  # the server's connections are on the socket


async def test_a_push_over_tcp_wakes_a_fetch_waiting_on_the_socket(
    unix_url: str, redis_url_same: str, make_server: MakeServer, raw_client: RawConnect
) -> None:
    config = replace(TEST_TIMINGS, fetch_wait_seconds=3.0)
    on_socket = await make_server(unix_url, config=config)
    on_tcp = await make_server(redis_url_same, config=config)
    consumer = await raw_client(on_socket.port)
    producer = await raw_client(on_tcp.port)
    for i in range(3):
        await consumer.send(b"FETCH default")
        await asyncio.sleep(0.05)  # the FETCH waits on the socket server
        assert await producer.call(push_line(f"jid-unix-{i:04d}")) == b"+OK\r\n"
        reply = await asyncio.wait_for(consumer.reply(), 2)
        assert json.loads(reply.split(b"\r\n")[1])["jid"] == f"jid-unix-{i:04d}"


@pytest.fixture
def redis_url_same(unix_url: str, redis_server: RedisServer) -> str:
    """The same Redis over TCP (not emptied again: ``unix_url`` did it)."""
    return redis_server.url


async def test_a_missing_socket_is_a_clear_error(tmp_path: Path) -> None:
    store = open_store(f"redis+unix://{tmp_path}/nothing-here.sock")
    with pytest.raises(StoreError, match=r"nothing-here\.sock"):
        await store.open()
    await store.close()
