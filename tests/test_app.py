"""Declaring jobs, the args mapping, producing (options, bulk, sync facade), inline testing."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import time
import types
from typing import Any, TypedDict

import msgspec
import pydantic
import pytest

import conveyor
import conveyor.job
import conveyor.manager
import conveyor.testing
from conveyor.app import PayloadKind
from conveyor.timefmt import parse_time
from tests.support.server import MakeServer, RunningServer


@dataclasses.dataclass
class Email:
    to: str
    subject: str = "hi"
    when: dt.datetime | None = None


class Resize(msgspec.Struct):
    path: str
    width: int


class Invoice(pydantic.BaseModel):
    number: int
    total: float


class Point(TypedDict):
    x: int
    y: int


app = conveyor.App()


@app.job(queue="emails", retry=5, timeout=30, backtrace=10, custom={"team": "growth"})
async def send_email(msg: Email) -> str:
    return f"sent to {msg.to}"


@app.job
def resize(task: Resize) -> int:
    return task.width


@app.job
async def bill(invoice: Invoice) -> float:
    return invoice.total


@app.job(name="geo.point")
async def point(p: Point) -> int:
    return p["x"] + p["y"]


@app.job
def add(a: int, b: int = 10) -> int:
    return a + b


@app.job
async def untyped(a, b):  # type: ignore[no-untyped-def]
    return [a, b]


@app.job(raw=True)
async def raw_handler(job: conveyor.Job) -> str:
    return job.jid


@app.job
async def job_param(job: conveyor.Job) -> str:
    return job.jobtype


def test_payload_kinds_follow_the_signature() -> None:
    assert send_email.payload.kind is PayloadKind.MODEL
    assert resize.payload.kind is PayloadKind.MODEL
    assert bill.payload.kind is PayloadKind.MODEL
    assert point.payload.kind is PayloadKind.MODEL
    assert add.payload.kind is PayloadKind.POSITIONAL
    assert untyped.payload.kind is PayloadKind.POSITIONAL
    assert raw_handler.payload.kind is PayloadKind.RAW
    assert job_param.payload.kind is PayloadKind.RAW


def test_build_maps_models_to_one_json_object_and_options_to_job_fields() -> None:
    job = send_email.build(Email("a@b.c", when=dt.datetime(2030, 1, 2, tzinfo=dt.UTC)))
    assert job.jobtype == "send_email"
    assert job.queue == "emails"
    assert job.retry == 5
    assert job.backtrace == 10
    assert job.custom == {"team": "growth"}
    assert job.args == [{"to": "a@b.c", "subject": "hi", "when": "2030-01-02T00:00:00Z"}]
    assert len(job.jid) == 24
    assert bill.build(Invoice(number=1, total=2.5)).args == [{"number": 1, "total": 2.5}]
    assert point.build({"x": 1, "y": 2}).jobtype == "geo.point"
    assert add.build(1, 2).args == [1, 2]


def test_options_builder_overrides_and_merges_without_touching_the_declaration() -> None:
    when = dt.datetime(2031, 5, 6, 7, 8, 9, tzinfo=dt.UTC)
    job = send_email.options(
        queue="critical", at=when, retry=0, reserve_for=120, custom={"x": 1}, jid="j" * 10
    ).build(Email("z"))
    assert (job.queue, job.retry, job.reserve_for, job.jid) == ("critical", 0, 120, "j" * 10)
    assert job.custom == {"team": "growth", "x": 1}
    assert job.at == "2031-05-06T07:08:09Z"
    delayed = add.options(in_=dt.timedelta(minutes=5)).build(1)
    assert abs(parse_time(delayed.at) - (time.time() + 300)) < 5
    assert send_email.build(Email("z")).queue == "emails"  # the declaration is unchanged


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: add.build(), "takes 1-2 args, got 0"),
        (lambda: add.build(1, 2, 3), "takes 1-2 args, got 3"),
        (lambda: send_email.build(Email("a"), Email("b")), "takes one Email"),
        (lambda: add.build(a=1), "positional"),
        (lambda: add.options(at=dt.datetime(2030, 1, 1)).build(1), "timezone-aware"),
        (lambda: add.options(in_=5, at=dt.datetime.now(dt.UTC)).build(1), "either at= or in_="),
    ],
)
def test_bad_calls_raise_clear_errors(call: Any, message: str) -> None:
    with pytest.raises((TypeError, ValueError), match=message):
        call()


def test_declaring_twice_or_bad_options_is_refused() -> None:
    local = conveyor.App()

    @local.job
    def once() -> None: ...

    with pytest.raises(ValueError, match="already declared"):
        local.register(once.fn)
    with pytest.raises(ValueError, match="timeout must be positive"):
        local.register(lambda: None, name="x", timeout=0)


def test_calling_a_jobdef_runs_the_function_directly() -> None:
    assert add(1, 2) == 3
    assert resize(Resize("p", 5)) == 5


async def test_inline_runs_through_json_validation_and_returns_results() -> None:
    with conveyor.testing.inline(app) as ran:
        await send_email.push(Email("a@b.c"))
        await resize.push(Resize("p.png", 640))
        await bill.push(Invoice(number=7, total=9.5))
        await add.push(1)
        await untyped.push("x", [1])
        jid = await raw_handler.push("anything")
    assert ran.results == ["sent to a@b.c", 640, 9.5, 11, ["x", [1]], jid]


async def test_inline_reraises_errors_and_validation_failures() -> None:
    local = conveyor.App()

    @local.job
    async def boom() -> None:
        raise KeyError("nope")

    @local.job
    async def typed(msg: Email) -> None: ...

    with conveyor.testing.inline(local) as ran:
        with pytest.raises(KeyError):
            await boom.push()
        with pytest.raises(conveyor.PayloadError, match="invalid Email"):
            await local.push_job(conveyor.Job(jid="x" * 10, jobtype="typed", args=[{"to": 5}]))
    assert ran.outcomes[0].errtype == "KeyError"
    assert ran.outcomes[1].errtype == "conveyor.PayloadError"
    assert ran.outcomes[1].dead


@pytest.mark.parametrize(
    ("jobdef", "args", "message"),
    [
        (send_email, [], "args must be one JSON object"),
        (send_email, ["a@b.c"], "got a JSON str"),
        (send_email, [{"subject": "x"}], "missing required field `to`"),
        (resize, [{"path": "p", "width": "wide"}], "Expected `int`"),
        (bill, [{"number": "x", "total": 1}], "invalid Invoice"),
        (point, [{"x": 1}], "missing required field `y`"),
        (add, ["one"], "argument 'a'"),
        (add, [1, 2, 3], "takes 1-2 args, got 3"),
    ],
)
def test_worker_side_validation_rejects_bad_args(
    jobdef: Any, args: list[Any], message: str
) -> None:
    job = conveyor.Job(jid="x" * 10, jobtype=jobdef.name, args=args)
    with pytest.raises(conveyor.PayloadError, match=message):
        jobdef.payload.decode(job)


def test_worker_side_conversion_accepts_what_other_languages_send() -> None:
    job = conveyor.Job(jid="x" * 10, jobtype="send_email", args=[{"to": "a", "extra": 1}])
    (email,) = send_email.payload.decode(job)
    assert email == Email("a")  # unknown keys from other clients are ignored
    job = conveyor.Job(jid="x" * 10, jobtype="add", args=[3])
    assert add.payload.decode(job) == (3,)


async def test_validation_failure_goes_to_the_dead_set_not_retries(server: RunningServer) -> None:
    local = conveyor.App(server.url)

    @local.job(retry=25)
    async def typed(msg: Email) -> None:
        raise AssertionError("never called")

    jid = await local.push_job(
        conveyor.Job(jid="bad-payload-1", jobtype="typed", args=["not an object"], retry=25)
    )
    worker = await conveyor.testing.drain(local)
    assert worker.failed == 1
    found = await server.manager.locate(jid)
    assert found is not None
    assert found.where == "dead"
    failure = conveyor.job.decode_job(found.payload).failure
    assert failure is not None
    assert failure["errtype"] == "conveyor.PayloadError"
    assert "args must be one JSON object for Email" in failure["message"]
    await local.aclose()


async def test_push_bulk_returns_one_result_per_job_in_order(server: RunningServer) -> None:
    local = conveyor.App(server.url)

    @local.job
    async def thing(n: int) -> None: ...

    jobs = [thing.build(1), thing.options(queue="bad queue!").build(2), thing.build(3)]
    results = await local.push_bulk(jobs)
    assert [r.jid for r in results] == [j.jid for j in jobs]
    assert [r.ok for r in results] == [True, False, True]
    assert results[1].error is not None
    assert "queue" in results[1].error
    info = await server.manager.info(conveyor.manager.ServerStats())
    assert info["faktory"]["queues"]["default"] == 2
    await local.aclose()


async def test_push_bulk_of_many_chunks_lands_in_order(make_server: MakeServer) -> None:
    # 2,500 jobs = PUSHBs of 1,000, 1,000 and 500, pipelined; the middle one is over the
    # server's line limit, so each of its jobs gets the server's error; the server closes
    # the connection after it, and the last chunk goes again on a new one.
    server = await make_server(max_line_bytes=200_000)
    local = conveyor.App(server.url)

    @local.job(queue="bulk")
    async def item(n: int, pad: str = "") -> None: ...

    jobs = [item.build(n, "x" * 300 if 1000 <= n < 2000 else "") for n in range(2500)]
    results = await local.push_bulk(jobs)
    await local.aclose()
    assert [r.jid for r in results] == [j.jid for j in jobs]
    assert [r.ok for r in results] == [True] * 1000 + [False] * 1000 + [True] * 500
    assert {r.error for r in results[1000:2000]} == {"line too long (max 200000 bytes)"}
    client = await local.connect()
    try:
        fetched = await client.fetch_many(1000, "bulk") + await client.fetch_many(1000, "bulk")
    finally:
        await client.close()
    expected = list(range(1000)) + list(range(2000, 2500))
    assert [job["args"][0] for job in fetched] == expected


async def test_push_bulk_cuts_chunks_by_size_too(make_server: MakeServer) -> None:
    # 40 jobs of ~1.5 KB are 60 KB: one chunk by count, over the server's 20,000-byte line
    # limit. Chunked under push_bulk_max_bytes they all land, in order; a job longer than
    # the line limit alone is refused alone (and its connection closed), the rest go on.
    server = await make_server(max_line_bytes=20_000)
    local = conveyor.App(server.url, push_bulk_max_bytes=16_000)

    @local.job(queue="sized")
    async def item(n: int, pad: str) -> None: ...

    jobs = [
        item.build(n, ("y" if n == 20 else "x") * (25_000 if n == 20 else 1500)) for n in range(40)
    ]
    results = await local.push_bulk(jobs)
    await local.aclose()
    assert [r.jid for r in results] == [j.jid for j in jobs]
    assert [r.error for r in results if not r.ok] == ["line too long (max 20000 bytes)"]
    assert not results[20].ok
    queued = (await server.manager.store.list_queue("sized", 0, 100)).items
    assert [msgspec.json.decode(j.payload)["args"][0] for j in queued] == [
        n for n in range(40) if n != 20
    ]


async def test_push_bulk_of_big_jobs_by_default(server: RunningServer) -> None:
    # 900 jobs of 20 KB: 18 MB, one PUSHB by count, over the server's default 16 MiB line
    # limit (which refused the whole chunk); the default size limit cuts it in ~18.
    local = conveyor.App(server.url)

    @local.job(queue="big")
    async def item(n: int, pad: str) -> None: ...

    jobs = [item.build(n, "z" * 20_000) for n in range(900)]
    results = await local.push_bulk(jobs)
    await local.aclose()
    assert [r.error for r in results if not r.ok] == []
    assert (await server.manager.store.queue_sizes())["big"] == 900


def test_push_bulk_max_bytes_must_hold_a_line() -> None:
    with pytest.raises(ValueError, match="push_bulk_max_bytes must be at least 1024"):
        conveyor.App(push_bulk_max_bytes=100)


async def _cutting_proxy(target_port: int, cut_after_lines: int) -> asyncio.Server:
    """Forwards FWP connections to ``target_port``; the first one is closed once the client
    has been sent ``cut_after_lines`` reply lines (the server still reads what was sent)."""
    first = True
    limit = 16 * 1024 * 1024  # a PUSHB line is far longer than asyncio's 64 KiB default

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, cut: int) -> None:
        lines = 0
        while line := await reader.readline():
            writer.write(line)
            lines += 1
            if lines == cut:
                break
        writer.close()

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        nonlocal first
        cut, first = (cut_after_lines if first else 0), False
        server_r, server_w = await asyncio.open_connection("127.0.0.1", target_port, limit=limit)
        await asyncio.gather(
            pipe(client_r, server_w, 0), pipe(server_r, client_w, cut), return_exceptions=True
        )
        for writer in (client_w, server_w):
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    return await asyncio.start_server(handle, "127.0.0.1", 0, limit=limit)


async def test_push_bulk_resumes_after_a_broken_connection(server: RunningServer) -> None:
    # Replies on the wire: +HI, +OK (HELLO), then "$2" and "{}" per PUSHB. The proxy cuts
    # the first connection after the first PUSHB's reply: chunk 1 answered, chunk 2 sent
    # but unanswered. The pool reconnects and push_bulk resumes with chunk 2.
    proxy = await _cutting_proxy(server.port, cut_after_lines=4)
    port = proxy.sockets[0].getsockname()[1]
    local = conveyor.App(f"tcp://127.0.0.1:{port}")

    @local.job(queue="resume")
    async def item(n: int) -> None: ...

    jobs = [item.build(n) for n in range(3000)]
    try:
        results = await local.push_bulk(jobs)
    finally:
        await local.aclose()
        proxy.close()
        await proxy.wait_closed()
    assert [r.jid for r in results] == [j.jid for j in jobs]
    assert all(r.ok for r in results)
    queued = [
        msgspec.json.decode(job.payload)["args"][0]
        for job in (await server.manager.store.list_queue("resume", 0, 10_000)).items
    ]
    # chunk 1 exactly once (not resent); chunk 2 at least once (its reply was lost, so it
    # may have landed twice: at-least-once); chunk 3 exactly once, after them
    assert queued[:1000] == list(range(1000))
    assert sorted(set(queued)) == list(range(3000))
    assert queued[-1000:] == list(range(2000, 3000))
    assert len(queued) in (3000, 4000)


def test_sync_facade_pushes_from_plain_code(
    conveyor_server: conveyor.testing.TestServer,
) -> None:
    local = conveyor.App(conveyor_server.url)

    @local.job(queue="sync")
    def work(n: int) -> None: ...

    try:
        jid = work.push_sync(1)
        results = local.push_bulk_sync([work.build(2), work.build(3)])
    finally:
        local.close()
    assert len(jid) == 24
    assert all(r.ok for r in results)
    info = conveyor_server.call(conveyor_server.manager.info(conveyor.manager.ServerStats()))
    assert info["faktory"]["queues"]["sync"] == 3


async def test_sync_facade_refuses_to_block_a_running_loop() -> None:
    with pytest.raises(RuntimeError, match="await the async one"):
        add.push_sync(1)


def test_testing_server_fixture_with_sync_push_and_burst_worker(
    conveyor_server: conveyor.testing.TestServer,
) -> None:
    import asyncio

    local = conveyor.App(conveyor_server.url)
    seen: list[int] = []

    @local.job
    def collect(n: int) -> None:
        seen.append(n)

    for i in range(3):
        collect.push_sync(i)
    local.close()
    worker = asyncio.run(conveyor.testing.drain(local))
    assert sorted(seen) == [0, 1, 2]
    assert worker.processed == 3


def test_public_names_match_all() -> None:
    public = {
        name
        for name in dir(conveyor)
        if not name.startswith("_") and not isinstance(getattr(conveyor, name), types.ModuleType)
    }
    assert set(conveyor.__all__) - {"__version__"} == public
    assert len(conveyor.__all__) == len(set(conveyor.__all__))


def test_unresolvable_model_annotation_is_a_clear_error_at_declaration() -> None:
    local = conveyor.App()

    def declare() -> None:
        class Hidden(msgspec.Struct):  # local: invisible to get_type_hints
            x: int

        @local.job
        async def uses_hidden(h: Hidden) -> None: ...

    with pytest.raises(TypeError, match=r"cannot resolve the type of .*'h'.*module level"):
        declare()
