"""Golden byte tests: every FWP command's replies and errors, over a real loopback server."""

from __future__ import annotations

import asyncio
import re
import uuid
from typing import Any

import msgspec
import pytest

from tests.support.server import MakeServer, RawClient, RawConnect, RunningServer


def job(**fields: Any) -> bytes:
    return msgspec.json.encode({"jid": uuid.uuid4().hex, "jobtype": "T", "args": [1], **fields})


def bulk_json(reply: bytes) -> Any:
    header, _, body = reply.partition(b"\r\n")
    assert header.startswith(b"$"), reply
    assert int(header[1:]) == len(body) - 2
    return msgspec.json.decode(body[:-2])


@pytest.fixture
async def conn(server: RunningServer, raw_client: RawConnect) -> RawClient:
    return await raw_client(server.port, hello=b'{"v":2,"wid":"w1","hostname":"h","pid":1}')


async def queue_sizes(conn: RawClient) -> dict[str, Any]:
    info = bulk_json(await conn.call(b"INFO"))
    return {"queues": info["faktory"]["queues"], "sets": info["faktory"]["sets"]}


async def test_greeting_and_hello(server: RunningServer, raw_client: RawConnect) -> None:
    client = await raw_client(server.port, hello=None)
    assert client.greeting == b'+HI {"v":2}\r\n'
    assert await client.call(b'HELLO {"hostname":"x","wid":"w","pid":1,"labels":["a"],"v":2}') == (
        b"+OK\r\n"
    )


async def test_push_fetch_ack_round_trip(conn: RawClient) -> None:
    payload = job(queue="q1", custom={"big": 12345678901234567890, "html": "<a>&"})
    assert await conn.call(b"PUSH " + payload) == b"+OK\r\n"
    fetched = bulk_json(await conn.call(b"FETCH q1"))
    sent = msgspec.json.decode(payload)
    assert fetched["jid"] == sent["jid"]
    assert fetched["retry"] == 25
    assert fetched["queue"] == "q1"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", fetched["enqueued_at"])
    raw = await conn.call(b"FETCH q1")
    assert raw == b"$-1\r\n"
    assert await conn.call(b'ACK {"jid":"' + sent["jid"].encode() + b'"}') == b"+OK\r\n"


async def test_fetch_bytes_keep_numbers_and_html(conn: RawClient) -> None:
    payload = job(queue="exact", args=[12345678901234567890, 1.0, "<b>&"])
    assert await conn.call(b"PUSH " + payload) == b"+OK\r\n"
    reply = await conn.call(b"FETCH exact")
    assert b'"args":[12345678901234567890,1.0,"<b>&"]' in reply


async def test_unknown_commands_and_case(conn: RawClient) -> None:
    assert await conn.call(b"foo") == b"-ERR unknown command foo\r\n"
    assert await conn.call(b"push {}") == b"-ERR unknown command push\r\n"
    assert await conn.call(b"HELLO {}") == b"-ERR unknown command HELLO\r\n"
    assert await conn.call(b"") == b"-ERR unknown command \r\n"
    assert await conn.call(b"INFO") != b""  # still connected


async def test_bare_lf_line_endings(conn: RawClient) -> None:
    await conn.send(b"PUSH " + job(queue="lf") + b"\n")
    assert await conn.reply() == b"+OK\r\n"
    await conn.send(b"FETCH nothing-here\n")
    assert await conn.reply() == b"$-1\r\n"


