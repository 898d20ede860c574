"""The worker runtime: ``Worker``, the job context, hooks and middleware types.

The names are imported on first use (PEP 562): ``conveyor.worker.supervisor``, the
``--processes`` parent, is in this package and must not import the runtime (or asyncio).
"""

import typing

from conveyor import _lazy

if typing.TYPE_CHECKING:
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

_MODULES = {
    "AfterHook": "conveyor.worker.context",
    "BeforeHook": "conveyor.worker.context",
    "ErrorHandler": "conveyor.worker.context",
    "Handler": "conveyor.worker.context",
    "JobContext": "conveyor.worker.context",
    "Middleware": "conveyor.worker.context",
    "current_job": "conveyor.worker.context",
    "JobRunner": "conveyor.worker.execute",
    "JobTimeout": "conveyor.worker.execute",
    "Outcome": "conveyor.worker.execute",
    "UnknownJobType": "conveyor.worker.execute",
    "QueueOrder": "conveyor.worker.queues",
    "QueueSpec": "conveyor.worker.queues",
    "parse_queue": "conveyor.worker.queues",
    "ShutdownError": "conveyor.worker.runtime",
    "Worker": "conveyor.worker.runtime",
}
"""Where each public name lives; ``__getattr__`` imports it from there on first use."""


if not typing.TYPE_CHECKING:  # to mypy the names are the imports above, and a typo is an error
    __getattr__, __dir__ = _lazy.attach(__name__, _MODULES, __all__)
