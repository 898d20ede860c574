"""Declaring jobs and pushing them: ``App``, ``JobDef``, and the args mapping."""

from conveyor.app.aggregate import Aggregate
from conveyor.app.core import App, CancelResult, Group
from conveyor.app.jobs import JobDef, JobOptions, new_jid
from conveyor.app.payload import PayloadError, PayloadKind, PayloadSpec
from conveyor.app.producer import Producer, PushResult

__all__ = [
    "Aggregate",
    "App",
    "CancelResult",
    "Group",
    "JobDef",
    "JobOptions",
    "PayloadError",
    "PayloadKind",
    "PayloadSpec",
    "Producer",
    "PushResult",
    "new_jid",
]
