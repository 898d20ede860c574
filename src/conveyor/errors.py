"""The one exception tree of conveyor.

::

    ConveyorError
    ├── CommandError            an error reply: ``-<code> <message>`` on the wire
    │   ├── InvalidJob          a job that fails validation (PUSH / PUSHB)
    │   ├── JobNotFound         FAIL (or an extension) for a jid with no reservation
    │   ├── UnknownWorker       BEAT for a wid the server does not know
    │   ├── NotUnique           code NOTUNIQUE: a unique job is already queued
    │   ├── QueueFull           a PUSH to a queue at its backpressure bound
    │   └── Halt                raised by middleware to stop a command with a code
    ├── ProtocolError           bytes that are not the Faktory Work Protocol
    │   └── LineTooLong         a line over the configured maximum
    ├── AuthenticationError     wrong or missing password
    ├── ConnectError            cannot reach or keep a connection to a server
    ├── StoreError              the storage backend failed (unreachable, corrupt)
    │   └── StoreUnavailable    it cannot write for now (SQLite cannot commit: disk full,
    │                           I/O error); it logged why once and retries by itself
    ├── ConfigError             a setting is missing, malformed or inconsistent (also ValueError)
    ├── PayloadError            a job's args do not fit its handler (worker side; not retried)
    ├── JobCancelled            the running job was cancelled (worker side; not retried)
    ├── ResultError             a handler's value cannot be stored as its result (not retried)
    ├── JobFailed               app.result(): the job died; its error and backtrace
    ├── SkipRetry               raised by a handler: the job fails and goes to the dead set now
    └── RetryAfter              raised by a handler: retry the job later, without using a retry

The same classes serve both sides: the server's manager raises a ``CommandError`` and the
server writes it as ``-<code> <message>``; the client reads that reply and raises the same
class again, with the same ``code`` and ``message``.
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "CommandError",
    "ConfigError",
    "ConnectError",
    "ConveyorError",
    "Halt",
    "InvalidJob",
    "JobCancelled",
    "JobFailed",
    "JobNotFound",
    "LineTooLong",
    "NotUnique",
    "PayloadError",
    "ProtocolError",
    "QueueFull",
    "ResultError",
    "RetryAfter",
    "SkipRetry",
    "StoreError",
    "StoreUnavailable",
    "UnknownWorker",
]


class ConveyorError(Exception):
    """Base class of every error conveyor raises on purpose."""


class CommandError(ConveyorError):
    """A command failed; on the wire it is the error reply ``-<code> <message>``."""

    code: str = "ERR"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return f"{self.code} {self.message}"

    @classmethod
    def from_reply(cls, line: str) -> CommandError:
        """Build the most specific error for an error reply (without the leading ``-``)."""
        code, _, message = line.partition(" ")
        if code == NotUnique.code:
            return NotUnique(message)
        if code == "ERR":
            for kind in (JobNotFound, UnknownWorker):
                if message.lower().startswith(kind.prefix.lower()):
                    return kind(message)
            if QueueFull.matches(message):
                return QueueFull(message)
        return cls(message, code=code)


class InvalidJob(CommandError):
    """The job payload is malformed or breaks a rule (missing jid, bad queue name, ...)."""


class JobNotFound(CommandError):
    """No reservation exists for the jid (never fetched, already finished, or expired)."""

    prefix = "Job not found"


class UnknownWorker(CommandError):
    """A heartbeat named a worker id the server has no record of (reaped or never seen)."""

    prefix = "unknown worker"


class NotUnique(CommandError):
    """A unique job with the same identity is already pending."""

    code = "NOTUNIQUE"


class QueueFull(CommandError):
    """The queue holds its backpressure bound of jobs (``[queues] backpressure``): nothing was
    stored; pushes succeed again once it drains below the bound. On the wire:
    ``-ERR queue <name> is full (<bound> jobs)``."""

    @classmethod
    def of(cls, queue: str, bound: int) -> QueueFull:
        return cls(f"queue {queue} is full ({bound} jobs)")

    @staticmethod
    def matches(message: str) -> bool:
        return (
            message.startswith("queue ") and message.endswith(" jobs)") and " is full (" in message
        )


class Halt(CommandError):
    """Raised by middleware to stop a command; the client sees ``-<code> <message>``."""


class ProtocolError(ConveyorError):
    """Bytes that do not follow the Faktory Work Protocol."""


class LineTooLong(ProtocolError):
    """A command or reply line exceeded the configured maximum length."""


class AuthenticationError(ConveyorError):
    """The password was wrong, or the server wants one and none was given."""


class ConnectError(ConveyorError):
    """The server cannot be reached, or closed the connection unexpectedly."""


class StoreError(ConveyorError):
    """The storage backend failed: unreachable, read-only, or corrupt."""


class StoreUnavailable(StoreError):
    """The store cannot make changes durable for now: a commit failed (disk full, I/O error)
    and it refuses writes until a retry commits. The store logs the outage itself, once, so
    whoever catches this need not log it again."""


class PayloadError(ConveyorError):
    """A job's ``args`` do not fit its handler's parameters (wrong count, types or fields).

    On the worker this fails the job with errtype ``conveyor.PayloadError`` and moves it to the
    dead set: running it again would fail the same way.
    """

    errtype = "conveyor.PayloadError"


class ResultError(ConveyorError):
    """The value a handler returned cannot be its job's result: msgspec cannot encode it, or
    its JSON is larger than the limit (1 MiB by default). The job fails with this error and
    goes to the dead set: running it again would end the same way."""

    errtype = "conveyor.ResultError"


class JobFailed(ConveyorError):
    """``app.result()`` of a job that died (dead set, or discarded): ``errtype``, ``message``
    and ``backtrace`` are those of its last failure."""

    def __init__(
        self, jid: str, errtype: str, message: str, backtrace: tuple[str, ...] = ()
    ) -> None:
        super().__init__(f"job {jid} failed: {errtype}: {message}")
        self.jid = jid
        self.errtype = errtype
        self.message = message
        self.backtrace = backtrace


class SkipRetry(ConveyorError):
    """Raise it in a handler to fail the job without retrying it: it goes to the dead set at
    once (Asynq's ``SkipRetry``). ``raise SkipRetry("card declined") from exc`` keeps the
    cause in the backtrace. A job with ``retry=0`` is discarded as for any failure."""

    errtype = "conveyor.SkipRetry"

    def __init__(self, reason: str = "") -> None:
        super().__init__(reason or "not retried")
        self.reason = reason


class RetryAfter(ConveyorError):
    """Raise it in a handler to run the job again in ``seconds`` **without using a retry**
    (a rate limit upstream, a resource that is busy): the job's retry count does not change.
    Against a plain Faktory server it is an ordinary, counted failure."""

    errtype = "conveyor.RetryAfter"

    def __init__(self, seconds: float, reason: str = "") -> None:
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, int | float)
            or not (0 <= seconds <= 366 * 86_400)
        ):
            raise ValueError(f"RetryAfter needs 0 to 366 days in seconds, got {seconds!r}")
        super().__init__(reason or f"retry after {seconds:g}s")
        self.seconds = float(seconds)
        self.reason = reason


class ConfigError(ConveyorError, ValueError):
    """A configuration value is missing, malformed or inconsistent; the message says which
    (and where it came from: a flag, a variable, a file, table and key)."""


class JobCancelled(ConveyorError):
    """The job was cancelled while it ran (``app.cancel``, the dashboard, ``conveyor job
    cancel``). A sync handler raises it from ``current_job().raise_if_cancelled()``; the
    worker reports the job as cancelled, and it is neither retried nor dead."""

    errtype = "conveyor.JobCancelled"