async def test_push_errors(conn: RawClient) -> None:
    before = await queue_sizes(conn)
    reply = await conn.call(b"PUSH {nope")
    assert reply.startswith(b"-ERR invalid JSON: ")
    assert await conn.call(b'PUSH {"jid":"short","jobtype":"T","args":[]}') == (
        b"-ERR jobs must have a reasonable jid parameter\r\n"
    )
    assert await conn.call(b'PUSH {"jid":"123456789","args":[]}') == (
        b"-ERR jobs must have a jobtype parameter\r\n"
    )
    assert await conn.call(b'PUSH {"jid":"123456789","jobtype":"T"}') == (
        b"-ERR jobs must have an args parameter\r\n"
    )
    assert await conn.call(b"PUSH " + job(reserve_for=86401)) == (
        b"-ERR jobs cannot be reserved for more than one day\r\n"
    )
    reply = await conn.call(b"PUSH " + job(queue="bad name!"))
    assert reply == (
        b'-ERR cannot get "bad name!" queue: queue names must match \\A[a-zA-Z0-9._-]+\\z\r\n'
    )
    reply = await conn.call(b'PUSH {"jid":123456789,"jobtype":"T","args":[]}')
    assert reply.startswith(b"-ERR invalid JSON: ")
    assert await conn.call(b"PUSH") != b""
    assert await queue_sizes(conn) == before


async def test_pushb_replies(conn: RawClient) -> None:
    good = [job(queue="pb"), job(queue="pb")]
    assert await conn.call(b"PUSHB [" + b",".join(good) + b"]") == b"$2\r\n{}\r\n"
    bad = b'[{"jid":"123456789","args":[]},' + job(queue="pb") + b"]"
    assert await conn.call(b"PUSHB " + bad) == (
        b'$50\r\n{"123456789":"jobs must have a jobtype parameter"}\r\n'
    )
    assert (await conn.call(b"PUSHB [nope")).startswith(b"-ERR invalid JSON: ")
    sizes = await queue_sizes(conn)
    assert sizes["queues"]["pb"] == 3


async def test_fetch_errors_and_order(conn: RawClient) -> None:
    assert await conn.call(b"FETCH") == b"-ERR must call fetch with at least one queue\r\n"
    assert await conn.call(b"FETCH ") == b"-ERR must call fetch with at least one queue\r\n"
    first, second = job(queue="b"), job(queue="a")
    await conn.call(b"PUSH " + first)
    await conn.call(b"PUSH " + second)
    got = bulk_json(await conn.call(b"FETCH a b"))
    assert got["jid"] == msgspec.json.decode(second)["jid"]


async def test_ack_replies(conn: RawClient) -> None:
    assert await conn.call(b'ACK {"jid":"never-fetched"}') == b"+OK\r\n"
    assert await conn.call(b"ACK nope") == b"-ERR invalid ACK nope\r\n"
    assert await conn.call(b'ACK {"jid":1}') == b'-ERR invalid ACK {"jid":1}\r\n'
    assert await conn.call(b'ACK {"id":"x"}') == b'-ERR invalid ACK {"id":"x"}\r\n'
    assert await conn.call(b"ACK") == (
        b'-ERR invalid ACK: missing argument, expected ACK {"jid":"..."}\r\n'
    )


async def test_fail_replies(conn: RawClient, server: RunningServer) -> None:
    payload = job(queue="f", retry=1)
    jid = msgspec.json.decode(payload)["jid"]
    await conn.call(b"PUSH " + payload)
    bulk_json(await conn.call(b"FETCH f"))
    fail = {"jid": jid, "errtype": "E", "message": "boom", "backtrace": ["l1"]}
    assert await conn.call(b"FAIL " + msgspec.json.encode(fail)) == b"+OK\r\n"
    assert await conn.call(b"FAIL " + msgspec.json.encode(fail)) == (
        f"-ERR Job not found {jid}\r\n".encode()
    )
    assert await conn.call(b"FAIL nope") == b"-ERR invalid FAIL nope\r\n"
    assert await conn.call(b'FAIL {"errtype":"E"}') == b"-ERR missing JID\r\n"
    assert await conn.call(b'FAIL {"jid":"x","backtrace":"no"}') == (
        b'-ERR invalid FAIL {"jid":"x","backtrace":"no"}\r\n'
    )
    sizes = await queue_sizes(conn)
    assert sizes["sets"]["retries"] == 1


