"""OpenTelemetry: the SDK's in-memory exporter records a push span and a run span per job,
joined through the W3C trace context in ``custom``, with a real server and a real worker."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import conveyor
from conveyor.client import Client
from conveyor.contrib.otel import instrument
from tests.support.server import RunningServer


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def by_name(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [span for span in spans if span.name == name]


async def test_push_and_run_spans_share_a_trace(
    server: RunningServer, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    app = conveyor.App(server.url)
    instrument(app, tracer_provider=provider)
    tracer = provider.get_tracer("test")
    inside: list[str] = []

    @app.job(queue="mail")
    async def send_email(to: str) -> None:
        with tracer.start_as_current_span("render template"):
            inside.append(to)

    @app.job(retry=0)
    async def broken() -> None:
        raise ValueError("no luck")

    with tracer.start_as_current_span("web request") as request:
        jid = await send_email.push("a@example.com")
        bad = await broken.push()
    results = await app.push_bulk([send_email.build("b@example.com")])
    assert results[0].ok
    await conveyor.testing.drain(app, queues=["mail", "default"])
    spans = exporter.get_finished_spans()

    sends = by_name(spans, "send send_email")
    assert len(sends) == 2
    first = next(s for s in sends if s.attributes["messaging.message.id"] == jid)
    assert first.kind is SpanKind.PRODUCER
    assert first.parent is not None
    assert first.parent.span_id == request.get_span_context().span_id
    assert first.attributes["messaging.destination.name"] == "mail"
    assert first.attributes["messaging.operation.type"] == "send"
    assert first.attributes["conveyor.jobtype"] == "send_email"

    runs = by_name(spans, "process send_email")
    assert len(runs) == 2
    run = next(s for s in runs if s.attributes["messaging.message.id"] == jid)
    assert run.kind is SpanKind.CONSUMER
    assert run.context.trace_id == request.get_span_context().trace_id
    assert run.parent is not None
    assert run.parent.span_id == first.context.span_id
    assert run.attributes["conveyor.retry_count"] == 0
    assert run.attributes["conveyor.worker.id"]
    assert run.status.status_code is StatusCode.UNSET
    # a span made inside the job nests under the run
    template = by_name(spans, "render template")
    assert {s.parent.span_id for s in template if s.parent} == {r.context.span_id for r in runs}
    # the bulk push had no current span: its job starts a trace of its own
    other = next(s for s in runs if s.attributes["messaging.message.id"] != jid)
    assert other.context.trace_id != request.get_span_context().trace_id

    (failed,) = by_name(spans, "process broken")
    assert failed.attributes["messaging.message.id"] == bad
    assert failed.status.status_code is StatusCode.ERROR
    assert any(event.name == "exception" for event in failed.events)
    assert sorted(inside) == ["a@example.com", "b@example.com"]
    await app.aclose()


async def test_trace_context_from_another_language_is_continued_and_left_intact(
    server: RunningServer, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """A job pushed by any client with ``custom.traceparent`` runs as a child of it; the
    worker leaves ``custom`` as it was, for the next language that reads it."""
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    parent_id = "00f067aa0ba902b7"
    custom = {"traceparent": f"00-{trace_id}-{parent_id}-01", "tracestate": "vendor=x", "n": 1}
    app = conveyor.App(server.url)
    instrument(app, tracer_provider=provider)
    seen: list[dict[str, object]] = []

    @app.job(retry=1)
    async def Resize() -> None:
        job = conveyor.current_job().job
        seen.append(dict(job.custom or {}))
        if len(seen) == 1:
            raise RuntimeError("first try fails")

    async with await Client.connect(server.url) as client:
        await client.push({"jid": "go-job-0001", "jobtype": "Resize", "args": [], "custom": custom})
    await conveyor.testing.drain(app)
    assert seen == [custom]  # ran once; the retry waits in the retry set
    found = await server.manager.locate("go-job-0001")
    assert found is not None
    assert conveyor.job.decode_job(found.payload).custom == custom
    (run,) = by_name(exporter.get_finished_spans(), "process Resize")
    assert format(run.context.trace_id, "032x") == trace_id
    assert run.parent is not None
    assert format(run.parent.span_id, "016x") == parent_id
    assert run.parent.is_remote
    assert run.status.status_code is StatusCode.ERROR
    await app.aclose()


async def test_without_instrumenting_nothing_is_added(server: RunningServer) -> None:
    app = conveyor.App(server.url)
    tracer = trace.get_tracer("test")
    with tracer.start_as_current_span("outside"):
        job = await app.push_job(conveyor.Job(jid="plain-job-01", jobtype="X", args=[]))
    found = await server.manager.locate(job)
    assert found is None or conveyor.job.decode_job(found.payload).custom is None
    queued = await server.manager.list_queue("default", 0, 10)
    assert [conveyor.job.decode_job(q.payload).custom for q in queued.items] == [None]
    await app.aclose()


def test_conveyor_works_without_opentelemetry_installed() -> None:
    """Only conveyor.contrib.otel needs the extra: the rest imports and runs without it."""
    import subprocess
    import sys

    script = (
        "import sys; sys.modules['opentelemetry'] = None\n"  # as if it were not installed
        "import conveyor, conveyor.worker.runtime, conveyor.server.app, conveyor.metrics.worker\n"
        "try:\n    import conveyor.contrib.otel\nexcept ImportError:\n    print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.stdout.strip() == "ok", result.stderr
