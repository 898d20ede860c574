"""``JobFilter`` matching shared by the stores that filter in Python (memory, sqlite pages,
redis scans): one definition of what a filter means, so every backend agrees."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable

from conveyor.store.base import JobFilter, SetEntry

__all__ = ["filter_matcher", "glob_to_regex"]


@functools.lru_cache(maxsize=64)
def glob_to_regex(pattern: str) -> re.Pattern[str]:
    """Compile a Redis MATCH-style glob (``*``, ``?``, ``[abc]``, ``[^a-z]``, ``\\x``) that must
    match the whole text. Faktory's MUTATE ``regexp`` is really such a glob."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "*":
            out.append(".*")
        elif ch == "?":
            out.append(".")
        elif ch == "\\" and i + 1 < n:
            i += 1
            out.append(re.escape(pattern[i]))
        elif ch == "[":
            end = pattern.find("]", i + 2 if pattern[i + 1 : i + 2] in ("^", "!") else i + 1)
            if end < 0:  # an unclosed bracket is a literal, as in Redis
                out.append(re.escape(ch))
            else:
                body = pattern[i + 1 : end]
                negate = body[:1] in ("^", "!")
                body = body[1:] if negate else body
                escaped = "".join("\\" + c if c in "\\]^[" else c for c in body)
                out.append(f"[{'^' if negate else ''}{escaped}]")
                i = end
        else:
            out.append(re.escape(ch))
        i += 1
    return re.compile("".join(out), re.DOTALL)


def filter_matcher(flt: JobFilter) -> Callable[[SetEntry], bool]:
    """A predicate implementing ``JobFilter`` over set entries (see base.JobFilter)."""
    if flt.is_empty:
        return lambda _entry: True
    jids = frozenset(flt.jids)
    jobtype = None if jids else flt.jobtype
    regex = glob_to_regex(flt.pattern) if flt.pattern and not jids else None
    text = flt.text.lower() if flt.text else None
    queue = flt.queue

    def match(entry: SetEntry) -> bool:
        if jids and entry.jid not in jids:
            return False
        if jobtype and entry.jobtype != jobtype:
            return False
        if queue and entry.queue != queue:
            return False
        if regex is not None or text is not None:
            raw = entry.payload.decode("utf-8", "replace")
            if regex is not None and regex.fullmatch(raw) is None:
                return False
            if text is not None and text not in raw.lower():
                return False
        return True

    return match
