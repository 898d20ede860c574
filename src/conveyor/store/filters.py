"""``JobFilter`` matching shared by the stores that filter in Python (memory, sqlite pages,
redis scans): one definition of what a filter means, so every backend agrees.

The ``pattern`` is a Redis MATCH-style glob (Faktory's MUTATE ``regexp`` is really one). It is
never turned into one backtracking regex: ``*a*a*a*a*a*a*a*b`` as ``.*a.*a...b`` takes seconds
on 60 ``a``s, and the event loop with it. ``Glob`` splits the pattern at its stars into
fixed-width pieces and finds each piece leftmost, after the previous one, which is all a glob
needs (a piece that fits further left never hurts the pieces after it). Matching is linear in
the text for each piece, done in windows of bounded work (``Glob.steps``), and
``filter_entries`` gives the event loop back between windows and entries, so a MUTATE or a
dashboard search over a large set never holds other clients up for long.
"""

from __future__ import annotations

import asyncio
import functools
import re
import time
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass

from conveyor.store.base import JobFilter, SetEntry

__all__ = ["MAX_PATTERN_CHARS", "Glob", "filter_entries", "filter_matcher", "glob"]

MAX_PATTERN_CHARS = 1024
"""Longest glob accepted (Redis has no limit; real patterns are a few dozen characters). The
work of one matching step is at most ``STEP_WORK`` plus one piece's width, so this bounds it."""
STEP_WORK = 1 << 18
"""Character comparisons per matching step (a few milliseconds at worst)."""
SLICE_SECONDS = 0.005
"""``filter_entries`` lets other tasks run after this much matching."""

_Steps = Generator[None, None, bool]
_Position = Generator[None, None, int]