async def test_beat_replies(conn: RawClient, server: RunningServer) -> None:
    assert await conn.call(b'BEAT {"wid":"w1","rss_kb":100}') == b"+OK\r\n"
    assert await conn.call(b'BEAT {"wid":"nobody"}') == b"-ERR unknown worker nobody\r\n"
    assert await conn.call(b"BEAT nope") == b"-ERR invalid BEAT nope\r\n"
    assert await conn.call(b'BEAT {"wid":"w1","current_state":"quiet"}') == (
        b'$17\r\n{"state":"quiet"}\r\n'
    )
    assert await conn.call(b'BEAT {"wid":"w1"}') == b'$17\r\n{"state":"quiet"}\r\n'
    await server.manager.signal_workers(["w1"], "terminate")
    assert await conn.call(b'BEAT {"wid":"w1"}') == b'$21\r\n{"state":"terminate"}\r\n'


async def test_info_shape(conn: RawClient) -> None:
    await conn.call(b"PUSH " + job(queue="i"))
    info = bulk_json(await conn.call(b"INFO"))
    assert re.fullmatch(r"\d\d:\d\d:\d\d UTC", info["server_utc_time"])
    assert re.fullmatch(r"\d+\.\d+\.\d+", info["server"]["faktory_version"])
    assert tuple(int(p) for p in info["server"]["faktory_version"].split(".")) >= (1, 8, 0)
    assert info["server"]["connections"] == 1
    assert info["server"]["command_count"] >= 2
    faktory = info["faktory"]
    assert faktory["queues"]["i"] == 1
    for name in ("Scheduled", "Retries", "Dead", "Busy", "Workers"):
        assert isinstance(faktory["tasks"][name]["size"], int)
    assert set(faktory["sets"]) >= {"scheduled", "retries", "dead", "working"}


async def test_flush(conn: RawClient) -> None:
    await conn.call(b"PUSH " + job(queue="fl"))
    assert await conn.call(b"FLUSH") == b"+OK\r\n"
    assert (await queue_sizes(conn))["queues"].get("fl", 0) == 0


async def test_mutate(conn: RawClient, server: RunningServer) -> None:
    for _ in range(2):
        await conn.call(b"PUSH " + job(queue="m", at="2999-01-01T00:00:00Z"))
    assert (await queue_sizes(conn))["sets"]["scheduled"] == 2
    assert await conn.call(b"MUTATE") == b"-ERR invalid format\r\n"
    assert await conn.call(b'MUTATE {"cmd":"nope","target":"scheduled"}') == (
        b"-ERR unknown mutate operation\r\n"
    )
    assert await conn.call(b'MUTATE {"cmd":"kill","target":"queues"}') == (
        b"-ERR invalid target for mutation command\r\n"
    )
    assert (await conn.call(b"MUTATE {x")).startswith(b"-ERR invalid JSON: ")
    assert (await queue_sizes(conn))["sets"]["scheduled"] == 2
    # JSON with spaces (Python's json.dumps default) works, unlike Faktory.
    reply = await conn.call(b'MUTATE {"cmd": "kill", "target": "scheduled", "filter": {}}')
    assert reply == b"+OK\r\n"
    sizes = await queue_sizes(conn)
    assert (sizes["sets"]["scheduled"], sizes["sets"]["dead"]) == (0, 2)
    assert await conn.call(b'MUTATE {"cmd":"clear","target":"dead"}') == b"+OK\r\n"
    assert (await queue_sizes(conn))["sets"]["dead"] == 0


