"""The wire side of results, completed jobs and retry control: the exact bytes of the ACK,
ACKB, FAIL and RESULT extensions (docs/protocol.md), bad input refused with nothing changed,
the server's ``[results]`` defaults, two servers over one Redis, and a Python worker that
talks to a server it takes for plain Faktory."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

import conveyor
import conveyor.testing
from conveyor.config import load_config
from conveyor.errors import ConfigError
from conveyor.timefmt import parse_time
from tests.support.server import MakeServer, RawClient, RawConnect, RunningServer

WORKER_HELLO = b'{"v":2,"hostname":"box","pid":1,"wid":"w-results","labels":[]}'


def push_line(jid: str, **fields: Any) -> bytes:
    job = {"jid": jid, "jobtype": "Work", "args": [1], **fields}
    return b"PUSH " + json.dumps(job).encode()


def body(reply: bytes) -> Any:
    assert reply.startswith(b"$"), reply
    return json.loads(reply.split(b"\r\n", 1)[1])


async def reserved(server: RunningServer, jid: str) -> bool:
    return await server.manager.store.get_reservation(jid) is not None


async def fetched(client: RawClient, jid: str, **fields: Any) -> None:
    assert await client.call(push_line(jid, **fields)) == b"+OK\r\n"
    assert body(await client.call(b"FETCH default"))["jid"] == jid


async def test_ack_with_a_result_and_result_replies_byte_for_byte(
    server: RunningServer, raw_client: RawConnect
) -> None:
    client = await raw_client(server.port, hello=WORKER_HELLO)
    await fetched(client, "jid-00000001", custom={"result_ttl": 60})
    ack = b'ACK {"jid":"jid-00000001","result":"{\\"sum\\":3,\\"items\\":[1,\\"a\\"]}"}'
    assert await client.call(ack) == b"+OK\r\n"
    reply = await client.call(b'RESULT {"jid":"jid-00000001"}')
    outcome = body(reply)
    assert int(reply[1 : reply.index(b"\r\n")]) == len(reply.split(b"\r\n")[1])
    assert reply.split(b"\r\n")[1].startswith(
        b'{"jid":"jid-00000001","state":"succeeded","finished_at":"'
    )
    assert reply.endswith(b',"result":{"sum":3,"items":[1,"a"]}}\r\n')
    assert outcome["jobtype"] == "Work"
    assert outcome["queue"] == "default"
    assert outcome["wid"] == "w-results"
    assert outcome["duration"] >= 0
    assert abs(parse_time(outcome["finished_at"]) - time.time()) < 60
    assert await client.call(b'RESULT {"jid":"nobody-00000","wait":0}') == b"$-1\r\n"


async def test_result_waits_until_the_ack_and_times_out_with_null(
    server: RunningServer, raw_client: RawConnect
) -> None:
    waiter = await raw_client(server.port)
    worker = await raw_client(server.port, hello=WORKER_HELLO)
    await fetched(worker, "jid-00000002", custom={"result_ttl": 60})
    await waiter.send(b'RESULT {"jid":"jid-00000002","wait":10}')
    await asyncio.sleep(0.2)
    assert server.manager.results is not None
    assert server.manager.results.waiting == 1
    assert await worker.call(b'ACK {"jid":"jid-00000002","result":"\\"done\\""}') == b"+OK\r\n"
    assert body(await waiter.reply(within=5))["result"] == "done"
    assert server.manager.results.waiting == 0

    started = time.monotonic()
    assert await waiter.call(b'RESULT {"jid":"jid-never","wait":0.3}') == b"$-1\r\n"
    assert time.monotonic() - started >= 0.3
    # a waiting RESULT whose client goes away stops waiting
    await waiter.send(b'RESULT {"jid":"jid-never","wait":30}')
    await asyncio.sleep(0.1)
    assert server.manager.results.waiting == 1
    await waiter.close()
    for _ in range(100):
        if server.manager.results.waiting == 0:
            break
        await asyncio.sleep(0.01)
    assert server.manager.results.waiting == 0


async def test_ackb_items_carry_results(server: RunningServer, raw_client: RawConnect) -> None:
    client = await raw_client(server.port, hello=WORKER_HELLO)
    for jid in ("jid-0000000a", "jid-0000000b"):
        assert await client.call(push_line(jid, custom={"result_ttl": 60})) == b"+OK\r\n"
    assert len(body(await client.call(b"FETCHB 2 default"))) == 2
    line = b'ACKB ["jid-0000000a",{"jid":"jid-0000000b","result":"[1,2]"}]'
    assert await client.call(line) == b"+OK\r\n"
    assert not await reserved(server, "jid-0000000a")
    assert not await reserved(server, "jid-0000000b")
    # a plain ACK is not read (no default is on): its job's outcome is not stored
    assert await client.call(b'RESULT {"jid":"jid-0000000a"}') == b"$-1\r\n"
    assert body(await client.call(b'RESULT {"jid":"jid-0000000b"}'))["result"] == [1, 2]


async def test_fail_extensions_steer_the_retries(
    server: RunningServer, raw_client: RawConnect
) -> None:
    client = await raw_client(server.port, hello=WORKER_HELLO)
    await fetched(client, "jid-skip0001", retry=5)
    fail = b'FAIL {"jid":"jid-skip0001","errtype":"E","message":"m","skip_retry":true}'
    assert await client.call(fail) == b"+OK\r\n"
    assert (await server.manager.locate("jid-skip0001")).where == "dead"  # type: ignore[union-attr]

    await fetched(client, "jid-later001", retry=5)
    fail = b'FAIL {"jid":"jid-later001","errtype":"E","message":"m","retry_after":"90"}'
    assert await client.call(fail) == b"+OK\r\n"
    (entry,) = await _entries(server, "retries", "jid-later001")
    assert 85 < entry.score - time.time() <= 90
    assert "retry_count" not in json.loads(entry.payload)["failure"]

    await fetched(client, "jid-back0001", retry=5)
    fail = b'FAIL {"jid":"jid-back0001","errtype":"E","message":"m","backoff":3600}'
    assert await client.call(fail) == b"+OK\r\n"
    (entry,) = await _entries(server, "retries", "jid-back0001")
    assert 3590 < entry.score - time.time() <= 3600
    assert json.loads(entry.payload)["failure"]["retry_count"] == 0


async def _entries(server: RunningServer, name: str, jid: str) -> list[Any]:
    from conveyor.store.base import SortedSet

    return await server.manager.store.get_set_entries(SortedSet(name), [jid])


@pytest.mark.parametrize(
    ("line", "error"),
    [
        (
            b'ACK {"jid":"jid-bad00001","result":"not json"}',
            b"-ERR result of jid-bad00001 is not JSON: ",
        ),
        (b'ACK {"jid":"jid-bad00001","result":5}', b'-ERR invalid ACK {"jid":"jid-bad00001"'),
        (
            b'ACK {"jid":"jid-bad00001","result":"\\"' + b"x" * 200 + b'\\""}',
            b"-ERR result of jid-bad00001 is 202 bytes; the limit is 100 ([results] max_bytes)",
        ),
        (
            b'ACKB [{"result":"1"}]',
            b"-ERR invalid ACKB: expected a JSON array of jids (Object missing required field",
        ),
        (
            b'ACKB ["jid-bad00001",{"jid":"x","result":"{"}]',
            b"-ERR result of x is not JSON: ",
        ),
        (
            b'FAIL {"jid":"jid-bad00001","retry_after":-1}',
            b"-ERR invalid FAIL: retry_after must be a number of seconds from 0 to 31622400",
        ),
        (
            b'FAIL {"jid":"jid-bad00001","backoff":"soon"}',
            b"-ERR invalid FAIL: backoff must be a number of seconds",
        ),
        (
            b'FAIL {"jid":"jid-bad00001","skip_retry":true,"retry_after":5}',
            b"-ERR invalid FAIL: skip_retry and retry_after contradict each other",
        ),
        (b'FAIL {"jid":"jid-bad00001","skip_retry":"yes"}', b'-ERR invalid FAIL {"jid"'),
    ],
)
async def test_bad_extensions_are_refused_and_change_nothing(
    make_server: MakeServer, raw_client: RawConnect, line: bytes, error: bytes
) -> None:
    server = await make_server(features={"results": {"max_bytes": 100}})
    client = await raw_client(server.port, hello=WORKER_HELLO)
    await fetched(client, "jid-bad00001", custom={"result_ttl": 60, "retain": 60})
    reply = await client.call(line)
    assert reply.startswith(error), reply
    assert await reserved(server, "jid-bad00001")  # nothing changed
    assert await client.call(b'RESULT {"jid":"jid-bad00001"}') == b"$-1\r\n"
    assert await client.call(b'ACK {"jid":"jid-bad00001"}') == b"+OK\r\n"  # still usable


@pytest.mark.parametrize(
    ("line", "error"),
    [
        (b"RESULT", b'-ERR RESULT needs an argument: RESULT {"jid":"...","wait":seconds}'),
        (b"RESULT nope", b"-ERR invalid RESULT: "),
        (b'RESULT {"wait":1}', b"-ERR invalid RESULT: Object missing required field `jid`"),
        (b'RESULT {"jid":"x","timeout":1}', b"-ERR invalid RESULT: Object contains unknown field"),
        (b'RESULT {"jid":""}', b"-ERR invalid RESULT: jid must not be empty"),
        (b'RESULT {"jid":"x","wait":3601}', b"-ERR invalid RESULT: wait must be from 0 to 3600"),
        (b'RESULT {"jid":"x","wait":-1}', b"-ERR invalid RESULT: wait must be from 0 to 3600"),
    ],
)
async def test_bad_result_commands_are_refused(
    server: RunningServer, raw_client: RawConnect, line: bytes, error: bytes
) -> None:
    client = await raw_client(server.port)
    reply = await client.call(line)
    assert reply.startswith(error), reply
    assert await client.call(b'RESULT {"jid":"x"}') == b"$-1\r\n"


@pytest.mark.parametrize("value", ['"soon"', "-1", "true", "1e12", "null"])
async def test_a_push_with_a_bad_result_ttl_or_retain_is_refused(
    server: RunningServer, raw_client: RawConnect, value: str
) -> None:
    client = await raw_client(server.port)
    for key in ("result_ttl", "retain"):
        line = b'PUSH {"jid":"jid-push0001","jobtype":"W","args":[],"custom":{"%s":%s}}' % (
            key.encode(),
            value.encode(),
        )
        reply = await client.call(line)
        expected = b"-ERR custom.%s must be a number of seconds from 0 to 316224000" % key.encode()
        assert reply.startswith(expected), reply
    assert await server.manager.store.queue_sizes() == {}


async def test_server_defaults_are_stamped_at_push_and_apply_to_plain_acks(
    make_server: MakeServer, raw_client: RawConnect
) -> None:
    server = await make_server(features={"results": {"ttl_seconds": 60, "retain_seconds": 600}})
    client = await raw_client(server.port, hello=WORKER_HELLO)
    assert await client.call(push_line("jid-dflt0001")) == b"+OK\r\n"
    job = body(await client.call(b"FETCH default"))
    assert job["custom"] == {"result_ttl": 60, "retain": 600}
    assert await client.call(b'ACK {"jid":"jid-dflt0001"}') == b"+OK\r\n"  # a plain ACK
    outcome = body(await client.call(b'RESULT {"jid":"jid-dflt0001"}'))
    assert (outcome["state"], outcome["result"]) == ("succeeded", None)
    assert await _entries(server, "completed", "jid-dflt0001")

    # a job that says 0 keeps nothing
    off = {"result_ttl": 0, "retain": 0}
    assert await client.call(push_line("jid-dflt0002", custom=off)) == b"+OK\r\n"
    assert body(await client.call(b"FETCH default"))["custom"] == off
    assert await client.call(b'ACK {"jid":"jid-dflt0002"}') == b"+OK\r\n"
    assert await client.call(b'RESULT {"jid":"jid-dflt0002"}') == b"$-1\r\n"
    assert not await _entries(server, "completed", "jid-dflt0002")


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("[results]\nttl = 5\n", "[results]: unknown key 'ttl'"),
        ("[results]\nttl_seconds = -5\n", "[results] ttl_seconds must be a number of seconds"),
        ('[results]\nretain_seconds = "1h"\n', "[results] retain_seconds must be a number"),
        ("[results]\nmax_bytes = 1.5\n", "[results] max_bytes must be an integer"),
        ("results = 3\n", "[results] must be a table"),
    ],
)
def test_bad_results_settings_stop_the_server(tmp_path: Any, table: str, message: str) -> None:
    path = tmp_path / "conveyor.toml"
    path.write_text(table)
    with pytest.raises(ConfigError) as caught:
        load_config({"config": str(path)}, environ={})
    assert message in str(caught.value)


async def test_results_settings_load_and_reload(tmp_path: Any) -> None:
    from conveyor.manager.features.results import ResultsFeature

    path = tmp_path / "conveyor.toml"
    path.write_text("[results]\nttl_seconds = 30\nretain_seconds = 86400\nmax_bytes = 4096\n")
    features = load_config({"config": str(path)}, environ={}).build_features()
    (results,) = [f for f in features if isinstance(f, ResultsFeature)]
    assert (results.settings.ttl_seconds, results.settings.retain_seconds) == (30, 86400)
    assert results.settings.max_bytes == 4096
    assert results.every_ack
    results.reconfigure(ResultsFeature())
    assert not results.every_ack


async def test_result_waits_on_one_server_for_an_ack_on_another(
    redis_url: str, make_server: MakeServer, raw_client: RawConnect
) -> None:
    a = await make_server(redis_url)
    b = await make_server(redis_url)
    waiter = await raw_client(a.port)
    worker = await raw_client(b.port, hello=WORKER_HELLO)
    await a.manager.store.wait_subscribed()  # type: ignore[attr-defined]
    for i in range(5):
        jid = f"jid-redis{i:04d}"
        await fetched(worker, jid, custom={"result_ttl": 60})
        await waiter.send(b'RESULT {"jid":"%s","wait":10}' % jid.encode())
        await asyncio.sleep(0.05)  # waiting on server A
        line = b'ACK {"jid":"%s","result":"%d"}' % (jid.encode(), i)
        assert await worker.call(line) == b"+OK\r\n"
        assert body(await waiter.reply(within=5))["result"] == i
    # and a death on B wakes a waiter on A too
    await fetched(worker, "jid-redisdie", retry=0, custom={"result_ttl": 60})
    await waiter.send(b'RESULT {"jid":"jid-redisdie","wait":10}')
    await asyncio.sleep(0.05)
    fail = b'FAIL {"jid":"jid-redisdie","errtype":"Boom","message":"it broke"}'
    assert await worker.call(fail) == b"+OK\r\n"
    outcome = body(await waiter.reply(within=5))
    assert (outcome["state"], outcome["errtype"], outcome["message"]) == (
        "failed",
        "Boom",
        "it broke",
    )


async def test_a_python_worker_against_plain_faktory_uses_standard_commands_only(
    server: RunningServer,
) -> None:
    """A server that does not say "conveyor" in INFO gets no extensions: results are not
    sent, SkipRetry is a FAIL then a MUTATE kill, RetryAfter an ordinary counted failure."""
    server.manager.description = "Faktory 1.10.0"
    app = conveyor.App(server.url)

    @app.job(result_ttl=60)
    async def ok() -> int:
        return 1

    @app.job(retry=5)
    async def skip() -> None:
        raise conveyor.SkipRetry("no")

    @app.job(retry=5)
    async def later() -> None:
        raise conveyor.RetryAfter(3000)

    jids = [await ok.push(), await skip.push(), await later.push()]
    worker = await conveyor.testing.drain(app)
    assert not worker.extensions
    assert not worker.batch
    assert server.manager.results is not None
    assert await server.manager.results.outcome(jids[0]) is None
    (dead,) = await _entries(server, "dead", jids[1])
    assert json.loads(dead.payload)["failure"]["errtype"] == "conveyor.SkipRetry"
    (retry,) = await _entries(server, "retries", jids[2])
    assert json.loads(retry.payload)["failure"]["retry_count"] == 0  # counted
    assert retry.score - time.time() < 100  # Faktory's backoff, not 3000 s
    await app.aclose()


async def test_a_result_the_server_refuses_fails_only_its_job(make_server: MakeServer) -> None:
    server = await make_server(features={"results": {"max_bytes": 50}})
    app = conveyor.App(server.url)

    @app.job(result_ttl=60)
    async def sized(n: int) -> str:
        return "x" * n

    small, large = await sized.push(3), await sized.push(80)
    await conveyor.testing.drain(app)  # the worker's own limit is 1 MiB: the server refuses
    assert await app.result(small, timeout=1) == "xxx"
    with pytest.raises(conveyor.JobFailed) as caught:
        await app.result(large, timeout=1)
    assert caught.value.errtype == "conveyor.ResultError"
    assert "the limit is 50" in caught.value.message
    await app.aclose()


async def test_an_ack_whose_wake_up_cannot_be_sent_is_still_done(
    make_server: MakeServer, raw_client: RawConnect
) -> None:
    """The signal is a wake-up: when it cannot be sent (the store fails it), the ACK that
    stored the outcome is still answered +OK, and the outcome is there to read."""
    from conveyor.errors import StoreError

    server = await make_server()

    async def broken(topic: str, keys: object) -> None:
        raise StoreError("the signal channel is down")

    server.manager.store.signal = broken  # type: ignore[method-assign,assignment]
    client = await raw_client(server.port, hello=WORKER_HELLO)
    await fetched(client, "jid-nosignal", custom={"result_ttl": 60})
    assert await client.call(b'ACK {"jid":"jid-nosignal","result":"7"}') == b"+OK\r\n"
    assert not await reserved(server, "jid-nosignal")
    assert body(await client.call(b'RESULT {"jid":"jid-nosignal"}'))["result"] == 7
