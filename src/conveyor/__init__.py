"""conveyor: a Faktory-compatible job server, durable storage, and an asyncio worker library.

The public names are imported on first use (PEP 562), so importing a part of conveyor (say the
``--processes`` parent, ``conveyor.worker.supervisor``) does not import the rest of it.
"""

import typing

from conveyor import _lazy

if typing.TYPE_CHECKING:
    from conveyor.app import Aggregate, App, CancelResult, Group, JobDef, PayloadError, PushResult
    from conveyor.app.batches import BatchStatus, TrackInfo
    from conveyor.app.info import JobInfo
    from conveyor.app.workflows import Chain, JobGroup, Signature, chain, group
    from conveyor.errors import (
        AuthenticationError,
        CommandError,
        ConnectError,
        ConveyorError,
        InvalidJob,
        JobCancelled,
        JobFailed,
        JobNotFound,
        NotUnique,
        ProtocolError,
        QueueFull,
        ResultError,
        RetryAfter,
        SkipRetry,
        StoreError,
    )
    from conveyor.job import Job
    from conveyor.retries import Exponential, Fixed
    from conveyor.worker import Handler, JobContext, Middleware, Worker, current_job
    from conveyor.worker.ratelimit import RateLimit

__version__ = "0.1.0"

__all__ = [  # noqa: RUF022 - grouped by purpose (as httpx does), sorted within groups
    # declaring, pushing and running jobs
    "Aggregate",
    "App",
    "CancelResult",
    "Group",
    "Handler",
    "Job",
    "JobContext",
    "JobDef",
    "Middleware",
    "PushResult",
    "Worker",
    "current_job",
    # batches, tracking and workflows
    "BatchStatus",
    "Chain",
    "JobGroup",
    "Signature",
    "TrackInfo",
    "chain",
    "group",
    # results, job state and retry control
    "Exponential",
    "Fixed",
    "JobInfo",
    "RateLimit",
    "RetryAfter",
    "SkipRetry",
    # errors
    "AuthenticationError",
    "CommandError",
    "ConnectError",
    "ConveyorError",
    "InvalidJob",
    "JobCancelled",
    "JobFailed",
    "JobNotFound",
    "NotUnique",
    "PayloadError",
    "ProtocolError",
    "QueueFull",
    "ResultError",
    "StoreError",
    "__version__",
]

_MODULES = {
    "Aggregate": "conveyor.app",
    "App": "conveyor.app",
    "CancelResult": "conveyor.app",
    "Group": "conveyor.app",
    "JobDef": "conveyor.app",
    "PayloadError": "conveyor.app",
    "PushResult": "conveyor.app",
    "BatchStatus": "conveyor.app.batches",
    "TrackInfo": "conveyor.app.batches",
    "Chain": "conveyor.app.workflows",
    "JobGroup": "conveyor.app.workflows",
    "Signature": "conveyor.app.workflows",
    "chain": "conveyor.app.workflows",
    "group": "conveyor.app.workflows",
    "AuthenticationError": "conveyor.errors",
    "CommandError": "conveyor.errors",
    "ConnectError": "conveyor.errors",
    "ConveyorError": "conveyor.errors",
    "InvalidJob": "conveyor.errors",
    "JobCancelled": "conveyor.errors",
    "JobNotFound": "conveyor.errors",
    "NotUnique": "conveyor.errors",
    "ProtocolError": "conveyor.errors",
    "QueueFull": "conveyor.errors",
    "StoreError": "conveyor.errors",
    "JobFailed": "conveyor.errors",
    "ResultError": "conveyor.errors",
    "RetryAfter": "conveyor.errors",
    "SkipRetry": "conveyor.errors",
    "JobInfo": "conveyor.app.info",
    "Exponential": "conveyor.retries",
    "Fixed": "conveyor.retries",
    "RateLimit": "conveyor.worker.ratelimit",
    "Job": "conveyor.job",
    "Handler": "conveyor.worker",
    "JobContext": "conveyor.worker",
    "Middleware": "conveyor.worker",
    "Worker": "conveyor.worker",
    "current_job": "conveyor.worker",
}
"""Where each public name lives; ``__getattr__`` imports it from there on first use."""


if not typing.TYPE_CHECKING:  # to mypy the names are the imports above, and a typo is an error
    __getattr__, __dir__ = _lazy.attach(__name__, _MODULES, __all__)
