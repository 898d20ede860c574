"""Unique jobs (Faktory Enterprise's ``custom.unique_for`` / ``unique_until``) over the wire,
byte for byte, on every store backend."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from conveyor.job import decode_job
from conveyor.manager.features.unique import SPACE, UniqueJobs, unique_key
from conveyor.store.base import JobFilter, SortedSet
from conveyor.timefmt import format_time
from tests.support.features import FeatureServer, bulk_json, encode, job
from tests.support.server import RawClient, RawConnect, RunningServer

NOT_UNIQUE = b"-NOTUNIQUE Job not unique\r\n"
OK = b"+OK\r\n"


@pytest.fixture
async def server(backend_url: str, feature_server: FeatureServer) -> RunningServer:
    return await feature_server(backend_url)


@pytest.fixture
async def conn(server: RunningServer, raw_client: RawConnect) -> RawClient:
    return await raw_client(server.port, hello=b'{"v":2,"wid":"w1","hostname":"h","pid":1}')


def unique(**fields: Any) -> dict[str, Any]:
    custom = {"unique_for": 60, **fields.pop("custom", {})}
    return job(
        **{"queue": "uq", "jobtype": "Order", "args": ["ISBN", 100], **fields}, custom=custom
    )


async def sizes(server: RunningServer) -> dict[str, int]:
    return await server.manager.store.queue_sizes()


def feature(server: RunningServer) -> UniqueJobs:
    return next(f for f in server.manager.features if isinstance(f, UniqueJobs))


async def holder(server: RunningServer, pushed: dict[str, Any]) -> str | None:
    lock = await feature(server).lock_of(decode_job(encode(pushed)))
    return None if lock is None else lock.value.decode()


async def test_a_duplicate_push_is_refused_with_faktorys_bytes(
    conn: RawClient, server: RunningServer
) -> None:
    first = unique()
    assert await conn.call(b"PUSH " + encode(first)) == OK
    assert await conn.call(b"PUSH " + encode(unique())) == NOT_UNIQUE
    assert await sizes(server) == {"uq": 1}
    assert await holder(server, first) == first["jid"]


async def test_client_shaped_payloads_are_the_same_job(conn: RawClient) -> None:
    """Go writes unique_for as 60 (an int) or 60.0, Ruby leaves unique_until out; args with
    other spacing, key order or 1.0 for 1 are the same args."""
    go = (
        b'PUSH {"jid":"go-00000001","jobtype":"Sync","queue":"uq",'
        b'"args":[{"id":1,"tags":["a","b"]}],"custom":{"unique_for":60.0,"unique_until":"success"}}'
    )
    ruby = (
        b'PUSH { "jid" : "rb-00000001", "queue":"uq", "jobtype" : "Sync", '
        b'"args" : [ { "tags" : [ "a", "b" ], "id" : 1.0 } ], "custom" : { "unique_for" : 60 } }'
    )
    assert await conn.call(go) == OK
    assert await conn.call(ruby) == NOT_UNIQUE
    other_args = ruby.replace(b'"a", "b"', b'"b", "a"').replace(b"rb-", b"r2-")
    assert await conn.call(other_args) == OK  # list order is part of the args


async def test_queue_jobtype_and_args_make_the_identity(conn: RawClient) -> None:
    assert await conn.call(b"PUSH " + encode(unique())) == OK
    assert await conn.call(b"PUSH " + encode(unique(queue="other"))) == OK
    assert await conn.call(b"PUSH " + encode(unique(jobtype="Refund"))) == OK
    assert await conn.call(b"PUSH " + encode(unique(args=["ISBN", 101]))) == OK
    assert await conn.call(b"PUSH " + encode(unique(args=["ISBN", 100]))) == NOT_UNIQUE


async def test_a_job_without_unique_for_bypasses_the_lock(
    conn: RawClient, server: RunningServer
) -> None:
    assert await conn.call(b"PUSH " + encode(unique())) == OK
    plain = job(queue="uq", jobtype="Order", args=["ISBN", 100])
    assert await conn.call(b"PUSH " + encode(plain)) == OK
    assert await sizes(server) == {"uq": 2}


async def test_a_retried_push_of_the_same_jid_is_not_refused(conn: RawClient) -> None:
    """The producer resends a PUSH whose reply it lost: its own lock must not refuse it."""
    first = unique()
    assert await conn.call(b"PUSH " + encode(first)) == OK
    assert await conn.call(b"PUSH " + encode(first)) == OK


async def test_pushb_reports_not_unique_per_job(conn: RawClient, server: RunningServer) -> None:
    held = unique()
    assert await conn.call(b"PUSH " + encode(held)) == OK
    again, fresh, twin = unique(), unique(args=["other"]), unique(args=["other"])
    reply = await conn.call(b"PUSHB " + encode([again, fresh, twin]))
    assert bulk_json(reply) == {
        again["jid"]: "NOTUNIQUE Job not unique",
        twin["jid"]: "NOTUNIQUE Job not unique",
    }
    assert await sizes(server) == {"uq": 2}


@pytest.mark.parametrize(
    ("custom", "error"),
    [
        ({"unique_for": "sixty"}, b'invalid unique_for "sixty": must be a number of seconds'),
        ({"unique_for": 0}, b"invalid unique_for 0: must be a number of seconds"),
        ({"unique_for": 0.5}, b"invalid unique_for 0.5: must be a number of seconds"),
        ({"unique_for": -60}, b"invalid unique_for -60: must be a number of seconds"),
        ({"unique_for": True}, b"invalid unique_for true: must be a number of seconds"),
        ({"unique_for": None}, b"invalid unique_for null: must be a number of seconds"),
        ({"unique_for": 1e12}, b"invalid unique_for 1000000000000.0: must be a number"),
        (
            {"unique_for": 60, "unique_until": "never"},
            b'invalid unique_until "never": must be "success" or "start"',
        ),
        ({"unique_until": 1}, b'invalid unique_until 1: must be "success" or "start"'),
    ],
)
async def test_bad_values_get_a_clear_error_and_store_nothing(
    conn: RawClient, server: RunningServer, custom: dict[str, Any], error: bytes
) -> None:
    bad = job(queue="uq", custom=custom)
    reply = await conn.call(b"PUSH " + encode(bad))
    assert reply.startswith(b"-ERR " + error), reply
    assert reply.endswith(b"\r\n")
    pushb = bulk_json(await conn.call(b"PUSHB " + encode([bad])))
    assert pushb[bad["jid"]].encode().startswith(error)
    assert await sizes(server) == {}
    assert await server.manager.store.count_records(SPACE, time.time()) == 0
    assert await conn.call(b"PUSH " + encode(unique())) == OK  # the connection lives on


async def test_until_success_holds_through_work_and_failure_and_ends_with_the_ack(
    conn: RawClient, server: RunningServer
) -> None:
    first = unique()
    assert await conn.call(b"PUSH " + encode(first)) == OK
    assert bulk_json(await conn.call(b"FETCH uq"))["jid"] == first["jid"]
    assert await conn.call(b"PUSH " + encode(unique())) == NOT_UNIQUE  # running: still held
    fail = {"jid": first["jid"], "errtype": "E", "message": "boom"}
    assert await conn.call(b"FAIL " + encode(fail)) == OK
    assert await conn.call(b"PUSH " + encode(unique())) == NOT_UNIQUE  # failed: kept
    await server.manager.requeue(SortedSet.RETRIES, [first["jid"]])
    assert bulk_json(await conn.call(b"FETCH uq"))["jid"] == first["jid"]
    assert await conn.call(b"ACK " + encode({"jid": first["jid"]})) == OK
    assert await holder(server, first) is None
    assert await conn.call(b"PUSH " + encode(unique())) == OK


async def test_until_start_ends_when_the_job_is_fetched(
    conn: RawClient, server: RunningServer, raw_client: RawConnect
) -> None:
    first = unique(custom={"unique_until": "start"})
    assert await conn.call(b"PUSH " + encode(first)) == OK
    assert await conn.call(b"PUSH " + encode(unique())) == NOT_UNIQUE
    assert bulk_json(await conn.call(b"FETCH uq"))["jid"] == first["jid"]
    assert await conn.call(b"PUSH " + encode(unique())) == OK


async def test_until_start_is_released_for_a_job_handed_to_a_waiting_fetch(
    conn: RawClient, server: RunningServer, raw_client: RawConnect
) -> None:
    worker = await raw_client(server.port, hello=b'{"v":2,"wid":"w2"}')
    await worker.send(b"FETCH uq")
    await asyncio.sleep(0.05)  # the FETCH waits
    first = unique(custom={"unique_until": "start"})
    assert await conn.call(b"PUSH " + encode(first)) == OK
    assert bulk_json(await worker.reply())["jid"] == first["jid"]
    assert await conn.call(b"PUSH " + encode(unique())) == OK


async def test_the_lock_ends_after_unique_for(conn: RawClient) -> None:
    assert await conn.call(b"PUSH " + encode(unique(custom={"unique_for": 1}))) == OK
    assert await conn.call(b"PUSH " + encode(unique(custom={"unique_for": 1}))) == NOT_UNIQUE
    await asyncio.sleep(1.05)
    assert await conn.call(b"PUSH " + encode(unique(custom={"unique_for": 1}))) == OK


async def test_a_scheduled_job_holds_its_lock_until_at_plus_unique_for(
    conn: RawClient, server: RunningServer
) -> None:
    at = time.time() + 3600
    scheduled = unique(at=format_time(at))
    assert await conn.call(b"PUSH " + encode(scheduled)) == OK
    assert await conn.call(b"PUSH " + encode(unique())) == NOT_UNIQUE
    key = unique_key(decode_job(encode(scheduled)))
    lock = (await server.manager.store.get_records(SPACE, [key], time.time()))[key]
    assert lock.expires_at == pytest.approx(at + 60, abs=0.01)


async def fail_to_retries(conn: RawClient, pushed: dict[str, Any]) -> None:
    assert await conn.call(b"PUSH " + encode(pushed)) == OK
    assert bulk_json(await conn.call(b"FETCH " + pushed["queue"].encode()))["jid"] == pushed["jid"]
    failed = encode({"jid": pushed["jid"], "errtype": "E", "message": "x"})
    assert await conn.call(b"FAIL " + failed) == OK


@pytest.mark.parametrize("command", [b"discard", b"kill"])
async def test_mutate_releases_the_locks_of_the_jobs_it_removes(
    conn: RawClient, server: RunningServer, command: bytes
) -> None:
    first, bystander = unique(), unique(args=["kept"])
    await fail_to_retries(conn, first)
    await fail_to_retries(conn, bystander)
    mutate = b'{"cmd":"%s","target":"retries","filter":{"jids":["%s"]}}'
    assert await conn.call(b"MUTATE " + mutate % (command, first["jid"].encode())) == OK
    assert await holder(server, first) is None
    assert await holder(server, bystander) == bystander["jid"]
    assert await conn.call(b"PUSH " + encode(unique())) == OK


async def test_clearing_a_set_releases_its_jobs_locks(
    conn: RawClient, server: RunningServer
) -> None:
    first = unique()
    await fail_to_retries(conn, first)
    assert await conn.call(b'MUTATE {"cmd":"clear","target":"retries"}') == OK
    assert await holder(server, first) is None


async def test_admin_deletes_and_purges_release_locks(server: RunningServer) -> None:
    manager = server.manager
    queued, scheduled, dead = (
        unique(),
        unique(args=["s"], at=format_time(time.time() + 60)),
        unique(args=["d"]),
    )
    for pushed in (queued, scheduled, dead):
        await manager.push(encode(pushed))
    # a queued job deleted from its queue page, a scheduled one deleted, a dead one purged
    assert await manager.delete_queued("uq", [queued["jid"]]) == 1
    assert await manager.delete(SortedSet.SCHEDULED, [scheduled["jid"]]) == 1
    reserved = await manager.fetch(["uq"], wait=0)
    assert reserved is not None
    assert decode_job(reserved).jid == dead["jid"]
    await manager.fail(dead["jid"], "E", "x")
    await manager.kill(SortedSet.RETRIES, [dead["jid"]])
    page = await manager.list_set(SortedSet.DEAD, JobFilter(), 0, 10)
    assert [e.jid for e in page.items] == [dead["jid"]]
    assert await holder(server, dead) is None  # killed: released already
    for pushed in (queued, scheduled):
        assert await holder(server, pushed) is None
    assert await server.manager.store.count_records(SPACE, time.time()) == 0


async def test_removing_a_queue_releases_its_jobs_locks(server: RunningServer) -> None:
    first = unique()
    await server.manager.push(encode(first))
    await server.manager.remove_queues(["uq"])
    assert await holder(server, first) is None


async def test_info_counts_the_locks(conn: RawClient) -> None:
    await conn.call(b"PUSH " + encode(unique()))
    await conn.call(b"PUSH " + encode(unique(args=[2])))
    info = bulk_json(await conn.call(b"INFO"))
    assert info["features"]["unique"] == {"locks": 2}
    assert info["faktory"]["queues"] == {"uq": 2}  # Faktory's shape is untouched


async def test_purging_the_dead_set_releases_the_locks_of_dead_jobs(
    backend_url: str, feature_server: FeatureServer
) -> None:
    server = await feature_server(backend_url, dead_ttl_seconds=0.2)
    manager = server.manager
    dead = unique(retry=1)
    await manager.push(encode(dead))
    for _ in range(2):  # fails twice: its one retry spent, it is dead, and keeps its lock
        payload = await manager.fetch(["uq"], wait=0)
        assert payload is not None
        await manager.fail(dead["jid"], "E", "boom")
        await manager.requeue(SortedSet.RETRIES, [dead["jid"]])
    assert (await manager.list_set(SortedSet.DEAD, JobFilter(), 0, 10)).total == 1
    assert await holder(server, dead) == dead["jid"]
    await asyncio.sleep(0.25)
    assert await manager.purge_dead() == 1
    assert await holder(server, dead) is None


def test_the_lock_key_is_the_sha256_of_the_canonical_identity() -> None:
    """The key format is stored (``queue_jobs.ukey``, ``set_entries.ukey``, Redis keys): the
    SHA-256 from CPython's own module must give the hex digest ``hashlib`` gives of the
    canonical JSON, for flat args and for args that are made canonical first."""
    import hashlib

    cases = [
        (["ISBN", 100], b'["uq","Order",["ISBN",100]]'),
        ([{"b": 1, "a": 60.0}, [2.0, 2.5]], b'["uq","Order",[{"a":60,"b":1},[2,2.5]]]'),
    ]
    for args, identity in cases:
        pushed = decode_job(encode(unique(args=args)))
        assert unique_key(pushed) == hashlib.sha256(identity).hexdigest()


@pytest.mark.parametrize(
    ("custom", "error"),
    [
        ({"unique_for": True}, b"-ERR invalid unique_for true: must be a number of seconds"),
        ({"unique_for": 0}, b"-ERR invalid unique_for 0: must be a number of seconds"),
        ({"unique_for": 60, "unique_until": "never"}, b'-ERR invalid unique_until "never"'),
    ],
)
async def test_a_bad_unique_value_beside_the_usual_int_is_refused(
    conn: RawClient, server: RunningServer, custom: dict[str, Any], error: bytes
) -> None:
    """The usual ``{"unique_for": <int>}`` is read without ``unique_terms``: anything else (a
    bool, an int out of range, a second key) still gets its error, and nothing is stored."""
    reply = await conn.call(b"PUSH " + encode(unique(custom=custom)))
    assert reply.startswith(error)
    assert await server.manager.store.count_records(SPACE, time.time()) == 0
    assert await conn.call(b"PUSH " + encode(unique(custom={"unique_for": 60}))) == OK
