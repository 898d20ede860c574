"""Redis Sentinel: conveyor follows the master a Sentinel service names, through failovers.

A real master, replicas and three ``redis-sentinel`` processes on loopback ports
(``tests/support/redis_sentinel.py``). A conveyor server is given the ``redis+sentinel://``
URL; a client pushes without pause while the master is failed over (``SENTINEL FAILOVER``) or
killed (``kill -9``). With ``?wait_replicas=1`` every job answered ``+OK`` must be on the new
master exactly once afterwards, every error must say what happened, and pushes must work
again on the new master.
"""

from __future__ import annotations

import asyncio
import collections
import json
import time
from pathlib import Path

import pytest
import redis

from conveyor.errors import StoreError
from conveyor.store.base import QueuedJob
from conveyor.store.redis import RedisStore
from conveyor.store.redis.codec import parse_url
from conveyor.store.redis.store import Keys
from tests.support.redis_sentinel import PASSWORD, SENTINEL_PASSWORD, SERVICE, SentinelGroup
from tests.support.server import MakeServer, RawClient, RawConnect
from tests.support.tls import CertFiles

K = Keys("conveyor")
HONEST = (b"is unreachable", b"outcome unknown", b"replicas confirmed")
"""What an -ERR during a failover may say: nothing written, maybe written, not replicated."""


def push_line(jid: str) -> bytes:
    return b"PUSH " + json.dumps({"jid": jid, "jobtype": "Work", "args": []}).encode()


def jid_of(raw: bytes) -> str:
    _, rest = raw.split(b":", 1)
    size, rest = rest.split(b":", 1)
    return rest[: int(size)].decode()


