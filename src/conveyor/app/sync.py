"""The sync facade: run the async implementation on a private event loop in a daemon thread.

There is one implementation (async). Sync callers (a Django view, a script) submit coroutines
to this loop and wait for the result, so connections are pooled across calls and threads.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["SyncRunner"]

T = TypeVar("T")


class SyncRunner:
    """A lazily started background event loop. Thread-safe; ``close`` stops it."""

    def __init__(self, name: str = "conveyor-sync") -> None:
        self._name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name=self._name, daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the background loop and return its result (or raise its error)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            coro.close()
            raise RuntimeError(
                "a *_sync method was called from a running event loop; await the async one"
            )
        future = asyncio.run_coroutine_threadsafe(coro, self._ensure_loop())
        return future.result(timeout)

    def close(self, cleanup: Coroutine[Any, Any, None] | None = None) -> None:
        """Run ``cleanup`` (e.g. closing pools) on the loop, then stop the loop and thread."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            if cleanup is not None:
                cleanup.close()
            return
        if cleanup is not None:
            asyncio.run_coroutine_threadsafe(cleanup, loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