@dataclass(frozen=True, slots=True)
class _Piece:
    """A fixed-width part of a glob between stars: a literal, or a regex without quantifiers."""

    width: int
    literal: str | None
    regex: re.Pattern[str] | None

    def at(self, text: str, pos: int) -> bool:
        if self.literal is not None:
            return text.startswith(self.literal, pos)
        assert self.regex is not None
        return self.regex.match(text, pos) is not None

    def find(self, text: str, pos: int, end: int) -> _Position:
        """Where the piece first starts at or after ``pos`` and ends by ``end``; -1 if nowhere.
        A window of bounded work per step."""
        window = max(1, STEP_WORK // max(self.width, 1))
        while pos + self.width <= end:
            stop = min(end, pos + window + self.width - 1)
            if self.literal is not None:
                found = text.find(self.literal, pos, stop)
            else:
                assert self.regex is not None
                match = self.regex.search(text, pos, stop)
                found = -1 if match is None else match.start()
            if found >= 0:
                return found
            pos += window
            yield
        return -1


class Glob:
    """A compiled glob: ``*`` any run, ``?`` any one character, ``[abc]`` ``[a-z]`` ``[^a]``
    one of a set, ``\\x`` the character x, everything else itself; the whole text must
    match. Edge cases as Redis' ``stringmatchlen``: a reversed range is swapped, an unclosed
    ``[`` ends at the end of the pattern, ``[]`` matches nothing and ``[^]`` anything. (Redis
    matches bytes where this matches characters; and it never matches an empty text.)
    """

    __slots__ = ("_pieces", "_starred", "pattern")

    def __init__(self, pattern: str) -> None:
        if len(pattern) > MAX_PATTERN_CHARS:
            raise ValueError(f"glob is {len(pattern)} characters; the limit is {MAX_PATTERN_CHARS}")
        self.pattern = pattern
        pieces = _parse(pattern)
        self._starred = len(pieces) > 1
        self._pieces = [_compile(piece) for piece in pieces]

    def matches(self, text: str) -> bool:
        steps = self.steps(text)
        while True:
            try:
                next(steps)
            except StopIteration as done:
                return bool(done.value)

    def steps(self, text: str) -> _Steps:
        """Match ``text``, yielding after each window of bounded work; returns the outcome."""
        pieces = self._pieces
        head = pieces[0]
        if not self._starred:
            return len(text) == head.width and head.at(text, 0)
        tail = pieces[-1]
        end = len(text) - tail.width
        if end < head.width or not head.at(text, 0) or not tail.at(text, end):
            return False
        pos = head.width
        for piece in pieces[1:-1]:
            found = yield from piece.find(text, pos, end)
            if found < 0:
                return False
            pos = found + piece.width
        return True


@functools.lru_cache(maxsize=64)
def glob(pattern: str) -> Glob:
    """The compiled ``Glob`` for ``pattern`` (cached)."""
    return Glob(pattern)


# ------------------------------------------------------------------ parsing

# A token is one character to match: ("lit", c), ("any", ""), or ("set", regex class text).
_Token = tuple[str, str]


def _parse(pattern: str) -> list[list[_Token]]:
    """The pattern's fixed-width pieces, split at (runs of) stars: n stars give n + 1 pieces."""
    pieces: list[list[_Token]] = [[]]
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "*":
            pieces.append([])
            while i + 1 < n and pattern[i + 1] == "*":
                i += 1
        elif ch == "?":
            pieces[-1].append(("any", ""))
        elif ch == "[":
            token, i = _parse_set(pattern, i + 1)
            pieces[-1].append(token)
            continue
        elif ch == "\\" and i + 1 < n:
            i += 1
            pieces[-1].append(("lit", pattern[i]))
        else:
            pieces[-1].append(("lit", ch))
        i += 1
    return pieces


def _parse_set(pattern: str, i: int) -> tuple[_Token, int]:
    """The set starting after a ``[`` at ``i``; returns its token and the index after it."""
    n = len(pattern)
    negate = i < n and pattern[i] == "^"
    i += negate
    parts: list[str] = []
    while i < n and pattern[i] != "]":
        if pattern[i] == "\\" and i + 1 < n:
            i += 1
            parts.append(re.escape(pattern[i]))
        elif i + 2 < n and pattern[i + 1] == "-":
            low, high = sorted((pattern[i], pattern[i + 2]))
            parts.append(f"{re.escape(low)}-{re.escape(high)}")
            i += 2
        else:
            parts.append(re.escape(pattern[i]))
        i += 1
    if not parts:  # [] matches nothing, [^] anything
        return ("set", "[^\\s\\S]" if not negate else "[\\s\\S]"), i + 1
    return ("set", f"[{'^' if negate else ''}{''.join(parts)}]"), i + 1


def _compile(tokens: list[_Token]) -> _Piece:
    if all(kind == "lit" for kind, _ in tokens):
        return _Piece(len(tokens), "".join(char for _, char in tokens), None)
    parts = [
        re.escape(text) if kind == "lit" else "." if kind == "any" else text
        for kind, text in tokens
    ]
    return _Piece(len(tokens), None, re.compile("".join(parts), re.DOTALL))


# ------------------------------------------------------------------ filters


class _Check:
    """``JobFilter`` as a predicate over set entries, in steps (see base.JobFilter)."""

    __slots__ = ("glob", "jids", "jobtype", "queue", "text")

    def __init__(self, flt: JobFilter) -> None:
        self.jids = frozenset(flt.jids)
        self.jobtype = None if self.jids else flt.jobtype
        self.glob = glob(flt.pattern) if flt.pattern and not self.jids else None
        self.text = flt.text.lower() if flt.text else None
        self.queue = flt.queue

    def steps(self, entry: SetEntry) -> _Steps:
        if self.jids and entry.jid not in self.jids:
            return False
        if self.jobtype and entry.jobtype != self.jobtype:
            return False
        if self.queue and entry.queue != self.queue:
            return False
        if self.glob is not None or self.text is not None:
            raw = entry.payload.decode("utf-8", "replace")
            if self.glob is not None and not (yield from self.glob.steps(raw)):
                return False
            if self.text is not None and self.text not in raw.lower():
                return False
        return True

    def __call__(self, entry: SetEntry) -> bool:
        steps = self.steps(entry)
        while True:
            try:
                next(steps)
            except StopIteration as done:
                return bool(done.value)


def filter_matcher(flt: JobFilter) -> Callable[[SetEntry], bool]:
    """A predicate implementing ``JobFilter`` over set entries (see base.JobFilter).

    It runs to the end in one go: for a few entries. Use ``filter_entries`` for a scan."""
    if flt.is_empty:
        return lambda _entry: True
    return _Check(flt)


async def filter_entries(flt: JobFilter, entries: Iterable[SetEntry]) -> list[SetEntry]:
    """The entries that match ``flt``, in order, giving other tasks a turn every
    ``SLICE_SECONDS`` of matching (also within one long payload)."""
    if flt.is_empty:
        return list(entries)
    check = _Check(flt)
    kept: list[SetEntry] = []
    clock = time.perf_counter
    deadline = clock() + SLICE_SECONDS
    for entry in entries:
        steps = check.steps(entry)
        while True:
            try:
                next(steps)
            except StopIteration as done:
                if done.value:
                    kept.append(entry)
                break
            if clock() > deadline:
                await asyncio.sleep(0)
                deadline = clock() + SLICE_SECONDS
        if clock() > deadline:
            await asyncio.sleep(0)
            deadline = clock() + SLICE_SECONDS
    return kept
