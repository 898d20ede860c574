"""The error reply for a command that raised: what a connection sends instead of its reply.

A ``CommandError`` carries its own wire code and text; a store that refuses writes (an outage,
logged once by the store) or fails during the command answers ``ERR storage error: ...``;
input nested deeper than the decoder can follow is bad input, not a crash; anything else is
logged with the command and answered ``ERR internal error``.
"""

from __future__ import annotations

import logging

from conveyor.errors import CommandError, StoreError, StoreUnavailable
from conveyor.logs import RateLimitedLog
from conveyor.protocol import error, split_command

__all__ = ["error_reply"]

log = logging.getLogger("conveyor.server")


def error_reply(line: bytes, exc: Exception, peer: str, trouble: RateLimitedLog) -> bytes:
    """The error reply for a command that raised ``exc``."""
    if isinstance(exc, CommandError):
        return error(exc.code, exc.message)
    verb = split_command(line)[0].decode("latin-1")
    if isinstance(exc, StoreUnavailable):  # the store logs the outage, once
        return error("ERR", f"storage error: {exc}")
    if isinstance(exc, RecursionError):
        # Input nested too deeply for a decoder that does not say so itself (msgspec
        # stops at Python's recursion limit): bad input, not a crash of ours.
        log.warning("%s from %s: input nested too deeply", verb[:20], peer)
        return error("ERR", "invalid JSON: nested too deeply")
    if isinstance(exc, StoreError):
        trouble.problem("storage failed during %s: %s", verb, exc)
        return error("ERR", f"storage error: {exc}")
    log.error("internal error handling %s from %s", line[:200], peer, exc_info=exc)
    return error("ERR", "internal error")
