"""Backtraces as people want to read them: the handler's frames, not the worker's plumbing.

A Python worker sends ``traceback.format_exception`` lines, outermost frame first, so a failed
job's backtrace used to open with conveyor's own frames (the worker calling the handler) and
asyncio's. ``trim`` drops those frames and says how many it dropped; everything else (the
handler's frames, the exception, chained exceptions) stays in order. Frames are recognised by
the path suffix of a module of this package (``conveyor/worker/execute.py``), so a backtrace
from a worker installed elsewhere is trimmed too.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cache
from pathlib import Path

__all__ = ["trim"]

_FRAME = re.compile(r'^\s*File "(?P<path>[^"]+)", line \d+')
_PLUMBING = ("asyncio/", "concurrent/futures/")
"""Standard-library frames between the worker and a handler (tasks, the thread pool)."""


@cache
def _own_modules() -> tuple[str, ...]:
    """``conveyor/<path>.py`` of every module of this package (and of a ``src/`` checkout)."""
    root = Path(__file__).resolve().parent
    return tuple(f"conveyor/{p.relative_to(root).as_posix()}" for p in root.rglob("*.py"))


def _is_plumbing(path: str) -> bool:
    path = path.replace("\\", "/")
    if any(f"/{lib}" in path or path.startswith(lib) for lib in _PLUMBING):
        return "site-packages" not in path
    return path.endswith(_own_modules())


def trim(lines: Sequence[str]) -> tuple[list[str], int]:
    """The backtrace without conveyor's and asyncio's frames, and how many frames it left out.

    A backtrace that is nothing but such frames (an error inside conveyor itself) is returned
    whole: then those frames are the story.
    """
    kept: list[str] = []
    hidden = frames = 0
    skipping = False
    for line in lines:
        match = _FRAME.match(line)
        if match is not None:
            frames += 1
            skipping = _is_plumbing(match.group("path"))
            hidden += skipping
            if not skipping:
                kept.append(line)
        elif skipping and line.startswith("    "):
            continue  # the source line (and carets) of a hidden frame
        else:
            skipping = False
            kept.append(line)
    if hidden == frames:
        return list(lines), 0
    return kept, hidden
