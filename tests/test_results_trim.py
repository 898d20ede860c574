"""The results ACK's Python, trimmed (docs/design/results.md): what the shortcuts must keep.

* The ACK tells the ``result`` signal's listeners on this server only when someone listens:
  a ``RESULT`` waiting here, or a listener besides the feature's own. Another listener
  (``Manager.on_signal``) must still hear every jid an ACK stored, one at a time and in an
  ACKB, on every store, with no ``RESULT`` waiting.
* An ACKB's results are checked inline, and a bad one is reported by the first bad item,
  whichever check it fails, with nothing acknowledged.
* ``format_time`` formats without ``format_ns``: the same text, trailing zeros trimmed.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Sequence
from pathlib import Path

import msgspec
import pytest

from conveyor.timefmt import format_ns, format_time
from tests.support.features import bulk_json
from tests.support.server import MakeServer, RawClient, RawConnect
from tests.support.stores import STORE_BACKENDS, store_url

OK = b"+OK\r\n"
HELLO = b'{"v":2,"wid":"w-trim","hostname":"h","pid":1}'
BIG = '"' + "x" * 80 + '"'  # a JSON string of 82 bytes


@pytest.fixture(params=STORE_BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return store_url(request.param, tmp_path, request)


async def _fetched(client: RawClient, jid: str, **custom: object) -> None:
    job = {"jid": jid, "jobtype": "Work", "args": [1], "queue": "trim", "custom": custom}
    assert await client.call(b"PUSH " + msgspec.json.encode(job)) == OK
    assert bulk_json(await client.call(b"FETCH trim"))["jid"] == jid


async def test_another_listener_of_the_result_signal_hears_every_ack(
    url: str, make_server: MakeServer, raw_client: RawConnect
) -> None:
    server = await make_server(url)
    heard: list[str] = []

    def listen(keys: Sequence[str] | None) -> None:
        if keys is not None:  # None: Redis's "look at everything" after (re)subscribing
            heard.extend(keys)

    server.manager.on_signal("result", listen)
    worker = await raw_client(server.port, hello=HELLO)
    assert server.manager.results is not None
    assert server.manager.results.waiting == 0  # nothing waits: only the listener hears
    await _fetched(worker, "jid-trim-one", result_ttl=60)
    assert await worker.call(b'ACK {"jid":"jid-trim-one","result":"1"}') == OK
    assert heard == ["jid-trim-one"]
    await _fetched(worker, "jid-trim-kept", retain=60)  # kept without a record: told too
    await _fetched(worker, "jid-trim-two", result_ttl=60)
    await _fetched(worker, "jid-trim-plain")  # asks for nothing: not told
    ackb = (
        b'ACKB [{"jid":"jid-trim-kept","result":"2"},{"jid":"jid-trim-two","result":"3"},'
        b'"jid-trim-plain"]'
    )
    assert await worker.call(ackb) == OK
    assert sorted(heard) == ["jid-trim-kept", "jid-trim-one", "jid-trim-two"]
    for jid, value in (("jid-trim-one", 1), ("jid-trim-kept", 2), ("jid-trim-two", 3)):
        reply = await worker.call(b'RESULT {"jid":"%s"}' % jid.encode())
        assert bulk_json(reply)["result"] == value


@pytest.mark.parametrize(
    ("results", "error"),
    [
        (
            ["7", BIG, "{"],
            b"-ERR result of jid-trim-b is 82 bytes; the limit is 64",
        ),
        (["7", "{", BIG], b"-ERR result of jid-trim-b is not JSON: "),
        (
            [BIG, "{", "7"],
            b"-ERR result of jid-trim-a is 82 bytes; the limit is 64",
        ),
    ],
)
async def test_an_ackb_names_its_first_bad_result_and_acknowledges_nothing(
    make_server: MakeServer, raw_client: RawConnect, results: list[str], error: bytes
) -> None:
    server = await make_server(features={"results": {"max_bytes": 64}})
    worker = await raw_client(server.port, hello=HELLO)
    jids = ["jid-trim-a", "jid-trim-b", "jid-trim-c"]
    for jid in jids:
        await _fetched(worker, jid, result_ttl=60)
    items = [{"jid": jid, "result": result} for jid, result in zip(jids, results, strict=True)]
    reply = await worker.call(b"ACKB " + json.dumps(items).encode())
    assert reply.startswith(error), reply
    store = server.manager.store
    for jid in jids:
        assert await store.get_reservation(jid) is not None
    assert await store.get_records("results", jids, 0.0) == {}
    assert (await store.counters()).processed == 0


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (1_700_000_000.0, "2023-11-14T22:13:20Z"),
        (1_700_000_000.5, "2023-11-14T22:13:20.5Z"),
        (1_700_000_000.12, "2023-11-14T22:13:20.12Z"),
        (1_700_000_000.000_1, "2023-11-14T22:13:20.0001Z"),
        (1_700_000_000.123_456, "2023-11-14T22:13:20.123456Z"),
        (1_700_000_000.999_999_7, "2023-11-14T22:13:21Z"),  # rounds into the next second
        (1_700_000_001.000_010, "2023-11-14T22:13:21.00001Z"),
    ],
)
def test_format_time_trims_the_fraction_as_go_does(seconds: float, text: str) -> None:
    assert format_time(seconds) == text
    assert format_time(seconds) == format_ns(round(seconds * 1_000_000) * 1000)


def test_format_time_agrees_with_format_ns_on_any_time() -> None:
    rng = random.Random(14)
    for _ in range(20_000):
        seconds = rng.randrange(0, 4_000_000_000) + rng.randrange(0, 1_000_000) / 1e6
        assert format_time(seconds) == format_ns(round(seconds * 1_000_000) * 1000), seconds


async def test_results_stored_by_acks_are_purged_once_expired(
    url: str, make_server: MakeServer, raw_client: RawConnect
) -> None:
    """The records an ACK writes, one at a time and in an ACKB, are found by the purge
    (memory: each is noted in the expiry heap as it is stored, not scanned for)."""
    server = await make_server(url)
    worker = await raw_client(server.port, hello=HELLO)
    await _fetched(worker, "jid-trim-p1", result_ttl=0.2)
    assert await worker.call(b'ACK {"jid":"jid-trim-p1","result":"1"}') == OK
    await _fetched(worker, "jid-trim-p2", result_ttl=0.2)
    await _fetched(worker, "jid-trim-p3", result_ttl=600)
    ackb = b'ACKB [{"jid":"jid-trim-p2","result":"2"},{"jid":"jid-trim-p3","result":"3"}]'
    assert await worker.call(ackb) == OK
    store = server.manager.store
    now = time.time()
    assert await store.purge_records(now, 100) == 0  # none has expired yet
    assert await store.count_records("results", now) == 3
    assert await store.purge_records(now + 1, 100) == 2
    assert await store.count_records("results", 0.0) == 1  # what is left: p3's, still live
    assert set(await store.get_records("results", ["jid-trim-p3"], now + 1)) == {"jid-trim-p3"}
