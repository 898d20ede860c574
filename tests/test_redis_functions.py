"""The batch scripts run as functions of one Redis function library (``scripts.py``,
``calls.Caller``): loaded at their first FCALL, loaded again when Redis lost it (a restart
without persistence, FUNCTION FLUSH), its load's reply lost, loaded by another server in
between, and the scripts sent by EVALSHA where Redis refuses FCALL. Each way a batch job is
marked, queued, handed out and counted once, and its batch completes with one callback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from conveyor.store.redis.calls import Caller
from conveyor.store.redis.codec import parse_url
from conveyor.store.redis.scripts import load_scripts
from tests.support.fault_proxy import FaultProxy
from tests.support.server import MakeServer, RawClient, RawConnect
from tests.support.services import SERVER_KINDS, RedisServer, valkey_binary
from tests.test_redis_batch_push_lost import callbacks_queued, new_batch, push, status
from tests.test_redis_lost_replies_fwp import K, client, direct, queued, running, stats

__all__ = ["client", "direct", "running"]  # the fixtures, used here by name

SCRIPTS = load_scripts()
LIBRARY = SCRIPTS["batches_mark"].library or ""
LIBRARY_NAME = LIBRARY.split("\n", 1)[0].split("name=", 1)[1]


async def libraries(direct: aioredis.Redis) -> list[str]:
    return [lib[lib.index(b"library_name") + 1].decode() for lib in await direct.function_list()]


async def calls(direct: aioredis.Redis, command: str) -> int:
    stats = await direct.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


async def one_batch_job(client: RawClient, direct: aioredis.Redis, jid: str) -> None:
    """A batch of one job: pushed, committed, fetched and acknowledged, counted once, its
    callback queued once, nothing left in the queue."""
    bid = await new_batch(client)
    assert await client.call(push(jid, {"bid": bid})) == b"+OK\r\n"
    assert await queued(direct) == [jid]
    assert await client.call(b"BATCH COMMIT " + bid.encode()) == b"+OK\r\n"
    assert jid.encode() in await client.call(b"FETCH default")
    assert await client.call(b'ACK {"jid":"%s"}' % jid.encode()) == b"+OK\r\n"
    done = await status(client, bid)
    assert (done["total"], done["pending"], done["complete_st"]) == (1, 0, "1")
    assert await callbacks_queued(direct) == 1
    assert await queued(direct) == []
    await direct.delete(K.queue("callbacks"))  # the next batch's callback counts alone


def test_the_library_holds_each_batch_script_as_a_function_named_by_its_sha() -> None:
    named = {name for name, script in SCRIPTS.items() if script.function is not None}
    assert {"batches_mark", "batches_new", "batches_end", "endings_end"} <= named
    # plain jobs' scripts, and the ACK without ends, stay scripts (no library to build)
    assert not {"enqueue", "reserve", "ack", "endings_end/bare"} & named
    for name in named:
        script = SCRIPTS[name]
        assert script.function is not None
        assert script.function.startswith(f"conveyor_{script.sha}_")
        assert script.library == LIBRARY
        # its whole name only in its FCALL, not in the library's text (a call's marker)
        assert script.sha not in LIBRARY


async def test_batch_scripts_are_called_as_functions_loaded_once(
    client: RawClient, direct: aioredis.Redis
) -> None:
    await direct.execute_command("FUNCTION", "FLUSH")
    fcalls, loads = await calls(direct, "fcall"), await calls(direct, "function|load")
    await one_batch_job(client, direct, "jid-fn000001")
    assert await libraries(direct) == [LIBRARY_NAME]
    # NEW, the PUSH's mark, COMMIT, the ACK: each a function (the first twice: not found yet)
    assert await calls(direct, "fcall") - fcalls >= 4
    loaded = await calls(direct, "function|load") - loads
    assert loaded >= 1  # more only where two calls found none at once (a loop's, here)
    await one_batch_job(client, direct, "jid-fn000002")
    assert await calls(direct, "function|load") - loads == loaded
    assert await stats(direct) == (2, 0)


async def test_a_library_redis_lost_is_loaded_again(
    client: RawClient, direct: aioredis.Redis
) -> None:
    """What a restart without persistence leaves: the batch's job pushed, then no function."""
    bid = await new_batch(client)
    assert await client.call(push("jid-fn000003", {"bid": bid})) == b"+OK\r\n"
    assert await client.call(b"BATCH COMMIT " + bid.encode()) == b"+OK\r\n"
    assert b"jid-fn000003" in await client.call(b"FETCH default")
    await direct.execute_command("FUNCTION", "FLUSH")
    assert await client.call(b'ACK {"jid":"jid-fn000003"}') == b"+OK\r\n"
    assert await libraries(direct) == [LIBRARY_NAME]
    done = await status(client, bid)
    assert (done["total"], done["pending"], done["complete_st"]) == (1, 0, "1")
    assert await callbacks_queued(direct) == 1
    assert await stats(direct) == (1, 0)


