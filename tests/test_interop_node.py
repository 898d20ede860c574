"""Interop: the npm client ``faktory-worker`` 4.7.1 against a real conveyor server on loopback.

``tests/interop/node/scenario.js`` runs one scenario through the library's public API (Client,
Job, Mutation, Worker) and prints what it got as JSON; the assertions are here. The Node
project is installed by ``npm ci`` in ``tests/interop/node`` (``.ci/run`` does it); without
``node_modules`` these tests skip locally and FAIL under ``CI=true``.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from conveyor.client import Client
from tests.support.features import FeatureServer
from tests.support.interop import NODE_PROJECT, client_environ, run_node
from tests.support.server import MakeServer, RunningServer, SpawnServer
from tests.support.services import require, require_binary
from tests.support.tls import CertFiles

pytestmark = pytest.mark.interop

PASSWORDS = [pytest.param("", id="no-password"), pytest.param("node-pw!", id="password")]


async def run_scenario(name: str, url: str, **env: str) -> dict[str, Any]:
    return await run_node("scenario.js", name, url=url, **env)


@pytest.mark.parametrize("password", PASSWORDS)
async def test_push_fetch_ack_fail_info(make_server: MakeServer, password: str) -> None:
    server = await make_server(password=password)
    result = await run_scenario("roundtrip", server.url)

    assert result["rejected"] == ["jobs must have a jobtype parameter"]
    assert result["before"]["queues"] == {"default": 3, "critical": 1}
    first, second = result["first"], result["second"]
    assert first["jid"] == result["jid2"]  # critical before default
    assert first["args"] == ["x", {"nested": [1, 2]}]
    assert first["custom"] == {"tenant": "acme"}
    assert first["retry"] == 3
    assert "priority" not in first  # the Node client sends priority; Faktory drops it
    assert second["jid"] == result["jid1"]
    assert second["args"] == [1, 2]
    assert result["after"]["retries"] == 1
    assert (result["processed"], result["failures"]) == (2, 1)
    assert result["server"]["faktory_version"].count(".") == 2

    location = await server.manager.locate(result["jid2"])
    assert location is not None
    assert location.where == "retries"
    assert b'"errtype":"KaboomError"' in location.payload
    assert b'"message":"kaboom"' in location.payload


async def test_mutations(server: RunningServer) -> None:
    result = await run_scenario("mutate", server.url)
    steps = result["steps"]

    def sets(step: str) -> tuple[int, int, int]:
        return steps[step]["scheduled"], steps[step]["retries"], steps[step]["dead"]

    assert sets("pushed") == (4, 0, 0)
    assert sets("killAlpha") == (2, 0, 2)  # ofType("Alpha").kill()
    assert sets("requeueA1") == (2, 0, 1)  # withJids(a1).requeue()
    assert steps["requeueA1"]["queues"]["default"] == 1
    assert sets("discardGamma") == (1, 0, 1)  # matching("*Gamma*").discard()
    assert sets("discardDead") == (1, 0, 0)  # discard() with an empty filter: everything
    assert sets("clearScheduled") == (0, 0, 0)
    assert result["requeued"]["jid"] == result["a1"]
    assert result["requeued"]["jobtype"] == "Alpha"


async def test_queue_commands(server: RunningServer) -> None:
    result = await run_scenario("queues", server.url)

    assert result["paused"] == "OK"
    assert result["whilePaused"] is None
    assert result["resumed"] == "OK"
    assert result["latency"]["nosuch"] == 0
    assert 0 <= result["latency"]["default"] < 60
    assert result["fetched"]["jid"] == result["jid"]
    assert result["beforeRemove"] == {"default": 1}
    assert result["removed"] == "OK"
    assert "default" not in result["afterRemove"]
    assert "wildcards" in result["wildcardLatency"]


@pytest.mark.parametrize("password", PASSWORDS)
async def test_worker_loop(make_server: MakeServer, password: str) -> None:
    server = await make_server(password=password)
    result = await run_scenario("worker", server.url, JOBS="6")

    assert result["results"] == [n * n for n in range(6)]
    assert result["failed"] == "Explode"
    assert result["after"]["retries"] == 1
    assert (result["processed"], result["failures"]) == (7, 1)
    assert result["after"]["queues"].get("default", 0) == 0
    # The worker said goodbye: its heartbeat record goes with its last connection.
    for _ in range(200):
        wids = {view.record.wid for view in await server.manager.workers()}
        if result["wid"] not in wids:
            break
        await asyncio.sleep(0.01)
    assert result["wid"] not in wids


async def test_against_the_conveyor_server_command(spawn_server: SpawnServer) -> None:
    """The whole `conveyor server` process (SQLite storage, password), not just the library."""
    process = await asyncio.to_thread(spawn_server, password="cli-pw")
    result = await run_scenario("roundtrip", process.url)
    assert result["rejected"] == ["jobs must have a jobtype parameter"]
    assert result["first"]["jid"] == result["jid2"]
    assert (result["processed"], result["failures"]) == (2, 1)
    assert result["after"]["retries"] == 1


async def test_tls_with_password(make_server: MakeServer, self_signed_cert: CertFiles) -> None:
    server = await make_server(
        password="tls-pw", tls_cert=self_signed_cert.cert, tls_key=self_signed_cert.key
    )
    assert server.url.startswith("tcp+tls://")
    result = await run_scenario("worker", server.url, FAKTORY_TLS_CA=str(self_signed_cert.cert))
    assert result["results"] == [n * n for n in range(5)]
    assert (result["processed"], result["failures"]) == (6, 1)


async def test_jobs_cross_languages(server: RunningServer) -> None:
    """Python pushes, the Node worker runs the jobs; Node pushes, Python fetches them."""
    async with await Client.connect(server.url) as client:
        squares = [{"jid": f"py-to-node-{n}", "jobtype": "Square", "args": [n]} for n in range(4)]
        assert await client.push_bulk(squares) == {}
        await client.push({"jid": "py-to-node-boom", "jobtype": "Explode", "args": ["é€😀"]})
        result = await run_scenario("worker", server.url, JOBS="4", PREPUSHED="1")
        assert result["results"] == [0, 1, 4, 9]
        assert (result["processed"], result["failures"]) == (5, 1)

        node = await run_scenario("roundtrip", server.url)  # leaves its two Bulk jobs queued
        assert node["after"]["queues"]["default"] == 2
        fetched = [await client.fetch("default"), await client.fetch("default")]
        assert [job["args"] for job in fetched if job] == [[1], [2]]
        assert all(job and job["jobtype"] == "Bulk" and job["retry"] == 25 for job in fetched)
        await client.ack_many([job["jid"] for job in fetched if job])
        assert (await client.info())["faktory"]["sets"]["working"] == 0


async def test_worker_obeys_quiet_from_the_server(server: RunningServer) -> None:
    """A quiet signal reaches the Node worker through BEAT's bulk {"state":"quiet"} reply."""
    node = require_binary("node")
    require((NODE_PROJECT / "node_modules").is_dir(), f"run `npm ci` in {NODE_PROJECT}")
    process = await asyncio.create_subprocess_exec(
        node,
        "scenario.js",
        "quiet",
        cwd=NODE_PROJECT,
        env=client_environ(server.url),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    try:
        ready = json.loads(await asyncio.wait_for(process.stdout.readline(), 20))
        assert await server.manager.signal_workers([ready["wid"]], "quiet") == 1
        out, err = await asyncio.wait_for(process.communicate(), 30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, err.decode(errors="replace")
    result = json.loads(out.decode().strip().splitlines()[-1])
    assert result["quieted"] is True
    assert result["ran"] == []
    assert result["queued"] == 1  # the quiet worker left the new job alone


async def test_enterprise_keys_from_the_node_client(feature_server: FeatureServer) -> None:
    server = await feature_server("memory://", {"queues": {"bounded": {"backpressure": 1}}})
    result = await run_scenario("admission", server.url)
    assert "NOTUNIQUE Job not unique" in result["duplicate"]
    assert result["bulk"] == ["NOTUNIQUE Job not unique"]
    assert result["fetchedExpired"] is None
    assert "queue bounded is full (1 jobs)" in result["full"]
    assert result["afterAck"] != result["first"]  # the ACK released the lock
    assert result["features"]["expiring"]["expired"] == 1
    assert result["features"]["unique"] == {"locks": 1}
