"""The Python library and the npm ``faktory-worker`` client, both ways, on a real server.

* Node pushes -> ``conveyor.App`` worker runs them (typed model, positional args, and a payload
  that fails validation and goes to the dead set);
* Python pushes (typed ``push``, options, bulk) -> a Node ``Worker`` runs them.

``tests/interop/node/worker_library.js`` does the Node side through the package's public API.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import msgspec
import pytest

import conveyor
import conveyor.job
import conveyor.testing
from tests.support.interop import run_node
from tests.support.server import RunningServer

pytestmark = pytest.mark.interop


async def node(scenario: str, url: str, **env: str) -> dict[str, Any]:
    return await run_node("worker_library.js", scenario, url=url, **env)


@dataclasses.dataclass
class Email:
    to: str
    subject: str


class Greeting(msgspec.Struct):
    name: str
    langs: list[str]


async def test_node_pushes_python_worker_processes(server: RunningServer) -> None:
    app = conveyor.App(server.url)
    seen: list[Any] = []

    @app.job(queue="emails")
    async def send_email(msg: Email) -> None:
        ctx = conveyor.current_job()
        seen.append(("email", msg, ctx.queue, dict(ctx.custom)))

    @app.job
    def add(a: int, b: int) -> None:
        seen.append(("add", a + b))

    pushed = await node("push", server.url)
    jids = pushed["jids"]
    worker = await conveyor.testing.drain(app, queues=["emails", "default"])
    assert ("email", Email("node@example.com", "from node"), "emails", {"origin": "node"}) in seen
    assert ("add", 42) in seen
    assert worker.processed == 3
    assert worker.failed == 1
    found = await server.manager.locate(jids["bad"])
    assert found is not None
    assert found.where == "dead"  # a payload that can never fit is not retried
    failure = conveyor.job.decode_job(found.payload).failure
    assert failure is not None
    assert failure["errtype"] == "conveyor.PayloadError"
    assert await server.manager.locate(jids["email"]) is None  # acked
    await app.aclose()


async def test_python_pushes_node_worker_processes(server: RunningServer) -> None:
    app = conveyor.App(server.url)

    @app.job
    async def node_greet(greeting: Greeting) -> None: ...

    @app.job(queue="math", retry=7)
    async def node_sum(a: int, b: float) -> None: ...

    jid1 = await node_greet.options(custom={"trace": "abc"}).push(Greeting("ada", ["en", "fr"]))
    results = await app.push_bulk([node_sum.build(1, 2.5), node_sum.build(3, 4)])
    assert all(r.ok for r in results)
    out = await node("work", server.url, JOBS="3", QUEUES="default,math")
    received = sorted(out["received"], key=lambda r: json.dumps(r))
    assert received == [
        {"jobtype": "node_greet", "args": [{"name": "ada", "langs": ["en", "fr"]}]},
        {"jobtype": "node_sum", "args": [1, 2.5]},
        {"jobtype": "node_sum", "args": [3, 4]},
    ]
    assert out["jobs"][jid1] == {"queue": "default", "custom": {"trace": "abc"}, "retry": 25}
    assert out["jobs"][results[0].jid]["retry"] == 7
    assert out["jobs"][results[0].jid]["queue"] == "math"
    await app.aclose()
