"""Interop: the PyPI Faktory clients ``faktory`` 1.0.0 (cdrx) and ``pyfaktory`` 0.2.13 against a
real conveyor server on loopback: plain, with a password, and over TLS with a password.

Each client runs in a child process (``tests/interop/python_clients.py``) the way a real
producer or worker would, and reports what the server answered as JSON; the assertions here
check those answers and the server's own state.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.interop import client_environ, run_json
from tests.support.server import MakeServer, RunningServer, SpawnServer
from tests.support.tls import CertFiles

pytestmark = pytest.mark.interop

SCRIPT = Path(__file__).parent / "interop" / "python_clients.py"
MODES = ["plain", "password", "tls+password"]


async def run_client(scenario: str, url: str) -> dict[str, Any]:
    return await run_json(sys.executable, str(SCRIPT), scenario, env=client_environ(url))


async def start(make_server: MakeServer, mode: str, cert: CertFiles) -> RunningServer:
    """Both clients do TLS without verifying the certificate (their only mode)."""
    password = "" if mode == "plain" else "interop-pw"
    tls = {"tls_cert": cert.cert, "tls_key": cert.key} if mode.startswith("tls") else {}
    server = await make_server(password=password, **tls)
    assert (":interop-pw@" in server.url) == bool(password)
    assert server.url.startswith("tcp+tls://") == bool(tls)
    return server


@pytest.mark.parametrize("mode", MODES)
async def test_cdrx_faktory(
    make_server: MakeServer, self_signed_cert: CertFiles, mode: str
) -> None:
    server = await start(make_server, mode, self_signed_cert)
    result = await run_client("cdrx", server.url)

    assert result["queued"] == [True, True, True, True]
    first, second = result["fetched"]
    assert first["jid"] == "cdrx-job-2"  # critical is listed first
    assert first["custom"] == {"a": 1}
    assert first["retry"] == 5  # cdrx's default, kept
    assert "priority" not in first  # unknown top-level keys are dropped, as in Faktory
    assert second["jid"] == "cdrx-job-1"
    assert second["args"] == [1, 2]
    assert (result["ack"], result["fail"], result["beat"]) == ("OK", "OK", "OK")
    assert result["empty_fetch"] is None
    assert result["info"]["faktory"]["sets"]["scheduled"] == 2
    assert result["info"]["faktory"]["sets"]["retries"] == 1
    assert result["mutate"] == "OK"
    # cdrx turns a dict into json.dumps() WITH spaces. Faktory splits MUTATE on every space
    # and answers "ERR invalid format"; conveyor deliberately reads the JSON and discards.
    assert result["mutate_spaced"] == "OK"
    assert result["after_mutate"]["dead"] == 1
    assert result["after_mutate"]["scheduled"] == 0
    assert (result["pause"], result["resume"], result["remove"]) == ("OK", "OK", "OK")
    assert set(result["latency"]) == {"default", "critical"}
    assert result["unknown"] == "ERR unknown command NOPE"
    final = result["final_info"]["faktory"]
    assert "critical" not in final["queues"]
    assert (final["total_processed"], final["total_failures"]) == (2, 1)

    retried = await server.manager.locate("cdrx-job-2")
    assert retried is not None
    assert retried.where == "retries"
    assert b'"message":"boom"' in retried.payload


@pytest.mark.parametrize("mode", MODES)
async def test_pyfaktory(make_server: MakeServer, self_signed_cert: CertFiles, mode: str) -> None:
    server = await start(make_server, mode, self_signed_cert)
    result = await run_client("pyfaktory", server.url)

    assert result["push"] == [True, True, True]
    assert result["push_bulk"] == {}
    assert list(result["push_bulk_bad"]) == ["pyf-bad-job"]
    assert "jobtype" in result["push_bulk_bad"]["pyf-bad-job"]
    assert result["info"]["faktory"]["queues"] == {"default": 5, "critical": 1}
    assert result["mutate_kill"] is True
    assert result["after_kill"]["scheduled"] == 0
    assert result["after_kill"]["dead"] == 1
    assert result["mutate_requeue"] is True
    assert result["after_requeue"]["sets"]["dead"] == 0
    assert result["after_requeue"]["queues"]["default"] == 6
    assert result["pause"] is True
    assert result["resume_all"] is True
    first, second = result["fetched"]
    assert first["jid"] == "pyf-job-2"
    assert first["reserve_for"] == 1800  # pyfaktory sends its defaults explicitly
    assert second["jid"] == "pyf-job-1"
    assert (result["ack"], result["fail"], result["beat"]) == (True, True, True)
    worker_info = json.loads(result["worker_info"].split("\r\n", 1)[1])  # raw bulk reply
    assert worker_info["faktory"]["tasks"]["Workers"]["size"] == 1
    final = result["final_info"]["faktory"]
    assert final["queues"].get("default", 0) == 0
    assert final["sets"]["retries"] == 1
    assert (final["total_processed"], final["total_failures"]) == (2, 1)

    retried = await server.manager.locate("pyf-job-2")
    assert retried is not None
    assert retried.where == "retries"
    assert b'"backtrace":["a.py:1"]' in retried.payload


async def test_pyfaktory_batches(make_server: MakeServer) -> None:
    """pyfaktory's BATCH NEW/COMMIT/STATUS (Faktory Enterprise) work unchanged."""
    server = await make_server()
    result = await run_client("pyfaktory-batch", server.url)

    bid = result["bid"]
    assert bid.startswith("b-")
    assert result["push"] == [True, True, True]
    assert result["commit"] is True
    before = result["status_before"]
    assert (before["total"], before["pending"], before["description"]) == (3, 3, "interop")
    callback = result["callback"]
    assert (callback["jobtype"], callback["args"]) == ("AlbumDone", ["summer"])
    assert callback["custom"] == {"_bid": bid, "_cb": "success"}
    after = result["status_after"]
    assert (after["pending"], after["success_st"], after["complete_st"]) == (0, "2", "")
    assert "no such batch b-nope" in result["open_unknown"]


async def test_both_against_the_conveyor_server_command(spawn_server: SpawnServer) -> None:
    """The whole `conveyor server` process (SQLite storage, password), not just the library."""
    process = await asyncio.to_thread(spawn_server, password="cli-pw")
    cdrx = await run_client("cdrx", process.url)
    assert cdrx["fetched"][0]["jid"] == "cdrx-job-2"
    assert (cdrx["ack"], cdrx["fail"], cdrx["beat"]) == ("OK", "OK", "OK")
    assert cdrx["final_info"]["faktory"]["total_processed"] == 2
    pyf = await run_client("pyfaktory", process.url)  # the counters keep counting across both
    assert pyf["fetched"][0]["jid"] == "pyf-job-2"
    assert pyf["final_info"]["faktory"]["total_processed"] == 4
    assert pyf["final_info"]["faktory"]["sets"]["retries"] == 2
