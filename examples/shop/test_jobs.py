"""How an application tests its jobs (run with ``pytest examples/shop``).

``conveyor.testing`` gives an inline mode (jobs run as they are pushed, through the same JSON and
validation path a worker uses) and an in-process server with a burst worker.
"""

from __future__ import annotations

import pytest

import conveyor
import conveyor.testing
from examples.shop.jobs import SENT, Email, Order, app, charge, send_email


@pytest.fixture(autouse=True)
def clear_sent() -> None:
    SENT.clear()


async def test_charge_sends_a_receipt_inline() -> None:
    with conveyor.testing.inline(app):
        await charge.push(Order(id=7, items=["pen"], total_cents=250))
    assert SENT == ["charged order 7: 250 cents", "email to buyer@example.com: Receipt for order 7"]


async def test_bad_payload_is_rejected_inline() -> None:
    with conveyor.testing.inline(app), pytest.raises(conveyor.PayloadError):
        await app.push_job(conveyor.Job(jid="j" * 12, jobtype="send_email", args=[{"to": 1}]))


async def test_against_a_real_server(conveyor_server: conveyor.testing.TestServer) -> None:
    app.url = conveyor_server.url
    await send_email.push(Email("a@b.c", "hi"))
    worker = await conveyor.testing.drain(app, queues=["critical", "default"])
    await app.aclose()
    assert worker.processed == 1
    assert SENT == ["email to a@b.c: hi"]
