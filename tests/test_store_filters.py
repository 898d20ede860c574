"""The MUTATE glob: what it matches (Redis itself is the oracle), and that matching never holds
the event loop for long, whatever the pattern and the payload."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conveyor.store.base import JobFilter, SetEntry
from conveyor.store.filters import MAX_PATTERN_CHARS, Glob, filter_entries, filter_matcher
from tests.support.services import RedisServer

if TYPE_CHECKING:
    import redis


@pytest.fixture(scope="module")
def redis_keys(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A client of the session's private redis-server, on a database of its own (15)."""
    import redis

    client = redis.Redis(port=redis_server.port, db=15)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


GLOB_CHARS = "ab*?[]^-\\"


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    pattern=st.text(alphabet=GLOB_CHARS, max_size=8),
    # Redis never matches an empty key, so the oracle is asked about non-empty texts only
    text=st.text(alphabet="ab[]^-\\*?", min_size=1, max_size=8),
)
def test_glob_matches_what_redis_matches(redis_keys: redis.Redis, pattern: str, text: str) -> None:
    key = text.encode()
    redis_keys.set(key, b"1")
    try:
        expected = key in redis_keys.keys(pattern)
    finally:
        redis_keys.delete(key)
    assert Glob(pattern).matches(text) is expected, (pattern, text)


def test_glob_examples() -> None:
    assert Glob('*"jobtype":"Send???"*').matches('{"jobtype":"SendSms","args":[]}')
    assert not Glob("*ALICE*").matches("alice")
    assert Glob("*a*a*a*a*a*a*a*b").matches("a" * 60 + "b")
    assert not Glob("*a*a*a*a*a*a*a*b").matches("a" * 60)
    assert Glob("*[^S]e*").matches("Resize")
    assert Glob("line*\n?end").matches("line 1\n2end")  # ? and * cross newlines


def test_long_globs_are_refused() -> None:
    Glob("*" * MAX_PATTERN_CHARS)
    with pytest.raises(ValueError, match=f"the limit is {MAX_PATTERN_CHARS}"):
        Glob("*" * (MAX_PATTERN_CHARS + 1))


def _entry(jid: str, payload: str) -> SetEntry:
    return SetEntry(1.0, jid, payload.encode(), "default", "T")


async def _turns_while(work: asyncio.Task[list[SetEntry]]) -> int:
    """How many times another task got the loop before ``work`` finished."""
    turns = 0
    while not work.done():
        await asyncio.sleep(0)
        turns += 1
    return turns


async def test_a_long_scan_gives_other_tasks_their_turn() -> None:
    # No entry is long, but matching them all is: every position of every payload is tried.
    entries = [_entry(f"j{n}", "a" * 100_000 + ("c" if n == 7 else "")) for n in range(8)]
    flt = JobFilter(pattern="*" + "?" * 20 + "c*")
    work = asyncio.create_task(filter_entries(flt, entries))
    turns = await _turns_while(work)
    assert [e.jid for e in work.result()] == ["j7"]
    assert turns >= 3, "the scan held the loop from start to end"


async def test_one_huge_payload_is_matched_in_slices() -> None:
    entry = _entry("big", "ab" * 1_000_000)
    flt = JobFilter(pattern="*" + "[ab]" * 40 + "c*")
    work = asyncio.create_task(filter_entries(flt, [entry]))
    turns = await _turns_while(work)
    assert work.result() == []
    assert turns >= 3, "one payload held the loop from start to end"


async def test_filter_entries_agrees_with_the_plain_predicate() -> None:
    entries = [_entry(f"j{n}", f'{{"args":["user:{n}"],"jobtype":"T{n % 3}"}}') for n in range(30)]
    for flt in (
        JobFilter(pattern="*user:1?*"),
        JobFilter(pattern="*T2*", text="USER:2"),
        JobFilter(jids=("j3", "j4"), pattern="*nothing*"),  # jids win over the pattern
        JobFilter(),
    ):
        match = filter_matcher(flt)
        assert await filter_entries(flt, entries) == [e for e in entries if match(e)]
