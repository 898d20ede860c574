"""Property-based fuzzing of the protocol codec, PUSH/PUSHB validation and the command table.

Random bytes, lines and commands never crash anything: the codec raises only its own errors,
validation only ``InvalidJob``, and a server answers every command line with exactly one
well-formed reply (never ``internal error``) and stays up. Valid jobs round-trip exactly.
``bench/fuzz.py`` throws far more inputs at a real ``conveyor server`` process.
"""

from __future__ import annotations

import asyncio
import string
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from conveyor.errors import InvalidJob, LineTooLong, ProtocolError
from conveyor.job import decode_job, encode_job
from conveyor.manager import Manager, ManagerConfig
from conveyor.manager.validation import decode_pushed, prepare_job
from conveyor.protocol import (
    LineBuffer,
    Reply,
    ReplyKind,
    ReplyReader,
    bulk,
    decode_hello,
    error,
    simple,
)
from conveyor.server.commands import COMMANDS
from conveyor.store import open_store
from conveyor.store.base import SortedSet
from tests.support.server import MakeServer, RawClient, RawConnect, RunningServer

CONFIG = ManagerConfig()
SERVER_SETTINGS = settings(
    max_examples=100,
    deadline=None,  # the event loop is involved
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# ------------------------------------------------------------------ strategies

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=8,
)
queue_names = st.from_regex(r"[a-zA-Z0-9._-]{1,20}", fullmatch=True)
past_times = st.sampled_from(
    ["2001-01-01T00:00:00Z", "2020-02-29T23:59:59.123456789+02:00", "1999-12-31T23:00:00-01:30"]
)
valid_jobs = st.fixed_dictionaries(
    {
        "jid": st.text(string.ascii_letters + string.digits + "-_", min_size=8, max_size=32),
        "jobtype": st.text(min_size=1, max_size=20),
        "args": st.lists(json_values, max_size=5),
    },
    optional={
        "queue": queue_names,
        "custom": st.dictionaries(st.text(max_size=8), json_values, max_size=3),
        "retry": st.integers(-1, 100),
        "reserve_for": st.integers(0, 86_400),
        "backtrace": st.integers(0, 50),
        "at": past_times,
    },
)
job_fields = st.sampled_from(
    ["jid", "jobtype", "args", "queue", "custom", "retry", "reserve_for", "at", "failure"]
)


@st.composite
def broken_jobs(draw: st.DrawFn) -> dict[str, Any]:
    """A valid job with one field replaced by any JSON value, or dropped."""
    job: dict[str, Any] = draw(valid_jobs)
    field = draw(job_fields)
    if draw(st.booleans()):
        job.pop(field, None)
    else:
        job[field] = draw(json_values)
    return job


def no_newline(data: bytes) -> bytes:
    return data.replace(b"\n", b" ")


# ------------------------------------------------------------------ the sans-IO codec


@given(st.lists(st.binary(max_size=40), max_size=20))
def test_line_buffer_frames_any_bytes_like_a_split_on_newline(chunks: list[bytes]) -> None:
    buffer = LineBuffer(max_line_bytes=64)
    lines: list[bytes] = []
    try:
        for chunk in chunks:
            buffer.feed(chunk)
            while (line := buffer.next_line()) is not None:
                lines.append(line)
    except LineTooLong:
        return  # a line over 64 bytes: refused, as it must be
    data = b"".join(chunks)
    expected = [line.removesuffix(b"\r") for line in data.split(b"\n")[:-1]]
    assert lines == expected
    assert len(buffer) == len(data.split(b"\n")[-1])


replies = st.one_of(
    st.builds(
        lambda text: (simple(text), Reply(ReplyKind.SIMPLE, text)),
        st.text("abcOK {}:\"'", max_size=9).filter(lambda text: text != "OK"),
    ),
    st.builds(
        lambda message: (error("ERR", message), Reply(ReplyKind.ERROR, "ERR " + message)),
        st.text("xyz ", max_size=9),
    ),
    st.builds(lambda data: (bulk(data), Reply(ReplyKind.BULK, data=data)), st.binary(max_size=50)),
    st.just((b"+OK\r\n", Reply(ReplyKind.OK, "OK"))),
    st.just((b"$-1\r\n", Reply(ReplyKind.NULL))),
)


