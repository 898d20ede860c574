"""The in-memory store (``memory://``): every structure a Python object, nothing survives a
restart. For tests, experiments and the embedded server.

One module per capability: ``store.py`` holds the job lifecycle (the ``Store`` contract of
``conveyor.store.base``); capabilities that features add (records with a TTL, limits, ...)
live in modules of their own beside it and are mixed into ``MemoryStore``.
"""

from conveyor.store.memory.store import MemoryStore

__all__ = ["MemoryStore"]
