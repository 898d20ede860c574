"""Operations telemetry: Prometheus metrics of the server and the worker, statsd push.

* ``JobMetrics`` (``jobs.py``): what the manager counts about jobs, by queue and jobtype;
* ``ServerCollector`` (``server.py``): everything ``/metrics`` on the web port exports;
* ``WorkerMetrics`` (``worker.py``): what ``conveyor worker --metrics-bind`` exports;
* ``StatsdReporter`` (``statsd.py``): the same numbers pushed to statsd / DogStatsD.

Every name is listed in docs/operations.md.
"""

from conveyor.metrics.jobs import JobMetrics

__all__ = ["JobMetrics"]
