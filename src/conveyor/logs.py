"""Log output for ``conveyor worker`` and ``conveyor server``: text or one JSON object a line.

``--log-format json`` writes each record as ``{"time", "level", "logger", "message", ...}``
plus every ``extra`` the record carries (the worker's job lines carry ``jid``, ``jobtype``,
``queue``, ``duration_ms``, ``outcome``, ...) and ``exc_info`` as a ``traceback`` string.
Log shippers (Loki, Elasticsearch, Datadog) read that without a parsing rule.

``RateLimitedLog``: the same complaint, repeated, is written with a growing pause in between
(and a count of what was left out): a store that is down must not fill the disk.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

__all__ = ["LOG_FORMATS", "JsonFormatter", "RateLimitedLog", "configure_logging"]

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Attributes every LogRecord has: anything else on a record came in through ``extra``.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


def _fallback(value: Any) -> Any:
    return str(value)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, with the record's ``extra`` fields at the top level."""

    def __init__(self) -> None:
        super().__init__()
        import msgspec  # here: a --processes parent logs text and never loads it

        self._encode = msgspec.json.Encoder(enc_hook=_fallback).encode

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                document[key] = value
        if record.process and record.name.startswith("conveyor"):
            document.setdefault("pid", record.process)
        if record.exc_info:
            document["traceback"] = self.formatException(record.exc_info)
        elif record.exc_text:
            document["traceback"] = record.exc_text
        if record.stack_info:
            document["stack"] = self.formatStack(record.stack_info)
        return self._encode(document).decode()


def configure_logging(level: str, log_format: str = "text", text_format: str = TEXT_FORMAT) -> None:
    """Set up the root logger for a conveyor process (``basicConfig``, so an app that
    configured logging first keeps its own)."""
    handler = logging.StreamHandler()
    if log_format == "json":
        formatter: logging.Formatter = JsonFormatter()
    else:
        formatter = logging.Formatter(text_format)
    handler.setFormatter(formatter)
    logging.basicConfig(level=level.upper(), handlers=[handler])


class RateLimitedLog:
    """Writes a repeated problem at most once per pause; the pause doubles while the problem
    goes on (from ``first_seconds`` up to ``max_seconds``) and resets once ``ok()`` is called,
    or once no problem came for ``max_seconds``.

    Each line after the first says how many repeats were left out since the previous line.
    """

    def __init__(
        self,
        logger: logging.Logger,
        *,
        first_seconds: float = 1.0,
        max_seconds: float = 60.0,
        clock: Any = time.monotonic,
    ) -> None:
        self.logger = logger
        self.first_seconds = first_seconds
        self.max_seconds = max_seconds
        self._clock = clock
        self._pause = first_seconds
        self._next_at = 0.0
        self._suppressed = 0
        self._failing = False
        self._last = 0.0

    def problem(self, message: str, *args: Any, exc_info: Any = None) -> bool:
        """Log ``message`` unless it is too soon after the last one; True when written."""
        now = self._clock()
        if self._failing and now - self._last > self.max_seconds:
            self._failing, self._pause = False, self.first_seconds  # a new episode
        self._last = now
        if self._failing and now < self._next_at:
            self._suppressed += 1
            return False
        if self._suppressed:
            message += " (%d similar messages suppressed)"
            args = (*args, self._suppressed)
        self.logger.error(message, *args, exc_info=exc_info)
        if self._failing:
            self._pause = min(self._pause * 2, self.max_seconds)
        self._failing = True
        self._next_at = now + self._pause
        self._suppressed = 0
        return True

    def ok(self, message: str = "", *args: Any) -> None:
        """The problem is over: log ``message`` (when it was going on) and reset the pause."""
        if self._failing and message:
            if self._suppressed:
                message += f" ({self._suppressed} similar messages suppressed)"
            self.logger.warning(message, *args)
        self._failing = False
        self._pause = self.first_seconds
        self._suppressed = 0
