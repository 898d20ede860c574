"""Lua scripts of the Redis store: loaded from ``store/redis/lua/*.lua``.

Every script gets the helpers of ``_lib.lua`` it uses prepended (and those they use): Redis
runs a script's whole text at every call, and defining all ten helpers cost about as much
as running a small script (1.7 us a call, against 1.1 for ``return 1``). A capability's
scripts ``<capability>_*.lua`` get ``_<capability>.lua`` after them when there is one (only
the functions of it they reach, with its other top-level statements: each function is a
closure built at every call); a script whose first line is ``-- uses: <capability>`` gets
that one's (``endings_end.lua`` moves batch marks with an ACK), and is also loaded without it
as ``<name>/bare``, for the calls that use none of it: running ``_batches.lua``'s top level
(its functions and tables) is a few microseconds of Redis CPU an ACK. ``calls.Caller`` runs
them with EVALSHA, falling back to EVAL (which also caches the script) after a
``NOSCRIPT`` reply, e.g. after Redis restarted or a failover.

The scripts of a capability library are also functions of one Redis 7 function library
(``FUNCTION LOAD``, docs/design/batches.md): its top level (the helpers, the capability's
functions and tables) runs once, when it is loaded, and each call only runs the script's own
body (``fresh()`` first: the library's per-call state). ``Script.function`` names it, and
``calls.Caller`` calls it with FCALL where Redis has functions (not on a Cluster), loading
the library after a "Function not found" and falling back to EVALSHA where FCALL is refused.
"""

from __future__ import annotations

import hashlib
import re
from importlib import resources

__all__ = ["Script", "load_scripts"]


class Script:
    """One Lua script. ``sha`` is the SHA1 EVALSHA calls it by; ``function``, when it is also
    a function of ``library`` (a ``FUNCTION LOAD`` text), the name FCALL calls it by: the
    SHA1 after ``FUNCTION_PREFIX``, so its calls look alike on the wire either way."""

    def __init__(self, name: str, source: str) -> None:
        self.name = name
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()
        self.function: str | None = None
        self.library: str | None = None


_HELPER = re.compile(r"^local function (\w+)\(.*?^end$", re.MULTILINE | re.DOTALL)
_COMMENT = re.compile(r"--[^\n]*")
_USES = "-- uses:"
FUNCTION_PREFIX = "conveyor_"


def load_scripts() -> dict[str, Script]:
    """Every script of ``store/redis/lua/`` by name (file name without ``.lua``)."""
    folder = resources.files("conveyor.store.redis") / "lua"
    helpers = {m.group(1): m.group(0) for m in _HELPER.finditer((folder / "_lib.lua").read_text())}
    libs = {
        item.name[1:-4]: item.read_text()
        for item in folder.iterdir()
        if item.name.startswith("_")
        and item.name.endswith(".lua")
        and item.name not in ("_lib.lua", "_functions.lua")
    }
    scripts: dict[str, Script] = {}
    bodies: dict[str, dict[str, str]] = {}  # a capability library's scripts, by name
    for item in folder.iterdir():
        name = item.name
        if name.endswith(".lua") and not name.startswith("_"):
            text = item.read_text()
            first = text.split("\n", 1)[0]
            uses = first[len(_USES) :].strip() if first.startswith(_USES) else ""
            own = _prune(libs.get(uses or name.split("_", 1)[0], ""), text)
            if uses:  # BARE: whether the script runs without the library (it must not call it)
                bare = f"{name[:-4]}/bare"
                scripts[bare] = _script(bare, helpers, "local BARE = true", text)
                own += "\nlocal BARE = false"
            scripts[name[:-4]] = _script(name[:-4], helpers, own, text)
            lib = uses or name.split("_", 1)[0]
            if lib in libs:
                body = ("local BARE = false\n" if uses else "") + text
                bodies.setdefault(lib, {})[name[:-4]] = body
    for lib, named in sorted(bodies.items()):
        top = "\n".join([*helpers.values(), (folder / "_functions.lua").read_text()])
        _library(lib, top, libs[lib], {scripts[name]: body for name, body in named.items()})
    return scripts


def _library(lib: str, top: str, code: str, bodies: dict[Script, str]) -> None:
    """One function library for a capability's scripts: ``top`` (every helper, then
    ``_functions.lua``) and the whole capability library at its top level (built once, when
    Redis loads it), then each script's body as a function that starts with ``fresh()``
    (KEYS and ARGV are the library's locals, set at each call).

    Function names are global in Redis, so each holds the digest of the whole library
    besides the script's SHA1: another version of the library (a server of another release
    on the same Redis) loads beside it. A name is spelled in two pieces here, so the SHA1 is
    only ever sent whole by the script's FCALL (or EVALSHA)."""
    ordered = sorted(bodies.items(), key=lambda item: item[0].name)
    whole = "\n".join(["local KEYS, ARGV", top, code, *(body for _, body in ordered)])
    digest = hashlib.sha1(whole.encode()).hexdigest()[:16]
    registered = []
    for script, body in ordered:
        script.function = f"{FUNCTION_PREFIX}{script.sha}_{digest}"
        cut = len(FUNCTION_PREFIX) + 20
        registered.append(
            f"redis.register_function('{script.function[:cut]}' .. '{script.function[cut:]}',"
            f" function(keys, args)\nKEYS, ARGV = keys, args\nfresh()\n{body}\nend)"
        )
    text = "\n".join(["local KEYS, ARGV", top, code, *registered])
    library = f"#!lua name={FUNCTION_PREFIX}{lib}_{digest}\n{text}"
    for script in bodies:
        script.library = library


def _prune(lib: str, text: str) -> str:
    """A capability's library without the functions ``text`` never reaches: each is a
    closure Redis would build at every call (``_batches.lua`` has thirty; a PUSH's mark
    needs a third of them). Its other top-level statements (tables, counters) stay."""
    if not lib:
        return lib
    functions = {m.group(1): m.group(0) for m in _HELPER.finditer(lib)}
    rest = _HELPER.sub("", lib)
    kept = set(_used(rest + "\n" + text, functions))
    return _HELPER.sub(lambda m: m.group(0) if m.group(1) in kept else "", lib)


def _script(name: str, helpers: dict[str, str], own: str, text: str) -> Script:
    """``text`` after ``own`` (its capability's library) and the helpers both use."""
    body = "\n".join(part for part in (own, text) if part)
    lib = "\n".join(helpers[h] for h in _used(body, helpers))
    return Script(name, lib + "\n" + body)


def _used(body: str, helpers: dict[str, str]) -> list[str]:
    """The helpers ``body`` calls, with the ones they call, in ``_lib.lua``'s order."""
    wanted: set[str] = set()
    todo = [_COMMENT.sub("", body)]
    while todo:
        code = todo.pop()
        for helper in helpers:
            if helper not in wanted and re.search(rf"\b{helper}\s*\(", code):
                wanted.add(helper)
                todo.append(_COMMENT.sub("", helpers[helper]))
    return [helper for helper in helpers if helper in wanted]
