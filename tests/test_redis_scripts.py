"""How the Lua scripts are put together (``store/redis/scripts.py``): each gets only the
helpers and library functions it reaches, and none it calls is left out."""

from __future__ import annotations

import re
from importlib import resources

import pytest

from conveyor.store.redis.scripts import load_scripts

FOLDER = resources.files("conveyor.store.redis") / "lua"
LIBRARY = {
    match.group(1)
    for item in FOLDER.iterdir()
    if item.name.startswith("_") and item.name.endswith(".lua")
    for match in re.finditer(r"^local function (\w+)\(", item.read_text(), re.MULTILINE)
}
SCRIPTS = load_scripts()


def _code(source: str) -> str:
    return re.sub(r"--[^\n]*", "", source)


@pytest.mark.parametrize("name", sorted(n for n in SCRIPTS if not n.endswith("/bare")))
def test_every_library_function_a_script_calls_is_in_it(name: str) -> None:
    code = _code(SCRIPTS[name].source)
    defined = set(re.findall(r"local function (\w+)\(", code))
    called = {f for f in re.findall(r"\b(\w+)\s*\(", code) if f in LIBRARY}
    assert called <= defined, f"{name} calls {sorted(called - defined)} without defining them"


def test_a_script_leaves_out_the_library_functions_it_never_reaches() -> None:
    """The PUSH's mark builds none of the ending machinery's closures; the ACK has them."""
    mark = set(re.findall(r"local function (\w+)\(", _code(SCRIPTS["batches_mark"].source)))
    ack = set(re.findall(r"local function (\w+)\(", _code(SCRIPTS["endings_end"].source)))
    assert {"mark_get", "mark_put", "batch_load", "flush_batches"} <= mark
    assert not {"end_all", "settle", "release", "bury_payload"} & mark
    assert {"end_all", "settle", "release", "mark_get", "packed_fired"} <= ack
    # and the library's tables stay, whatever a script reaches
    assert "local BFIELDS" in SCRIPTS["batches_mark"].source
