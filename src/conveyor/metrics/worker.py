"""A Python worker's own metrics: ``conveyor worker --metrics-bind HOST:PORT``.

The jobs this process ran, by queue and jobtype and outcome, their run times, and how full the
worker is. Served by ``prometheus_client``'s HTTP server in a daemon thread; the counters are
plain dicts bumped in the event loop (``stats.py``), copied when a scrape reads them.

With ``--processes N`` each process listens on PORT + its slot number (0 .. N-1).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import (
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import CollectorRegistry

from conveyor.config import parse_bind
from conveyor.metrics.stats import Counters, Histograms
from conveyor.worker.execute import Outcome
from conveyor.worker.supervisor import SLOT_ENV

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from conveyor.worker.runtime import Worker

__all__ = ["SLOT_ENV", "WorkerMetrics"]


JOB_LABELS = ("queue", "jobtype")


class WorkerMetrics:
    def __init__(self, *, process_metrics: bool = True) -> None:
        self.succeeded = Counters()
        self.failed = Counters()
        self.durations = Histograms()
        self.registry = CollectorRegistry()
        if process_metrics:
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
            GCCollector(registry=self.registry)
        self.registry.register(self)
        self._worker: Worker | None = None
        self._server: WSGIServer | None = None

    def attach(self, worker: Worker) -> None:
        self._worker = worker

    def on_outcome(self, outcome: Outcome, *, interrupted: bool = False) -> None:
        job = outcome.job
        labels = (job.queue, job.jobtype)
        if outcome.error is None:
            self.succeeded.add(labels)
        else:
            self.failed.add(labels)
        if outcome.duration is not None and not interrupted:
            self.durations.observe(labels, outcome.duration)

    def collect(self) -> Iterator[Metric]:
        yield self.succeeded.family(
            "conveyor_worker_jobs_succeeded", "Jobs this worker ran to success.", JOB_LABELS
        )
        yield self.failed.family(
            "conveyor_worker_jobs_failed",
            "Jobs that failed in this worker (an error, a timeout, or a stop mid-job).",
            JOB_LABELS,
        )
        yield self.durations.family(
            "conveyor_worker_job_run_duration_seconds",
            "How long jobs ran in this worker.",
            JOB_LABELS,
        )
        worker = self._worker
        if worker is None:
            return
        busy = GaugeMetricFamily("conveyor_worker_busy", "Jobs running now.")
        busy.add_metric([], worker.busy)
        yield busy
        slots = GaugeMetricFamily("conveyor_worker_concurrency", "Jobs that may run at once.")
        slots.add_metric([], worker.concurrency)
        yield slots
        unsent = GaugeMetricFamily(
            "conveyor_worker_unsent_results", "Job results not yet acknowledged by the server."
        )
        unsent.add_metric([], worker.unsent_results)
        yield unsent
        info = GaugeMetricFamily(
            "conveyor_worker_info", "This worker's identity (always 1).", labels=("wid", "state")
        )
        info.add_metric([worker.wid, worker.state], 1)
        yield info

    # -- serving ---------------------------------------------------------------------------------

    def serve(self, bind: str) -> tuple[str, int]:
        """Listen on ``bind`` (``HOST:PORT``; with ``CONVEYOR_WORKER_SLOT`` set, PORT + slot,
        port 0 = any free port); returns the address bound."""
        host, port = parse_bind(bind, "--metrics-bind")
        slot = os.environ.get(SLOT_ENV, "")
        if port and slot.isdigit():
            port += int(slot)
        self._server, _ = start_http_server(port, host, registry=self.registry)
        address = self._server.server_address
        return str(address[0]), int(address[1])

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
