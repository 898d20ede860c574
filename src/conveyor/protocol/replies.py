"""Server replies: a strict subset of Redis RESP2 (faktory.md §1.1).

* ``+<text>``: simple string (``+OK``, the ``+HI {...}`` greeting);
* ``-<CODE> <message>``: error (``-ERR ...``, ``-NOTUNIQUE ...``);
* ``$<len>\\r\\n<bytes>\\r\\n``: bulk string, all JSON payloads;
* ``$-1``: null bulk, "nothing" (an empty FETCH).

Encoders are for the server; ``ReplyReader`` is the client side, as bounded as ``LineBuffer``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from conveyor.errors import LineTooLong, ProtocolError

__all__ = [
    "NULL_BULK",
    "OK",
    "Reply",
    "ReplyKind",
    "ReplyReader",
    "bulk",
    "error",
    "simple",
]

OK = b"+OK\r\n"
NULL_BULK = b"$-1\r\n"

DEFAULT_MAX_BULK_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_REPLY_LINE_BYTES = 1024 * 1024


def simple(text: str) -> bytes:
    return b"+" + text.encode() + b"\r\n"


def error(code: str, message: str) -> bytes:
    """``-<code> <message>``; line breaks in the message would end the reply early, so they go."""
    text = f"-{code} {message}".replace("\r", " ").replace("\n", " ")
    return text.encode("utf-8", "replace") + b"\r\n"


def bulk(data: bytes) -> bytes:
    return b"".join((b"$", str(len(data)).encode(), b"\r\n", data, b"\r\n"))


class ReplyKind(enum.StrEnum):
    OK = "ok"
    SIMPLE = "simple"
    ERROR = "error"
    BULK = "bulk"
    NULL = "null"


@dataclass(frozen=True, slots=True)
class Reply:
    """One reply. ``text`` holds simple/error text (errors as ``"<CODE> <message>"``),
    ``data`` the bytes of a bulk string."""

    kind: ReplyKind
    text: str = ""
    data: bytes = b""


_OK_REPLY = Reply(ReplyKind.OK, "OK")
_NULL_REPLY = Reply(ReplyKind.NULL)


class ReplyReader:
    """Client-side parser: ``feed`` received bytes, take complete replies with ``next_reply``.

    Raises ``ProtocolError`` for bytes that are not a reply and ``LineTooLong`` for a reply
    line or bulk string over the limits; the connection is unusable after either.
    """

    __slots__ = ("_buffer", "_bulk_length", "_start", "max_bulk_bytes", "max_line_bytes")

    def __init__(
        self,
        max_bulk_bytes: int = DEFAULT_MAX_BULK_BYTES,
        max_line_bytes: int = DEFAULT_MAX_REPLY_LINE_BYTES,
    ) -> None:
        self.max_bulk_bytes = max_bulk_bytes
        self.max_line_bytes = max_line_bytes
        self._buffer = bytearray()
        self._start = 0
        self._bulk_length = -1  # length of a bulk string whose header was read, else -1

    def feed(self, data: bytes) -> None:
        if self._start:
            del self._buffer[: self._start]
            self._start = 0
        self._buffer += data

    def next_reply(self) -> Reply | None:
        """The next complete reply, or ``None`` until more bytes arrive."""
        if self._bulk_length >= 0:
            return self._take_bulk()
        buffer = self._buffer
        end = buffer.find(b"\n", self._start)
        if end < 0:
            if len(buffer) - self._start > self.max_line_bytes:
                raise LineTooLong(f"reply line too long (max {self.max_line_bytes} bytes)")
            return None
        stop = end - 1 if end > self._start and buffer[end - 1] == 0x0D else end
        line = bytes(buffer[self._start : stop])
        self._start = end + 1
        return self._parse_line(line)

    def _parse_line(self, line: bytes) -> Reply | None:
        if not line:
            raise ProtocolError("empty reply line")
        marker, body = line[:1], line[1:]
        if marker == b"+":
            return _OK_REPLY if body == b"OK" else Reply(ReplyKind.SIMPLE, _text(body))
        if marker == b"-":
            return Reply(ReplyKind.ERROR, _text(body))
        if marker == b"$":
            try:
                length = int(body)
            except ValueError:
                raise ProtocolError(f"bad bulk length {body!r}") from None
            if length == -1:
                return _NULL_REPLY
            if length < 0:
                raise ProtocolError(f"bad bulk length {length}")
            if length > self.max_bulk_bytes:
                raise LineTooLong(f"bulk reply too long ({length} > {self.max_bulk_bytes} bytes)")
            self._bulk_length = length
            return self._take_bulk()
        raise ProtocolError(f"not a Faktory reply: {line[:80]!r}")

    def _take_bulk(self) -> Reply | None:
        length = self._bulk_length
        available = len(self._buffer) - self._start
        if available < length + 2:
            return None
        start = self._start
        data = bytes(self._buffer[start : start + length])
        if self._buffer[start + length : start + length + 2] != b"\r\n":
            raise ProtocolError("bulk reply not terminated by CRLF")
        self._start = start + length + 2
        self._bulk_length = -1
        return Reply(ReplyKind.BULK, data=data)


def _text(body: bytes) -> str:
    return body.decode("utf-8", "replace")