async def test_queue_commands(conn: RawClient) -> None:
    await conn.call(b"PUSH " + job(queue="qa"))
    await conn.call(b"PUSH " + job(queue="qb"))
    assert await conn.call(b"QUEUE PAUSE qa") == b"+OK\r\n"
    assert await conn.call(b"FETCH qa") == b"$-1\r\n"
    assert await conn.call(b"QUEUE resume qa") == b"+OK\r\n"  # sub-verb is case-insensitive
    assert (await conn.call(b"FETCH qa")).startswith(b"$")
    assert await conn.call(b"QUEUE PAUSE *") == b"+OK\r\n"
    assert await conn.call(b"FETCH qb") == b"$-1\r\n"
    assert await conn.call(b"QUEUE RESUME *") == b"+OK\r\n"
    assert await conn.call(b"QUEUE PAUSE unknown-queue") == b"+OK\r\n"
    assert await conn.call(b"QUEUE REMOVE qb") == b"+OK\r\n"
    assert "qb" not in (await queue_sizes(conn))["queues"]
    assert await conn.call(b"QUEUE NOPE x") == b"-ERR no such QUEUE subcommand: NOPE\r\n"
    assert await conn.call(b"QUEUE") == (
        b"-ERR QUEUE needs a subcommand: PAUSE, RESUME, REMOVE or LATENCY\r\n"
    )
    assert await conn.call(b"QUEUE PAUSE") == (
        b"-ERR QUEUE PAUSE needs at least one queue name or *\r\n"
    )
    assert (
        await conn.call(b"QUEUE LATENCY") == b"-ERR QUEUE LATENCY needs at least one queue name\r\n"
    )


async def test_queue_latency_json(conn: RawClient) -> None:
    assert await conn.call(b"QUEUE LATENCY *") == (
        b"-ERR QUEUE LATENCY does not support wildcards\r\n"
    )
    assert await conn.call(b"QUEUE LATENCY zz empty") == b'$18\r\n{"empty":0,"zz":0}\r\n'
    await conn.call(b"PUSH " + job(queue="lat"))
    latency = bulk_json(await conn.call(b"QUEUE LATENCY lat"))
    assert 0 < latency["lat"] < 5


async def test_end_closes_without_reply(conn: RawClient) -> None:
    await conn.send(b"END")
    assert await conn.closed_by_server()


async def test_fetchb_and_ackb_extensions(conn: RawClient) -> None:
    jids = []
    for _ in range(5):
        payload = job(queue="xb")
        jids.append(msgspec.json.decode(payload)["jid"])
        await conn.call(b"PUSH " + payload)
    jobs = bulk_json(await conn.call(b"FETCHB 3 xb"))
    assert [j["jid"] for j in jobs] == jids[:3]
    jobs += bulk_json(await conn.call(b"FETCHB 10 other xb"))
    assert [j["jid"] for j in jobs] == jids
    assert await conn.call(b"FETCHB 2 xb") == b"$-1\r\n"
    assert await conn.call(b"ACKB " + msgspec.json.encode(jids)) == b"+OK\r\n"
    info = bulk_json(await conn.call(b"INFO"))
    assert info["faktory"]["sets"]["working"] == 0
    assert info["faktory"]["total_processed"] == 5
    assert await conn.call(b"FETCHB 0 xb") == (
        b"-ERR FETCHB count must be an integer from 1 to 1000\r\n"
    )
    assert await conn.call(b"FETCHB x xb") == (
        b"-ERR FETCHB count must be an integer from 1 to 1000\r\n"
    )
    assert await conn.call(b"FETCHB 3") == (
        b"-ERR FETCHB needs a count and at least one queue: FETCHB <count> <q1> ...\r\n"
    )
    assert (await conn.call(b'ACKB {"jid":"x"}')).startswith(
        b"-ERR invalid ACKB: expected a JSON array of jids"
    )


async def test_pipelined_commands_answer_in_order(conn: RawClient) -> None:
    payloads = [job(queue="pipe") for _ in range(200)]
    conn.writer.write(b"".join(b"PUSH " + p + b"\r\n" for p in payloads) + b"INFO\r\nfoo\r\n")
    replies = [await conn.reply() for _ in range(200)]
    assert replies == [b"+OK\r\n"] * 200
    assert bulk_json(await conn.reply())["faktory"]["queues"]["pipe"] == 200
    assert await conn.reply() == b"-ERR unknown command foo\r\n"


DEEP = b"[" * 1000 + b"]" * 1000

