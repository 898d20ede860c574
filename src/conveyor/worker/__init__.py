"""The worker runtime: ``Worker``, the job context, hooks and middleware types."""

from conveyor.worker.context import (
    AfterHook,
    BeforeHook,
    ErrorHandler,
    Handler,
    JobContext,
    Middleware,
    current_job,
)
from conveyor.worker.execute import JobRunner, JobTimeout, Outcome, UnknownJobType
from conveyor.worker.queues import QueueOrder, QueueSpec, parse_queue
from conveyor.worker.runtime import ShutdownError, Worker

__all__ = [
    "AfterHook",
    "BeforeHook",
    "ErrorHandler",
    "Handler",
    "JobContext",
    "JobRunner",
    "JobTimeout",
    "Middleware",
    "Outcome",
    "QueueOrder",
    "QueueSpec",
    "ShutdownError",
    "UnknownJobType",
    "Worker",
    "current_job",
    "parse_queue",
]
