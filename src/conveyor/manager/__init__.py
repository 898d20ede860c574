"""The manager: all the rules of the job lifecycle, over one Store."""

from conveyor.manager.admin import JobLocation, QueueInfo, WorkerView
from conveyor.manager.config import ManagerConfig
from conveyor.manager.core import Manager
from conveyor.manager.middleware import (
    AckContext,
    Discard,
    Drop,
    FailContext,
    FetchContext,
    Middleware,
    Next,
    PushContext,
)
from conveyor.manager.retry import FailureReport, RetryPolicy
from conveyor.manager.types import ClientInfo, ServerStats, WorkerState

__all__ = [
    "AckContext",
    "ClientInfo",
    "Discard",
    "Drop",
    "FailContext",
    "FailureReport",
    "FetchContext",
    "JobLocation",
    "Manager",
    "ManagerConfig",
    "Middleware",
    "Next",
    "PushContext",
    "QueueInfo",
    "RetryPolicy",
    "ServerStats",
    "WorkerState",
    "WorkerView",
]