BAD_INPUT = [
    (b"PUSH", b"-ERR invalid JSON: "),
    (b"PUSH []", b"-ERR invalid JSON: "),
    (b"PUSH null", b"-ERR "),
    (b'PUSH {"jid":"123456789","jobtype":"T","args":{}}', b"-ERR invalid JSON: "),
    (b'PUSH {"jid":"123456789","jobtype":"T","args":[],"retry":"x"}', b"-ERR invalid JSON: "),
    (b'PUSH {"jid":"123456789","jobtype":"T","args":[],"at":"tomorrow"}', b"-ERR invalid "),
    (b"PUSH \xff\xfe", b"-ERR "),
    (b"PUSHB", b"-ERR invalid JSON: "),
    (b"PUSHB {}", b"-ERR invalid JSON: "),
    (b"FETCH", b"-ERR must call fetch with at least one queue"),
    (b"ACK []", b"-ERR invalid ACK []"),
    (b"ACK null", b"-ERR invalid ACK null"),
    (b"FAIL []", b"-ERR invalid FAIL []"),
    (b'FAIL {"jid":"nobody-123"}', b"-ERR Job not found nobody-123"),
    (b"BEAT []", b"-ERR invalid BEAT []"),
    (b'BEAT {"wid":7}', b'-ERR invalid BEAT {"wid":7}'),
    (b"MUTATE []", b"-ERR invalid JSON: "),
    (b'MUTATE {"cmd":"kill","target":"dead","filter":"x"}', b"-ERR invalid JSON: "),
    (b"QUEUE REMOVE", b"-ERR QUEUE REMOVE needs at least one queue name or *"),
    (b"QUEUE LATENCY a *", b"-ERR QUEUE LATENCY does not support wildcards"),
    (b"ACKB", b"-ERR invalid ACKB"),
    (b"ACKB [1]", b"-ERR invalid ACKB"),
    (b"FETCHB -1 q", b"-ERR FETCHB count must be"),
    (b"FETCHB 1001 q", b"-ERR FETCHB count must be"),
    (b"\x00\x01", b"-ERR unknown command \x00\x01"),
    (b"FETCHB \xd9\xa3 q", b"-ERR FETCHB count must be"),  # an Arabic-Indic 3
    (b"FETCHB +3 q", b"-ERR FETCHB count must be"),
    # nested far beyond msgspec's recursion, in keys the decoders would skip
    (b'FAIL {"jid":"nobody-123","x":' + DEEP + b"}", b'-ERR invalid FAIL {"jid":"nobody-123"'),
    (b'BEAT {"wid":"w1","x":' + DEEP + b"}", b'-ERR invalid BEAT {"wid":"w1"'),
    (b'MUTATE {"cmd":"kill","target":"dead","x":' + DEEP + b"}", b"-ERR invalid JSON: nested"),
    (b"ACKB " + DEEP, b"-ERR invalid ACKB: expected a JSON array of jids"),
    (b'CRON ADD {"id":' + DEEP + b"}", b"-ERR CRON ADD: invalid JSON: nested too deeply"),
]


async def snapshot(conn: RawClient) -> dict[str, Any]:
    faktory = bulk_json(await conn.call(b"INFO"))["faktory"]
    return {k: faktory[k] for k in ("queues", "sets", "total_enqueued", "total_processed")}


async def test_bad_input_changes_nothing(conn: RawClient) -> None:
    await conn.call(b"PUSH " + job(queue="keep"))
    await conn.call(b"PUSH " + job(queue="later", at="2999-01-01T00:00:00Z"))
    before = await snapshot(conn)
    for line, prefix in BAD_INPUT:
        reply = await conn.call(line)
        assert reply.startswith(prefix), (line, reply)
        assert reply.endswith(b"\r\n")
        assert reply.count(b"\r\n") == 1, (line, reply)  # one well-formed error line
    assert await snapshot(conn) == before


