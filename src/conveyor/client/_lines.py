"""The bytes of a client's command lines and the decoders of their replies' bodies: what
``Client`` sends and reads, kept apart from moving them over a stream (``_connection``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from conveyor.job import Job

CRLF = b"\r\n"


def _encode_other(value: Any) -> Any:
    """msgspec handles dicts natively; other mappings (MappingProxyType, ...) become dicts."""
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"cannot encode {type(value).__name__} as JSON: {value!r:.80}")


encode = msgspec.json.Encoder(enc_hook=_encode_other).encode


def run_seconds(duration: float) -> str:
    """A run time as ACK carries it: a string, since Faktory's ACK takes string values only."""
    return f"{max(duration, 0.0):.6f}"


decode_object = msgspec.json.Decoder(dict[str, Any]).decode
decode_objects = msgspec.json.Decoder(list[dict[str, Any]]).decode
decode_jobs = msgspec.json.Decoder(list[Job]).decode
decode_errors = msgspec.json.Decoder(dict[str, str]).decode
decode_latency = msgspec.json.Decoder(dict[str, float]).decode
decode_jids = msgspec.json.Decoder(list[str]).decode


def word(text: str) -> bytes:
    """One argument of a command line: no spaces or line breaks."""
    if not text or any(c.isspace() for c in text):
        raise ValueError(f"{text!r} is not a valid id (empty, or with spaces)")
    return text.encode()


def fetchb_line(count: int, queues: Sequence[str]) -> bytes:
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    return b"FETCHB %d " % count + queue_names(queues) + CRLF


def queue_names(names: Sequence[str]) -> bytes:
    """Space-separated names; refuse what the line format cannot carry instead of mangling it."""
    if not names:
        raise ValueError("name at least one queue")
    for name in names:
        if not name or any(c.isspace() for c in name):
            raise ValueError(f"invalid queue name {name!r}: empty or contains whitespace")
    return " ".join(names).encode()


CRON_OPS = {"get": "show"}
"""``Client.cron`` names of the ``CRON`` verb's subcommands whose ``ADMIN`` operation has
another name."""
CRON_VERB = frozenset({"list", "show", "add", "pause", "resume", "delete", "run"})
"""The operations an older server has as ``CRON`` subcommands only."""
