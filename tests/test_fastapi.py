"""The Starlette/FastAPI lifespan with the real frameworks: FastAPI's TestClient (which runs
the lifespan) against a real conveyor server (``conveyor.testing``'s, in its own thread)."""

from __future__ import annotations

import time
from typing import Any

import fastapi
import pytest
from fastapi.testclient import TestClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import conveyor
from conveyor.contrib.starlette import conveyor_lifespan
from conveyor.errors import ConnectError
from conveyor.testing import TestServer


def wait_until(check: Any, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_fastapi_pushes_and_its_worker_runs_the_jobs(conveyor_server: TestServer) -> None:
    jobs = conveyor.App(conveyor_server.url)
    welcomed: list[int] = []

    @jobs.job
    async def send_welcome(user_id: int) -> None:
        welcomed.append(user_id)

    api = fastapi.FastAPI(lifespan=conveyor_lifespan(jobs, worker={"concurrency": 2}))

    @api.post("/users/{user_id}")
    async def create(user_id: int, request: Request) -> dict[str, Any]:
        jid = await send_welcome.push(user_id)
        running = request.state.conveyor_worker
        return {"jid": jid, "same_app": request.state.conveyor is jobs, "wid": running.wid}

    with TestClient(api) as client:
        replies = [client.post(f"/users/{n}").json() for n in (1, 2, 3)]
        assert all(reply["same_app"] for reply in replies)
        wait_until(lambda: sorted(welcomed) == [1, 2, 3])
        wid = replies[0]["wid"]
        assert [w.wid for w in _workers(conveyor_server)] == [wid]  # registered while it runs
    # after shutdown the worker has said goodbye: the server forgets it at once
    wait_until(lambda: not _workers(conveyor_server))


def _workers(server: TestServer) -> list[Any]:
    return list(server._thread.run(server.manager.store.list_workers()))


def test_push_only_with_starlette(conveyor_server: TestServer) -> None:
    jobs = conveyor.App(conveyor_server.url)

    @jobs.job(queue="later")
    async def report(name: str) -> None: ...

    async def endpoint(request: Request) -> JSONResponse:
        return JSONResponse({"jid": await report.push(request.path_params["name"])})

    api = Starlette(routes=[Route("/r/{name}", endpoint, methods=["POST"])],
                    lifespan=conveyor_lifespan(jobs))  # fmt: skip
    with TestClient(api) as client:
        jid = client.post("/r/weekly").json()["jid"]
        queued = conveyor_server._thread.run(conveyor_server.manager.list_queue("later", 0, 5))
        assert [conveyor.job.decode_job(q.payload).jid for q in queued.items] == [jid]
        assert not _workers(conveyor_server)  # no worker was asked for


def test_a_wrong_url_fails_the_startup() -> None:
    jobs = conveyor.App("tcp://127.0.0.1:1", retry_seconds=0.1)
    api = fastapi.FastAPI(lifespan=conveyor_lifespan(jobs))
    with pytest.raises(ConnectError), TestClient(api):
        pass
