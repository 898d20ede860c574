"""conveyor: a Faktory-compatible job server, durable storage, and an asyncio worker library."""

from conveyor.app import App, Group, JobDef, PayloadError, PushResult
from conveyor.errors import (
    AuthenticationError,
    CommandError,
    ConnectError,
    ConveyorError,
    InvalidJob,
    JobNotFound,
    NotUnique,
    ProtocolError,
    StoreError,
)
from conveyor.job import Job
from conveyor.worker import Handler, JobContext, Middleware, Worker, current_job

__version__ = "0.1.0"

__all__ = [  # noqa: RUF022 - grouped by purpose (as httpx does), sorted within groups
    # declaring, pushing and running jobs
    "App",
    "Group",
    "Handler",
    "Job",
    "JobContext",
    "JobDef",
    "Middleware",
    "PushResult",
    "Worker",
    "current_job",
    # errors
    "AuthenticationError",
    "CommandError",
    "ConnectError",
    "ConveyorError",
    "InvalidJob",
    "JobNotFound",
    "NotUnique",
    "PayloadError",
    "ProtocolError",
    "StoreError",
    "__version__",
]