async def test_a_load_whose_reply_is_lost_then_the_call_runs_once(
    client: RawClient, fault_proxy: FaultProxy, direct: aioredis.Redis
) -> None:
    await direct.execute_command("FUNCTION", "FLUSH")
    fault_proxy.lose_reply(b"FUNCTION")  # the LOAD ran; the server does not know it
    await one_batch_job(client, direct, "jid-fn000004")
    assert fault_proxy.cuts == 1
    assert await stats(direct) == (1, 0)


async def test_a_library_another_server_loaded_in_between_is_called(
    kv_server: RedisServer,
) -> None:
    """FCALL found no function, then LOAD found the library there (another server loaded
    it in between): its calls stay functions."""
    direct = aioredis.Redis(port=kv_server.port)
    caller = Caller(direct, parse_url(kv_server.url), "{conveyor}:")
    try:
        await direct.execute_command("FUNCTION", "FLUSH")
        await direct.execute_command("FUNCTION", "LOAD", LIBRARY)  # the other server's
        refused = ResponseError("Function not found")
        await caller._load(direct.execute_command, SCRIPTS["batches_state"], refused)
        assert caller._functions
        assert await libraries(direct) == [LIBRARY_NAME]
    finally:
        await caller.close()
        await direct.aclose()


async def test_another_releases_library_stays_beside_this_one(
    client: RawClient, direct: aioredis.Redis
) -> None:
    """A server of another release on the same Redis (a rolling upgrade): its library, with
    functions for the same scripts, does not stop this one's from loading or being called."""
    digest = LIBRARY_NAME.rsplit("_", 1)[1]
    other = LIBRARY.replace(digest, "0" * len(digest)) + "\n-- another release"
    other_name = LIBRARY_NAME.replace(digest, "0" * len(digest))
    await direct.execute_command("FUNCTION", "FLUSH")
    await direct.execute_command("FUNCTION", "LOAD", other)
    await one_batch_job(client, direct, "jid-fn000009")
    assert sorted(await libraries(direct)) == sorted([LIBRARY_NAME, other_name])
    assert await stats(direct) == (1, 0)


@pytest.fixture(params=SERVER_KINDS)
def without_fcall(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server, then a valkey-server, with FCALL renamed away. Taken before
    ``make_server``, it stops after the conveyor server does."""
    binary = valkey_binary() if request.param == "valkey" else None
    kv = RedisServer(tmp_path, extra=("--rename-command", "FCALL", ""), binary=binary)
    kv.start()
    yield kv
    kv.stop()


async def test_where_fcall_is_refused_the_scripts_run_by_evalsha(
    without_fcall: RedisServer, make_server: MakeServer, raw_client: RawConnect
) -> None:
    """A Redis without functions for us (before 7.0, or FCALL renamed away, as here)."""
    direct = aioredis.Redis(port=without_fcall.port)
    try:
        running = await make_server(without_fcall.url)
        client = await raw_client(running.port)
        await one_batch_job(client, direct, "jid-fn000007")
        await one_batch_job(client, direct, "jid-fn000008")
        assert await libraries(direct) == []  # never loaded
        assert await stats(direct) == (2, 0)
        assert await calls(direct, "evalsha") > 0
    finally:
        await direct.aclose()