@pytest.mark.parametrize("storage", ["memory", "redis"])
async def test_a_backtracking_mutate_glob_does_not_hold_up_other_clients(
    storage: str, make_server: MakeServer, raw_client: RawConnect, request: pytest.FixtureRequest
) -> None:
    """Issue 17: this MUTATE took 11 s of the event loop (its glob became a backtracking
    regex), and every other client waited as long."""
    url = request.getfixturevalue("redis_url") if storage == "redis" else "memory://"
    running = await make_server(storage_url=url)
    admin = await raw_client(running.port)
    other = await raw_client(running.port)
    later = "2999-01-01T00:00:00Z"
    # jids without "a" or "b": a random one could hold the pattern's letters
    for jid, text in (("jid-0000001", "a" * 60), ("jid-0000002", "a" * 60 + "b")):
        assert await admin.call(b"PUSH " + job(jid=jid, at=later, args=[text])) == b"+OK\r\n"
    loop = asyncio.get_running_loop()
    await admin.send(
        b'MUTATE {"cmd":"kill","target":"scheduled","filter":{"regexp":"*a*a*a*a*a*a*a*b*"}}'
    )
    await asyncio.sleep(0.05)  # the MUTATE is in the server's hands
    asked = loop.time()
    info = bulk_json(await other.call(b"INFO", within=30))
    waited = loop.time() - asked
    assert await admin.reply(within=30) == b"+OK\r\n"
    assert waited < 1.0, f"INFO waited {waited:.1f} s for the MUTATE"
    assert info["faktory"]["sets"]["scheduled"] in (1, 2), info  # before or after the MUTATE
    sets = bulk_json(await other.call(b"INFO"))["faktory"]["sets"]
    assert (sets["scheduled"], sets["dead"]) == (1, 1)  # only the job with a "b" was killed


