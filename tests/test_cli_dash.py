"""``conveyor dash`` driven headless (textual's pilot) against a real server over loopback."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from textual.widgets import DataTable, Sparkline, Static

from conveyor.client import Client
from conveyor.console.dash import Dashboard, Feed, JobScreen, JobsScreen
from tests.support.server import RunningServer

SIZE = (140, 40)


async def until(check: Callable[[], bool], pilot_pause: Callable[[], Awaitable[None]]) -> None:
    for _ in range(200):
        if check():
            return
        await pilot_pause()
        await asyncio.sleep(0.02)
    raise AssertionError("the dashboard never showed it")


def cells(table: DataTable) -> list[list[str]]:
    return [[str(cell) for cell in table.get_row_at(n)] for n in range(table.row_count)]


async def test_dash_shows_numbers_queues_and_browses_to_a_job(server: RunningServer) -> None:
    async with await Client.connect(server.url) as producer:
        for n in range(3):
            await producer.push({"jid": f"dash-job-{n}", "jobtype": "Email", "args": [n]})
        await producer.push({"jid": "dash-sms-1", "jobtype": "Sms", "args": [], "queue": "sms"})
        app_client = await Client.connect(server.url)
        app = Dashboard(Feed(app_client), refresh=0.2)
        async with app.run_test(size=SIZE) as pilot:
            queues = app.query_one("#queues", DataTable)
            await until(lambda: queues.row_count == 2, pilot.pause)
            assert [row[:2] for row in cells(queues)] == [["default", "3"], ["sms", "1"]]
            enqueued = app.query_one("#n-enqueued", Static)
            assert "4" in str(enqueued.render())

            # work happens: the processed rate rises on the sparkline
            for _ in range(3):
                job = await producer.fetch("default")
                assert job is not None
                await producer.ack(job["jid"])
            spark = app.query_one("#processed-rate", Sparkline)
            await until(lambda: max(spark.data or [0]) > 0, pilot.pause)

            # p pauses the queue under the cursor (default), and p again resumes it
            await pilot.press("p")
            await until(lambda: "paused" in str(cells(queues)[0]), pilot.pause)
            assert await server.manager.store.paused_queues() == {"default"}
            await pilot.press("p")
            await until(lambda: "paused" not in str(cells(queues)[0]), pilot.pause)
            assert await server.manager.store.paused_queues() == set()

            # Enter on sms lists its job, Enter on the job shows it, Escape goes back
            await pilot.press("down", "enter")
            await until(lambda: isinstance(app.screen, JobsScreen), pilot.pause)
            jobs = app.screen.query_one("#jobs", DataTable)
            await until(lambda: jobs.row_count == 1, pilot.pause)
            assert cells(jobs)[0][:3] == ["dash-sms-1", "Sms", "sms"]
            await pilot.press("enter")
            await until(lambda: isinstance(app.screen, JobScreen), pilot.pause)
            payload = str(app.screen.query_one("#job-payload", Static).render())
            assert '"jid": "dash-sms-1"' in payload
            await pilot.press("escape")
            await until(lambda: isinstance(app.screen, JobsScreen), pilot.pause)
            await pilot.press("escape")
            await until(lambda: not isinstance(app.screen, JobsScreen), pilot.pause)

            # r lists the retries: a failed job shows with its error
            await producer.push({"jid": "dash-fail-1", "jobtype": "Boom", "args": []})
            job = await producer.fetch("default")
            assert job is not None
            await producer.fail(job["jid"], "RuntimeError", "kaput")
            await pilot.press("r")
            await until(lambda: isinstance(app.screen, JobsScreen), pilot.pause)
            retries = app.screen.query_one("#jobs", DataTable)
            await until(lambda: retries.row_count == 1, pilot.pause)
            row = cells(retries)[0]
            assert row[0] == "dash-fail-1"
            assert "RuntimeError: kaput" in row[4]
            await pilot.press("escape", "q")
        await app_client.close()
    assert app.polls >= 2
