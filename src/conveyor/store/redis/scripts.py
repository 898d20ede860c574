"""Lua scripts of the Redis store: loaded from ``store/redis/lua/*.lua``.

Every script gets ``_lib.lua`` (shared helpers) prepended, and a capability's scripts
``<capability>_*.lua`` get ``_<capability>.lua`` after it when there is one; a script whose
first line is ``-- uses: <capability>`` gets that one's (``endings_end.lua`` moves batch
marks with an ACK), and is also loaded without it as ``<name>/bare``, for the calls that use
none of it: a script runs its libraries' top level (their functions and tables) on every
call, which for ``_batches.lua`` is a few microseconds of Redis CPU an ACK. ``calls.Caller``
runs them with EVALSHA, falling back to EVAL (which also caches the script) after a
``NOSCRIPT`` reply, e.g. after Redis restarted or a failover.
"""

from __future__ import annotations

import hashlib
from importlib import resources

__all__ = ["Script", "load_scripts"]

_USES = "-- uses:"


class Script:
    """One Lua script. ``sha`` is the SHA1 EVALSHA calls it by."""

    def __init__(self, name: str, source: str) -> None:
        self.name = name
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()


def load_scripts() -> dict[str, Script]:
    """Every script of ``store/redis/lua/`` by name (file name without ``.lua``)."""
    folder = resources.files("conveyor.store.redis") / "lua"
    lib = (folder / "_lib.lua").read_text()
    libs = {
        item.name[1:-4]: item.read_text()
        for item in folder.iterdir()
        if item.name.startswith("_") and item.name.endswith(".lua") and item.name != "_lib.lua"
    }
    scripts: dict[str, Script] = {}
    for item in folder.iterdir():
        name = item.name
        if name.endswith(".lua") and not name.startswith("_"):
            text = item.read_text()
            first = text.split("\n", 1)[0]
            uses = first[len(_USES) :].strip() if first.startswith(_USES) else ""
            own = libs.get(uses or name.split("_", 1)[0], "")
            if uses:  # BARE: whether the script runs without the library (it must not call it)
                bare = f"{name[:-4]}/bare"
                scripts[bare] = Script(bare, "\n".join((lib, "local BARE = true", text)))
                own += "\nlocal BARE = false"
            source = "\n".join(part for part in (lib, own, text) if part)
            scripts[name[:-4]] = Script(name[:-4], source)
    return scripts
