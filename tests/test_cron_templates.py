"""A cron entry whose job every PUSH would refuse is refused when it is added, from the file,
``ADMIN cron.add`` (and the ``CRON ADD`` alias), the JSON API, the CLI and ``@app.cron``,
with the message the PUSH gives, after the entry and the field it blames."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

import conveyor
from conveyor.client import Client
from conveyor.config import ConfigError, load_config
from conveyor.errors import CommandError
from conveyor.manager import ManagerConfig
from conveyor.manager.features.cron import CronFeature
from conveyor.manager.validation import TOO_DEEP
from conveyor.web import create_app
from tests.support.server import TEST_TIMINGS, MakeServer, RunningServer

LIMITS = ManagerConfig(
    fetch_wait_seconds=TEST_TIMINGS.fetch_wait_seconds,
    max_reserve_for_seconds=3600,
    max_payload_bytes=20_000,
)
DEEP_ARGS: list[Any] = [1]
for _ in range(70):
    DEEP_ARGS = [DEEP_ARGS]
RESERVED_TOO_LONG = "jobs cannot be reserved for more than one day"


def entry(entry_id: str, **job: Any) -> dict[str, Any]:
    return {"id": entry_id, "schedule": "@hourly", "job": {"type": "Report", **job}}


@pytest.fixture
async def limited(make_server: MakeServer) -> RunningServer:
    return await make_server(config=LIMITS)


async def push_refusal(client: Client, **job: Any) -> str:
    """The message a plain PUSH of this job gets from the server."""
    with pytest.raises(CommandError) as refused:
        await client.push({"jid": "pushed-0001", "jobtype": "Report", "args": [], **job})
    return refused.value.message


def same_refusal(message: str, push_message: str) -> bool:
    """The PUSH's message, but for the byte count of a payload over the limit (the job a
    tick makes carries the cron keys too)."""
    size = re.compile(r"job payload is \d+ bytes")
    return size.sub("job payload is N bytes", message) == size.sub(
        "job payload is N bytes", push_message
    )


async def test_the_wire_refuses_what_a_push_would_with_the_push_message(
    limited: RunningServer,
) -> None:
    cases = [
        ("deep", {"args": DEEP_ARGS}, "job.args"),
        ("deep-custom", {"custom": {"k": DEEP_ARGS}}, "job.custom"),
        ("long", {"reserve_for": 7200}, "job.reserve_for"),
        ("big", {"args": ["x" * 25_000]}, "job"),
    ]
    async with await Client.connect(limited.url) as client:
        for entry_id, job, field in cases:
            expected = await push_refusal(client, **job)
            prefix = f'cron entry (id "{entry_id}") {field}: '
            with pytest.raises(CommandError) as caught:
                await client.admin("cron.add", entry(entry_id, **job))
            assert caught.value.message.startswith(prefix)
            assert same_refusal(caught.value.message[len(prefix) :], expected)
            alias = await client.raw(b"CRON ADD " + msgspec.json.encode(entry(entry_id, **job)))
            assert alias.text == f"ERR {caught.value.message}"
        assert (await client.admin("cron.list"))["entries"] == []  # nothing was stored
        # within the limits, the same entries are taken
        await client.admin("cron.add", entry("fine", reserve_for=3600, args=[[[1]]]))
        assert [e["id"] for e in (await client.admin("cron.list"))["entries"]] == ["fine"]


async def test_a_refusal_names_the_push_messages_of_this_server(limited: RunningServer) -> None:
    async with await Client.connect(limited.url) as client:
        assert await push_refusal(client, reserve_for=7200) == RESERVED_TOO_LONG
        assert "job payload is" in await push_refusal(client, args=["x" * 25_000])
        assert await push_refusal(client, args=DEEP_ARGS) == TOO_DEEP


async def test_the_json_api_refuses_it_with_400(limited: RunningServer) -> None:
    app = create_app(limited.manager)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as web:
        response = await web.post("/api/cron", json=entry("api", reserve_for=7200))
    assert response.status_code == 400
    assert response.json() == {
        "error": f'cron entry (id "api") job.reserve_for: {RESERVED_TOO_LONG}'
    }
    assert limited.manager.feature(CronFeature).entries == {}


def test_a_file_entry_is_checked_against_the_servers_limits(tmp_path: Path) -> None:
    config_file = tmp_path / "conveyor.toml"
    config_file.write_text(
        "[lifecycle]\nmax_reserve_for_seconds = 3600\n"
        '[[cron]]\nid = "ok"\nschedule = "@daily"\n[cron.job]\ntype = "A"\n'
        '[[cron]]\nid = "long"\nschedule = "@daily"\n[cron.job]\ntype = "B"\n'
        "reserve_for = 7200\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config({"config": str(config_file)}, environ={})
    assert str(caught.value) == f'[[cron]] #2 (id "long") job.reserve_for: {RESERVED_TOO_LONG}'
    # the same file under the default limit (one day) is fine
    config_file.write_text(config_file.read_text().replace("3600", "86400"))
    features = load_config({"config": str(config_file)}, environ={}).build_features()
    (cron,) = [feature for feature in features if isinstance(feature, CronFeature)]
    assert sorted(cron.entries) == ["long", "ok"]


def test_a_file_entry_nested_too_deeply_is_refused(tmp_path: Path) -> None:
    config_file = tmp_path / "conveyor.toml"
    config_file.write_text(
        '[[cron]]\nid = "deep"\nschedule = "@daily"\n[cron.job]\ntype = "A"\n'
        f"args = {'[' * 70}1{']' * 70}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config({"config": str(config_file)}, environ={})
    assert str(caught.value) == f'[[cron]] #1 (id "deep") job.args: {TOO_DEEP}'


async def test_the_cli_exits_3_with_the_message(limited: RunningServer) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "conveyor", "cron", "add", "@daily", "Report",
        "--id", "cli", "--reserve-for", "7200", "--url", limited.url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    _, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 3
    assert f'cron entry (id "cli") job.reserve_for: {RESERVED_TOO_LONG}' in err.decode()


async def test_app_cron_checks_the_template_where_declared_and_at_the_server(
    limited: RunningServer,
) -> None:
    app = conveyor.App(limited.url)

    @app.job
    async def report(*levels: Any) -> None: ...

    with pytest.raises(ValueError, match=r'on report \(id "report"\) job.args: jobs cannot nest'):
        app.cron("@daily", args=DEEP_ARGS)(report)
    assert app.crons.entries == {}
    # a reservation the default limit takes but this server does not: refused when it
    # registers, with the server's message
    app.cron("@daily", reserve_for=7200)(report)
    with pytest.raises(CommandError, match=r'\(id "report"\) job.reserve_for: jobs cannot be'):
        await app.register_crons()
    await app.aclose()
    assert limited.manager.feature(CronFeature).entries == {}