async def test_large_pipeline_is_bounded_and_complete(
    conn: RawClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A tiny read-ahead limit makes the server pause and resume reading many times.
    monkeypatch.setattr("conveyor.server.connection.PIPELINE_HIGH_LINES", 16)
    count = 20_000
    lines = b"".join(b"PUSH " + job(queue="flood") + b"\r\n" for _ in range(count))

    async def writer() -> None:
        conn.writer.write(lines)
        await conn.writer.drain()

    sending = asyncio.create_task(writer())
    replies = [await conn.reply() for _ in range(count)]
    await sending
    assert replies == [b"+OK\r\n"] * count
    assert (await snapshot(conn))["queues"]["flood"] == count


async def test_reply_before_a_waiting_fetch_is_not_held_back(
    make_server: MakeServer, raw_client: RawConnect
) -> None:
    from conveyor.manager import ManagerConfig

    running = await make_server(config=ManagerConfig(fetch_wait_seconds=1.0))
    client = await raw_client(running.port)
    loop = asyncio.get_running_loop()
    started = loop.time()
    client.writer.write(b"PUSH " + job(queue="held") + b"\r\nFETCH empty\r\n")
    assert await client.reply() == b"+OK\r\n"
    assert loop.time() - started < 0.5  # not after the FETCH's 1 s wait
    assert await client.reply() == b"$-1\r\n"
    assert loop.time() - started >= 0.9


async def test_a_push_wakes_the_fetch_that_started_waiting_last(
    server: RunningServer, raw_client: RawConnect
) -> None:
    """The newest waiting FETCH gets the job (its worker is the one awake), the others wait on
    and end empty-handed, as any FETCH whose wait runs out."""
    fetchers = [await raw_client(server.port) for _ in range(3)]
    for fetcher in fetchers:
        await fetcher.send(b"FETCH stack")
        await asyncio.sleep(0.03)  # registered in this order
    producer = await raw_client(server.port)
    assert (
        await producer.call(b'PUSH {"jid":"stack-0001","jobtype":"T","args":[],"queue":"stack"}')
        == b"+OK\r\n"
    )
    assert b'"jid":"stack-0001"' in await fetchers[2].reply()
    # the two older ones time out with nothing (fetch_wait_seconds is 0.2 s in tests)
    assert await fetchers[0].reply() == b"$-1\r\n"
    assert await fetchers[1].reply() == b"$-1\r\n"
    # a burst wakes one waiter per job: both newer waiters get one each
    for fetcher in fetchers[:2]:
        await fetcher.send(b"FETCH stack")
    await asyncio.sleep(0.03)
    reply = await producer.call(
        b'PUSHB [{"jid":"stack-0002","jobtype":"T","args":[],"queue":"stack"},'
        b'{"jid":"stack-0003","jobtype":"T","args":[],"queue":"stack"}]'
    )
    assert reply.endswith(b"{}\r\n")
    got = {await fetchers[0].reply(), await fetchers[1].reply()}
    assert all(b'"jid":"stack-000' in r for r in got)
    assert len(got) == 2


async def test_a_fetch_from_a_vanished_client_reserves_nothing(
    server: RunningServer, raw_client: RawConnect
) -> None:
    """A worker killed while its FETCH waits must not have the next job reserved for it."""
    vanishing = await raw_client(server.port, hello=b'{"v":2,"wid":"gone-1"}')
    await vanishing.send(b"FETCHB 10 lonely")
    await asyncio.sleep(0.05)  # the FETCHB is now waiting on the server
    await vanishing.close()
    await asyncio.sleep(0.05)
    waiting = await raw_client(server.port)
    await waiting.send(b"FETCH lonely")
    await asyncio.sleep(0.05)
    producer = await raw_client(server.port)
    reply = await producer.call(
        b'PUSH {"jid":"orphan-0001","jobtype":"T","args":[],"queue":"lonely"}'
    )
    assert reply == b"+OK\r\n"
    fetched = await waiting.reply()
    assert b'"jid":"orphan-0001"' in fetched  # the live FETCH got it, at once
    busy = await server.manager.busy(0, 10)
    assert [r.wid for r in busy.items] == [""]


# --------------------------------------------------------------- bad input refused cleanly


def _nested(levels: int) -> bytes:
    """``levels`` JSON arrays, one inside the other (msgspec cannot encode them that deep)."""
    return b"[" * levels + b"]" * levels


def deep_job(args: bytes = b"[1]", **fields: Any) -> bytes:
    """``job(**fields)`` with ``args`` (raw JSON) in place of its ``[1]``."""
    return job(**fields).replace(b'"args":[1]', b'"args":' + args)


TOO_DEEP = b"-ERR jobs cannot nest arrays and objects more than 64 levels deep\r\n"


async def test_deep_nesting_is_refused_by_name(
    conn: RawClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 17: args nested ~985 deep got ``-ERR internal error`` and a logged traceback."""
    before = await snapshot(conn)
    # the job is level 1, args level 2: 63 levels of args is the deepest job accepted
    for levels in (64, 985, 5000):
        assert await conn.call(b"PUSH " + deep_job(_nested(levels), queue="deep")) == TOO_DEEP
    deep_custom = deep_job(queue="deep").replace(b"}", b',"custom":{"x":{"y":%s}}}' % _nested(62))
    assert await conn.call(b"PUSH " + deep_custom) == TOO_DEEP
    assert await snapshot(conn) == before
    assert await conn.call(b"PUSH " + deep_job(_nested(63), queue="deep")) == b"+OK\r\n"
    assert (await snapshot(conn))["queues"]["deep"] == 1
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


async def test_brackets_inside_strings_do_not_make_a_job_deep(conn: RawClient) -> None:
    """A PUSH skips the nesting walk only when the payload holds at most 64 opening
    brackets (``fits_depth``); more of them inside strings take the walk, which counts levels,
    not bytes: the job is accepted, and a deep one beside such strings is still refused."""
    strings = b'["%s","%s"]' % (b"[" * 70, b"{" * 70)
    assert await conn.call(b"PUSH " + deep_job(strings, queue="brackets")) == b"+OK\r\n"
    deep = b'["%s",%s]' % (b"[" * 70, _nested(63))
    assert await conn.call(b"PUSH " + deep_job(deep, queue="brackets")) == TOO_DEEP
    assert (await snapshot(conn))["queues"]["brackets"] == 1
    fetched = bulk_json(await conn.call(b"FETCH brackets"))
    assert fetched["args"] == ["[" * 70, "{" * 70]


async def test_pushb_refuses_only_the_deep_jobs(conn: RawClient) -> None:
    """Issue 17: one deep job in a PUSHB lost the valid jobs beside it."""
    good = [job(queue="bulk") for _ in range(3)]
    deep = deep_job(_nested(64), jid="deep-00064", queue="bulk")
    # too deep for msgspec even to skip over: this element cannot be decoded at all
    hopeless = deep_job(_nested(5000), jid="deep-05000", queue="bulk")
    line = b"[" + b",".join([good[0], deep, good[1], hopeless, good[2]]) + b"]"
    assert bulk_json(await conn.call(b"PUSHB " + line)) == {
        "deep-00064": TOO_DEEP[5:-2].decode(),
        "#3": TOO_DEEP[5:-2].decode(),
    }
    assert (await snapshot(conn))["queues"] == {"bulk": 3}
    fetched = {bulk_json(await conn.call(b"FETCH bulk"))["jid"] for _ in range(3)}
    assert fetched == {msgspec.json.decode(g)["jid"] for g in good}


async def test_undecodable_pushb_elements_each_get_their_own_key(conn: RawClient) -> None:
    """Issue 17: they all collapsed into one ``""`` key."""
    good = job(queue="keys")
    line = b'[7,"job",' + good + b',{"jobtype":"T","args":[]},{"jid":"","args":[]},null]'
    assert bulk_json(await conn.call(b"PUSHB " + line)) == {
        "#0": "invalid JSON: Expected `object`, got `int`",
        "#1": "invalid JSON: Expected `object`, got `str`",
        "#3": "jobs must have a reasonable jid parameter",
        "#4": "jobs must have a reasonable jid parameter",
        "#5": "invalid JSON: Expected `object`, got `null`",
    }
    assert (await snapshot(conn))["queues"] == {"keys": 1}


async def test_at_with_non_ascii_digits_is_refused(conn: RawClient) -> None:
    """Issue 17: ``"٢٠٢٤-01-01T00:00:00Z"`` (Arabic-Indic digits) was taken for 2024."""
    before = await snapshot(conn)
    at = "٢٠٢٤-01-01T00:00:00Z"
    reply = await conn.call(b"PUSH " + job(at=at))
    expected = (
        f"-ERR invalid timestamp for 'at': \"{at}\": '{at}' is not an RFC 3339 time with a "
        "zone (e.g. 2030-01-01T00:00:00Z)\r\n"
    )
    assert reply == expected.encode()
    line = b"[" + job(at="2024-01-0\u0661T00:00:00Z") + b"," + job(queue="asc") + b"]"
    errors = bulk_json(await conn.call(b"PUSHB " + line))
    assert [message[:30] for message in errors.values()] == ["invalid timestamp for 'at': \"2"]
    after = await snapshot(conn)
    assert after["queues"] == {**before["queues"], "asc": 1}
    assert after["sets"] == before["sets"]


async def test_junk_failure_counts_in_a_pushed_job_do_not_break_fail(conn: RawClient) -> None:
    """A client may push any ``failure``; FAIL must still retry the job, not answer
    ``internal error``."""
    failure = {"retry_count": "x", "remaining": [1], "failed_at": 5}
    pushed = msgspec.json.decode(job(queue="junk", failure=failure, retry=3))
    assert await conn.call(b"PUSH " + msgspec.json.encode(pushed)) == b"+OK\r\n"
    assert bulk_json(await conn.call(b"FETCH junk"))["jid"] == pushed["jid"]
    fail = {"jid": pushed["jid"], "errtype": "E", "message": "boom"}
    assert await conn.call(b"FAIL " + msgspec.json.encode(fail)) == b"+OK\r\n"
    assert (await snapshot(conn))["sets"]["retries"] == 1
