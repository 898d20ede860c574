"""Line framing: FWP commands (and simple/error replies) are single lines.

A line ends with ``\\r\\n`` or a bare ``\\n`` (the Ruby client sends ``\\n`` only). Faktory reads
lines without any limit; we bound every line so a peer cannot make us buffer without end.
"""

from __future__ import annotations

from conveyor.errors import LineTooLong

__all__ = ["DEFAULT_MAX_LINE_BYTES", "LineBuffer", "split_command"]

DEFAULT_MAX_LINE_BYTES = 16 * 1024 * 1024


class LineBuffer:
    """A bounded receive buffer: ``feed`` bytes, then take complete lines with ``next_line``.

    The returned line has its terminator stripped. A line (complete or still arriving) longer
    than ``max_line_bytes`` raises ``LineTooLong``; after that the buffer is empty and the
    connection should be closed, since the rest of the stream cannot be framed reliably.
    """

    __slots__ = ("_buffer", "_scan_from", "_start", "max_line_bytes")

    def __init__(self, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> None:
        if max_line_bytes < 1:
            raise ValueError("max_line_bytes must be positive")
        self.max_line_bytes = max_line_bytes
        self._buffer = bytearray()
        self._start = 0  # consumed prefix, dropped lazily to avoid copying per line
        self._scan_from = 0  # where the search for "\n" resumes (no rescans of long lines)

    def __len__(self) -> int:
        """Bytes buffered and not yet returned as lines."""
        return len(self._buffer) - self._start

    def release(self) -> None:
        """Drop everything buffered and give its memory back (the connection is gone)."""
        self._buffer = bytearray()
        self._start = self._scan_from = 0

    def feed(self, data: bytes) -> None:
        if self._start and self._start == len(self._buffer):
            self._buffer.clear()
            self._start = self._scan_from = 0
        self._buffer += data

    def next_line(self) -> bytes | None:
        """The next complete line without its terminator, or ``None`` if none is complete."""
        buffer = self._buffer
        end = buffer.find(b"\n", max(self._start, self._scan_from))
        if end < 0:
            self._scan_from = len(buffer)
            if len(buffer) - self._start > self.max_line_bytes + 1:  # +1: a pending "\r"
                self._overflow()
            return None
        stop = end - 1 if end > self._start and buffer[end - 1] == 0x0D else end
        if stop - self._start > self.max_line_bytes:
            self._overflow()
        line = bytes(buffer[self._start : stop])
        self._start = self._scan_from = end + 1
        if self._start > 65536 and self._start * 2 > len(buffer):
            del buffer[: self._start]
            self._start = self._scan_from = 0
        return line

    def _overflow(self) -> None:
        self._buffer.clear()
        self._start = self._scan_from = 0
        raise LineTooLong(f"line too long (max {self.max_line_bytes} bytes)")


def split_command(line: bytes) -> tuple[bytes, bytes]:
    """Split a command line into its verb and argument: everything before/after the first space.

    Faktory's verbs are case-sensitive and exact, so the verb is returned as sent.
    """
    verb, _, argument = line.partition(b" ")
    return verb, argument