@given(st.lists(replies, max_size=8), st.lists(st.integers(1, 30), max_size=10))
def test_reply_reader_reads_back_what_the_encoders_wrote(
    sent: list[tuple[bytes, Reply]], cuts: list[int]
) -> None:
    data = b"".join(wire for wire, _ in sent)
    reader = ReplyReader()
    got: list[Reply] = []
    position = 0
    for size in [*cuts, len(data)]:
        reader.feed(data[position : position + size])
        position += size
        while (reply := reader.next_reply()) is not None:
            got.append(reply)
    assert got == [reply for _, reply in sent]


@given(st.binary(max_size=200))
def test_reply_reader_fails_only_with_its_own_errors(data: bytes) -> None:
    reader = ReplyReader(max_bulk_bytes=100, max_line_bytes=100)
    reader.feed(data)
    try:
        while reader.next_reply() is not None:
            pass
    except (ProtocolError, LineTooLong):
        pass


@given(st.text(max_size=60))
def test_an_error_reply_is_always_one_line(message: str) -> None:
    wire = error("ERR", message)
    assert wire.endswith(b"\r\n")
    assert wire.count(b"\n") == 1


hello_payloads = st.one_of(
    st.binary(max_size=80),
    st.builds(lambda v: b"HELLO " + msgspec.json.encode(v), json_values),
    st.builds(
        lambda d: b"HELLO " + msgspec.json.encode(d),
        st.dictionaries(
            st.sampled_from(["hostname", "wid", "pid", "labels", "v", "pwdhash", "PID", "x"]),
            json_values,
        ),
    ),
)


@given(hello_payloads)
def test_decode_hello_takes_anything(line: bytes) -> None:
    assert decode_hello(line) is None or line.startswith(b"HELLO {")


# ------------------------------------------------------------------ PUSH / PUSHB validation


@given(valid_jobs)
def test_valid_jobs_round_trip_exactly(pushed: dict[str, Any]) -> None:
    job = decode_pushed(msgspec.json.encode(pushed), CONFIG)
    prepare_job(job, CONFIG)
    stored = msgspec.json.decode(encode_job(decode_job(encode_job(job))))
    for field in ("jid", "jobtype", "args", "custom", "reserve_for", "at", "backtrace"):
        if field in pushed and pushed[field] not in (0, None):
            assert stored[field] == pushed[field], field
    assert stored["queue"] == pushed.get("queue", "default")
    assert stored["retry"] == pushed.get("retry", 25)


@given(
    st.one_of(
        st.binary(max_size=100),
        st.builds(msgspec.json.encode, json_values),
        st.builds(msgspec.json.encode, broken_jobs()),
    )
)
def test_any_payload_is_a_job_or_invalid_job(payload: bytes) -> None:
    refused: InvalidJob | None = None
    try:
        job = decode_pushed(payload, CONFIG)
        prepare_job(job, CONFIG)
    except InvalidJob as exc:  # anything else fails the test
        refused = exc
    if refused is not None:
        assert refused.code == "ERR"
        assert "\n" not in refused.message


junk_elements = json_values.filter(lambda v: not (isinstance(v, dict) and "jid" in v))
pushb_elements = st.one_of(
    st.tuples(st.just("valid"), valid_jobs),
    st.tuples(st.just("broken"), broken_jobs()),
    st.tuples(st.just("junk"), junk_elements),  # no jid: never a valid job
)


@pytest.fixture
async def bulk_manager() -> AsyncIterator[Manager]:
    manager = Manager(open_store("memory://"), CONFIG)
    await manager.start()
    yield manager
    await manager.stop()


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(pushb_elements, max_size=8))
async def test_pushb_keeps_every_valid_job_and_names_every_refusal(
    bulk_manager: Manager, drawn: list[tuple[str, Any]]
) -> None:
    elements = [element for _, element in drawn]
    keys = []
    for index, element in enumerate(elements):
        jid = element.get("jid") if isinstance(element, dict) else None
        keys.append(jid if isinstance(jid, str) and jid else f"#{index}")
    assume(len(set(keys)) == len(keys))
    await bulk_manager.flush()
    errors = await bulk_manager.push_bulk(msgspec.json.encode(elements))
    stored = sum((await bulk_manager.store.queue_sizes()).values())
    stored += await bulk_manager.store.set_size(SortedSet.SCHEDULED)
    for (kind, _), key in zip(drawn, keys, strict=True):
        if kind == "valid":
            assert key not in errors, errors[key]
        elif kind == "junk":
            assert key in errors
    assert set(errors) <= set(keys)
    assert stored == len(elements) - len(errors)  # each element stored, or refused by name


