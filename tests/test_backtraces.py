"""Backtraces on the dashboard start with the handler's frames, not the worker's."""

from __future__ import annotations

import re

import httpx

import conveyor
import conveyor.testing
from conveyor.backtraces import trim
from conveyor.web import create_app
from tests.support.server import RunningServer

app = conveyor.App()


def parse_amount(text: str) -> int:
    return int(text)


@app.job(retry=1)
async def charge(amount: str) -> None:
    parse_amount(amount)


@app.job(retry=1)
def charge_sync(amount: str) -> None:  # a plain def: the thread pool's frames too
    parse_amount(amount)


async def test_a_failed_jobs_page_shows_the_handler_first(server: RunningServer) -> None:
    app.url = server.url
    await charge.push("12 euros")
    await charge_sync.push("7 dollars")
    worker = await conveyor.testing.drain(app)
    await app.aclose()
    assert worker.failed == 2
    transport = httpx.ASGITransport(app=create_app(server.manager))
    async with httpx.AsyncClient(transport=transport, base_url="http://dash.test") as web:
        retries = (await web.get("/api/sets/retries")).json()["jobs"]
        assert len(retries) == 2
        for row in retries:
            page = await web.get(f"/retries/{row['key']}")
            shown, full = re.findall(r'<pre class="backtrace">(.*?)</pre>', page.text, re.S)
            assert "conveyor/worker/" not in shown
            assert "conveyor/worker/" in full  # one click away
            frames = re.findall(r"File &#34;([^&]+)&#34;", shown)
            assert frames[0].endswith("tests/test_backtraces.py")  # the handler comes first
            assert shown.rstrip().endswith(
                "invalid literal for int() with base 10: &#39;" + row["job"]["args"][0] + "&#39;"
            )
            assert re.search(r"\d+ frames? of conveyor's worker hidden", page.text)


def test_trim_keeps_the_handlers_frames_and_chained_exceptions() -> None:
    lines = [
        "Traceback (most recent call last):",
        '  File "/srv/venv/lib/site-packages/conveyor/worker/execute.py", line 9, in x',
        "    await handler(*args)",
        '  File "/usr/lib/python3.12/asyncio/tasks.py", line 3, in wrapper',
        "    return await f()",
        "           ^^^^^^^^^",
        '  File "/srv/app/jobs.py", line 5, in charge',
        "    parse(x)",
        "KeyError: 'x'",
        "",
        "During handling of the above exception, another exception occurred:",
        "",
        "Traceback (most recent call last):",
        '  File "/srv/app/jobs.py", line 7, in charge',
        "    raise ValueError('bad')",
        "ValueError: bad",
    ]
    kept, hidden = trim(lines)
    assert hidden == 2
    assert kept == [lines[0], *lines[6:]]
    only_ours = [*lines[:3], "RuntimeError: inside conveyor"]
    assert trim(only_ours) == (only_ours, 0)  # nothing but conveyor's frames: keep them all
    assert trim([]) == ([], 0)