def test_sentinel_urls() -> None:
    url = parse_url(
        "rediss+sentinel://:pw@s1,s2:26380,[::1]:26381/mymaster/2"
        "?wait_replicas=1&wait_timeout=500&retry_for=30&sentinel_password=spw&ssl_ca_certs=/ca"
    )
    assert (url.sentinel, url.tls, url.service, url.db, url.password) == (
        True, True, "mymaster", 2, "pw",
    )  # fmt: skip
    assert url.nodes == [("s1", 26379), ("s2", 26380), ("::1", 26381)]
    assert (url.wait_replicas, url.wait_timeout_ms, url.retry_for) == (1, 500, 30.0)
    assert url.sentinel_auth == {"password": "spw"}
    assert url.options == {"ssl_ca_certs": "/ca"}
    assert url.where == "mymaster (sentinels s1:26379,s2:26380,::1:26381)"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+sentinel://s1:26379", "names its service"),
        ("redis+sentinel://s1:26379/a/0/x", "names its service"),
        ("redis+sentinel://s1:26379/a/zero", "database number"),
        ("redis+cluster://h:7000?wait_replicas=1", "not supported on a Redis Cluster"),
        ("redis://h?wait_replicas=-1", "non-negative"),
        ("redis://h?retry_for=soon", "retry_for"),
    ],
)
def test_bad_sentinel_urls_are_refused_clearly(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RedisStore.from_url(url)


@pytest.mark.slow
async def test_store_over_sentinel_works_and_wakes_other_servers(
    sentinel_group: SentinelGroup,
) -> None:
    a = RedisStore.from_url(sentinel_group.url("wait_replicas=1"))
    b = RedisStore.from_url(sentinel_group.url())
    await a.open()
    await b.open()
    woken: list[str] = []
    b.set_ready_listener(woken.append)
    try:
        await b.wait_subscribed()
        await a.enqueue([QueuedJob("default", "j1", b"{}", 60)])
        deadline = time.monotonic() + 5
        while "default" not in woken:
            assert time.monotonic() < deadline, "no wake-up through the sentinel's master"
            await asyncio.sleep(0.01)
        got = await b.reserve(["default"], "w1", time.time())
        assert [r.jid for r in got] == ["j1"]
        assert await a.ack(["j1"], "2026-01-01") == 1
        replica = sentinel_group.data_ports[1]
        with redis.Redis(port=replica) as client:  # wait_replicas=1: it is there already
            assert client.hget(K.stats, "processed") in (None, b"1")
            assert client.exists(K.queues) == 1
    finally:
        await a.close()
        await b.close()


@pytest.mark.slow
async def test_sentinels_and_master_with_passwords(tmp_path: Path) -> None:
    group = SentinelGroup(tmp_path / "sentinel", auth=True)
    group.directory.mkdir()
    try:
        group.start()
        store = RedisStore.from_url(group.url())
        await store.open()
        try:
            await store.enqueue([QueuedJob("default", "j1", b"{}", 60)])
            assert [r.jid for r in await store.reserve(["default"], "w1", time.time())] == ["j1"]
        finally:
            await store.close()
        # The sentinels refuse a client without their password; conveyor says why.
        no_sentinel_auth = group.url().replace(f"sentinel_password={SENTINEL_PASSWORD}", "")
        store = RedisStore.from_url(no_sentinel_auth)
        with pytest.raises(StoreError, match="No master found"):
            await store.open()
        # The master refuses a client without its password.
        store = RedisStore.from_url(group.url().replace(f":{PASSWORD}@", ""))
        with pytest.raises(StoreError, match=r"(?i)auth"):
            await store.open()
    finally:
        group.stop()


@pytest.mark.slow
async def test_sentinels_and_master_over_tls(tmp_path: Path, self_signed_cert: CertFiles) -> None:
    group = SentinelGroup(tmp_path / "sentinel", tls=self_signed_cert)
    group.directory.mkdir()
    try:
        group.start()
        store = RedisStore.from_url(group.url("wait_replicas=1"))
        await store.open()
        try:
            await store.enqueue([QueuedJob("default", "j1", b"{}", 60)])
            assert [r.jid for r in await store.reserve(["default"], "w1", time.time())] == ["j1"]
        finally:
            await store.close()
        # Without the CA the sentinels' certificate is refused: TLS really is checked.
        untrusted = RedisStore.from_url(group.url().split("?")[0])
        with pytest.raises(StoreError, match="certificate verify failed"):
            await untrusted.open()
    finally:
        group.stop()


async def test_sentinel_down_is_an_honest_error(tmp_path: Path) -> None:
    group = SentinelGroup(tmp_path)  # never started: nothing listens on its ports
    store = RedisStore.from_url(group.url())
    with pytest.raises(StoreError, match=f"{SERVICE} \\(sentinels 127.0.0.1:") as error:
        await store.open()
    # Each sentinel's address and error, not redis-py's client reprs (this goes to clients).
    message = str(error.value)
    assert "No master found" in message
    assert "<redis" not in message
    assert all(f"127.0.0.1:{port} " in message for port in group.sentinel_ports)


PRODUCERS = 4


async def pump(
    client: RawClient, name: int, stop: asyncio.Event, replies: dict[str, bytes]
) -> None:
    i = 0
    while not stop.is_set():
        jid = f"jid-{name}{i:05d}"
        i += 1
        reply = replies[jid] = await client.call(push_line(jid), within=30)
        if reply != b"+OK\r\n":
            await asyncio.sleep(0.02)  # as a client would before trying again


async def push_through_failover(
    group: SentinelGroup, make_server: MakeServer, raw_client: RawConnect, fault: str
) -> None:
    running = await make_server(group.url("wait_replicas=1&retry_for=10"))
    clients = [await raw_client(running.port) for _ in range(PRODUCERS)]
    old = group.master_port()
    replies: dict[str, bytes] = {}
    stop = asyncio.Event()
    pushing = asyncio.gather(*(pump(c, i, stop, replies) for i, c in enumerate(clients)))
    deadline = time.monotonic() + 10
    while sum(r == b"+OK\r\n" for r in list(replies.values())) < 20:  # pushes flow
        assert time.monotonic() < deadline, f"pushes fail before the failover: {replies}"
        await asyncio.sleep(0.05)
    before = len(replies)
    if fault == "failover":
        with group.sentinel() as sentinel:
            assert sentinel.sentinel_failover(SERVICE)
    else:
        group.kill(old)
    new = await asyncio.to_thread(group.wait_new_master, old)
    # Pushes work again on the new master: 20 more +OK after the switch.
    switched = len(replies)
    deadline = time.monotonic() + 30
    while sum(r == b"+OK\r\n" for j, r in list(replies.items())[switched:]) < 20:
        assert time.monotonic() < deadline, f"pushes fail after the failover: {replies}"
        await asyncio.sleep(0.05)
    stop.set()
    await pushing

    with redis.Redis(port=new) as direct:
        entries = direct.lrange(K.queue("default"), 0, -1)
    stored = collections.Counter(jid_of(raw) for raw in entries)
    ok = [jid for jid, reply in replies.items() if reply == b"+OK\r\n"]
    errors = {jid: reply for jid, reply in replies.items() if reply != b"+OK\r\n"}
    assert before > 0
    assert [jid for jid in ok if stored[jid] != 1] == []  # every +OK job, exactly once
    assert max(stored.values()) == 1
    assert set(stored) <= set(replies)
    for jid, reply in errors.items():
        assert reply.startswith(b"-ERR storage error: Redis at ")
        assert any(reason in reply for reason in HONEST), reply
        if b"nothing written" in reply:
            assert stored[jid] == 0, reply
    print(f"{fault}: {len(ok)} +OK, {len(errors)} errors: {collections.Counter(errors.values())}")
    # The new master hands the jobs out.
    first = entries[0].split(b":", 2)[2][: len(jid_of(entries[0]))]
    assert b'"jid":"%s"' % first in await clients[0].call(b"FETCH default")
    assert await clients[0].call(b'ACK {"jid":"%s"}' % first) == b"+OK\r\n"


@pytest.mark.slow
async def test_sentinel_failover_keeps_every_acknowledged_job(
    sentinel_group: SentinelGroup, make_server: MakeServer, raw_client: RawConnect
) -> None:
    await push_through_failover(sentinel_group, make_server, raw_client, "failover")


@pytest.mark.slow
@pytest.mark.parametrize("sentinel_group", [2], indirect=True)
async def test_killed_master_keeps_every_acknowledged_job(
    sentinel_group: SentinelGroup, make_server: MakeServer, raw_client: RawConnect
) -> None:
    # Two replicas: once the master is gone, one is promoted and the other still confirms
    # every write (wait_replicas=1).
    await push_through_failover(sentinel_group, make_server, raw_client, "kill")