# ------------------------------------------------------------------ a real server


deep_json = st.sampled_from([65, 1000, 3000]).map(lambda n: b"[" * n + b"]" * n)
deep_lines = st.builds(
    lambda verb, opening, deep: (
        verb + b" " + opening + deep + (b"}" if opening[:1] == b"{" else b"]")
    ),
    st.sampled_from([b"PUSH", b"PUSHB", b"FAIL", b"BEAT", b"MUTATE", b"ACK", b"ACKB", b"HELLO"]),
    st.sampled_from([b'{"jid":"deep-job","jobtype":"T","args":', b'{"jid":"deep-job","x":', b"["]),
    deep_json,
)
command_lines = st.one_of(
    deep_lines,
    st.binary(max_size=120).map(no_newline),
    st.tuples(
        st.sampled_from([*sorted(set(COMMANDS) - {"END"}), "HELLO", "push", "QUEUE PAUSE"]),
        st.one_of(
            st.none(),
            st.binary(max_size=80),
            st.builds(msgspec.json.encode, json_values),
            st.builds(msgspec.json.encode, broken_jobs()),
            st.builds(msgspec.json.encode, st.lists(broken_jobs(), max_size=3)),
            st.text(max_size=30).map(str.encode),
            deep_json,  # past the 64-level limit, or past msgspec's recursion
            deep_json.map(lambda deep: b'{"jid":"deep-job","x":' + deep + b"}"),
        ),
    ).map(
        lambda parts: no_newline(parts[0].encode() + (b"" if parts[1] is None else b" " + parts[1]))
    ),
)
SYNC = b"SYNC-fuzz"


@pytest.fixture
async def fuzz_conn(make_server: MakeServer, raw_client: RawConnect) -> RawClient:
    running = await make_server(config=ManagerConfig(fetch_wait_seconds=0.01))
    return await raw_client(running.port)


@settings(SERVER_SETTINGS, max_examples=200)
@given(command_lines)
async def test_every_command_line_gets_exactly_one_reply(fuzz_conn: RawClient, line: bytes) -> None:
    assume(line.split(b" ", 1)[0] != b"END")
    fuzz_conn.writer.write(line + b"\r\n" + SYNC + b"\r\n")
    reply = await fuzz_conn.reply(within=5)
    assert reply[:1] in (b"+", b"-", b"$"), (line, reply)
    assert reply.endswith(b"\r\n")
    assert reply != b"-ERR internal error\r\n", line
    assert await fuzz_conn.reply(within=5) == b"-ERR unknown command " + SYNC + b"\r\n", line


@settings(SERVER_SETTINGS, max_examples=50)
@given(st.lists(valid_jobs, min_size=1, max_size=3))
async def test_valid_jobs_round_trip_through_the_server(
    fuzz_conn: RawClient, pushed: list[dict[str, Any]]
) -> None:
    jids = [job["jid"] for job in pushed]
    assume(len(set(jids)) == len(jids))
    for job in pushed:
        job.pop("at", None)  # enqueued now, so FETCH finds it
        job["queue"] = "roundtrip"
        reply = await fuzz_conn.call(b"PUSH " + msgspec.json.encode(job))
        assert reply == b"+OK\r\n", reply
    for job in pushed:
        reply = await fuzz_conn.call(b"FETCH roundtrip")
        fetched = msgspec.json.decode(reply.partition(b"\r\n")[2][:-2])
        assert fetched["jid"] == job["jid"]
        assert fetched["args"] == job["args"]
        assert fetched.get("custom") == job.get("custom")
        assert await fuzz_conn.call(b'ACK {"jid":' + msgspec.json.encode(job["jid"]) + b"}") == (
            b"+OK\r\n"
        )


@settings(SERVER_SETTINGS, max_examples=60)
@given(hello_payloads.map(no_newline))
async def test_any_first_line_gets_ok_or_a_silent_close(server: RunningServer, line: bytes) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        await reader.readline()
        writer.write(line + b"\r\n")
        answer = await asyncio.wait_for(reader.read(100), 5)
        assert answer in (b"+OK\r\n", b""), (line, answer)
    finally:
        writer.close()
