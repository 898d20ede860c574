"""OpenTelemetry for conveyor apps: a span for each push and each run, joined by the W3C trace
context that travels in the job's ``custom``.

    import conveyor
    from conveyor.contrib.otel import instrument

    app = conveyor.App()
    instrument(app)              # before the worker starts and before the first push

* **push** (producer side): a ``PRODUCER`` span ``send <jobtype>`` per job, current while the
  job is sent, and its context written into ``custom`` under the propagator's keys --
  ``traceparent`` and ``tracestate`` with the default W3C propagator (plus ``baggage`` when
  there is some). Any language can read them there: ``custom`` is free-form in Faktory.
* **run** (worker side): a ``CONSUMER`` span ``process <jobtype>``, a child of the context
  found in ``custom`` (pushed by Python or by any client that put a ``traceparent`` there),
  current while the handler runs, so spans made inside the job nest under it. An exception
  is recorded on it and sets its status to ERROR.

The worker never removes or rewrites ``custom``: a job pushed here with a trace context and
run by a worker in another language keeps it intact, retries included.

Attributes (OpenTelemetry's messaging conventions): ``messaging.system`` = ``conveyor``,
``messaging.operation.type`` (``send`` / ``process``), ``messaging.destination.name`` (the
queue), ``messaging.message.id`` (the jid), and ``conveyor.jobtype``; on a run also
``conveyor.retry_count`` (0 on the first run) and ``conveyor.worker.id``.

Needs the ``otel`` extra (``opentelemetry-api``); conveyor itself never imports this module.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry import propagate, trace
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.trace import SpanKind, Status, StatusCode, TracerProvider

from conveyor import __version__
from conveyor.job import Job
from conveyor.worker.context import Handler, JobContext

if TYPE_CHECKING:
    from conveyor.app.core import App

__all__ = ["instrument", "job_attributes"]

SYSTEM = "conveyor"


def job_attributes(job: Job, operation: str) -> dict[str, Any]:
    return {
        "messaging.system": SYSTEM,
        "messaging.operation.type": operation,
        "messaging.destination.name": job.queue or "default",
        "messaging.message.id": job.jid,
        "conveyor.jobtype": job.jobtype,
    }


def instrument(
    app: App,
    *,
    tracer_provider: TracerProvider | None = None,
    propagator: TextMapPropagator | None = None,
) -> None:
    """Trace every push and every run of ``app``'s jobs (see the module docstring).

    ``tracer_provider``: default, the global one. ``propagator``: default, the global one
    (W3C trace context and baggage unless configured otherwise)."""
    tracer = trace.get_tracer("conveyor", __version__, tracer_provider=tracer_provider)
    inject = propagator.inject if propagator is not None else propagate.inject
    extract = propagator.extract if propagator is not None else propagate.extract

    async def traced_push(jobs: Sequence[Job], call_next: Callable[[], Awaitable[None]]) -> None:
        spans = []
        for job in jobs:
            attributes = job_attributes(job, "send")
            span = tracer.start_span(
                f"send {job.jobtype}", kind=SpanKind.PRODUCER, attributes=attributes
            )
            carrier: dict[str, str] = {}
            inject(carrier, context=trace.set_span_in_context(span))
            if carrier:
                job.custom = {**(job.custom or {}), **carrier}
            spans.append(span)
        try:
            if len(spans) == 1:  # a plain push: its span is current while it is sent
                with trace.use_span(spans[0], end_on_exit=False):
                    await call_next()
            else:
                await call_next()
        except BaseException as exc:
            for span in spans:
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            raise
        finally:
            for span in spans:
                span.end()

    def traced_run(handler: Handler) -> Handler:
        async def run(ctx: JobContext) -> Any:
            job = ctx.job
            carrier = {k: v for k, v in (job.custom or {}).items() if isinstance(v, str)}
            attributes = job_attributes(job, "process")
            failure = job.failure or {}
            count = failure.get("retry_count")
            attributes["conveyor.retry_count"] = count + 1 if isinstance(count, int) else 0
            if ctx.wid:
                attributes["conveyor.worker.id"] = ctx.wid
            with tracer.start_as_current_span(
                f"process {job.jobtype}",
                context=extract(carrier),
                kind=SpanKind.CONSUMER,
                attributes=attributes,
            ):
                return await handler(ctx)

        return run

    app.use_push(traced_push)
    app.use(traced_run)
