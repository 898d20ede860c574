"""``conveyor job result``, ``conveyor job ls completed`` and ``conveyor job show`` with states
and results, against a real ``conveyor server`` subprocess (docs/cli.md)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner, Result

from conveyor.cli import main
from conveyor.client import SyncClient
from conveyor.console.common import EXIT_JOB_FAILED, EXIT_NOT_FOUND, EXIT_UNSUPPORTED
from tests.support.server import MakeServer, ServerProcess, SpawnServer


@pytest.fixture
def served(spawn_server: SpawnServer) -> ServerProcess:
    return spawn_server()


@pytest.fixture
def cli(served: ServerProcess, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("CONVEYOR_URL", f"tcp://127.0.0.1:{served.port}")
    runner = CliRunner()

    def run(*args: str) -> Result:
        return runner.invoke(main, list(args), catch_exceptions=False)

    return run


@pytest.fixture
def client(served: ServerProcess) -> Iterator[SyncClient]:
    with SyncClient.connect(served.url) as connected:
        yield connected


def finish(client: SyncClient, jid: str, custom: dict[str, Any], result: bytes | None) -> None:
    client.push({"jid": jid, "jobtype": "Report", "args": [1], "custom": custom})
    job = client.fetch("default")
    assert job is not None
    assert job["jid"] == jid
    if result is None:
        client.fail(jid, "ValueError", "bad input", ["app.py:3 in report", "raise ValueError"])
    else:
        client.ack(jid, result=result)


def test_job_result_prints_the_value_or_the_error(cli: Any, client: SyncClient) -> None:
    finish(client, "jid-cli-ok01", {"result_ttl": 60}, b'{"rows":12,"file":"r.csv"}')
    shown = cli("job", "result", "jid-cli-ok01")
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout) == {"rows": 12, "file": "r.csv"}
    as_json = cli("job", "result", "jid-cli-ok01", "--json")
    outcome = json.loads(as_json.stdout)
    assert (outcome["state"], outcome["result"]) == ("succeeded", {"rows": 12, "file": "r.csv"})

    finish(client, "jid-cli-bad1", {"result_ttl": 60}, None)
    failed = client.raw(b'RESULT {"jid":"jid-cli-bad1"}')
    assert failed.kind.name == "NULL"  # retries left: it has not ended
    client.mutate("kill", "retries", {"jids": ["jid-cli-bad1"]})
    died = cli("job", "result", "jid-cli-bad1")
    assert died.exit_code == EXIT_JOB_FAILED
    assert "ValueError: bad input" in died.stderr
    assert "raise ValueError" in died.stderr

    missing = cli("job", "result", "jid-nothing1", "--wait", "0.2")
    assert missing.exit_code == EXIT_NOT_FOUND
    assert "no result for jid-nothing1" in missing.stderr


def test_completed_jobs_are_listed_searched_and_shown(cli: Any, client: SyncClient) -> None:
    finish(client, "jid-cli-kept", {"retain": 3600}, b'"weekly report done"')
    finish(client, "jid-cli-too2", {"retain": 3600}, b"[1,2,3]")
    listed = cli("job", "ls", "completed", "--json")
    rows = json.loads(listed.stdout)
    assert rows["total"] == 2
    assert {row["jid"] for row in rows["jobs"]} == {"jid-cli-kept", "jid-cli-too2"}
    searched = json.loads(cli("job", "ls", "completed", "--search", "WEEKLY", "--json").stdout)
    assert [row["jid"] for row in searched["jobs"]] == ["jid-cli-kept"]
    table = cli("job", "ls", "completed")
    assert table.exit_code == 0
    assert "FINISHED" in table.stdout
    assert "RAN" in table.stdout
    assert '"weekly report done"' in table.stdout
    shown = cli("job", "show", "jid-cli-kept")
    assert "state" in shown.stdout
    assert "completed" in shown.stdout
    assert "expires at" in shown.stdout
    assert '"weekly report done"' in shown.stdout
    assert cli("job", "delete", "jid-cli-kept").exit_code == 0
    assert json.loads(cli("job", "ls", "completed", "--json").stdout)["total"] == 1


async def test_job_result_against_a_server_without_result(make_server: MakeServer) -> None:
    from conveyor.server import COMMANDS

    server = await make_server()
    saved = COMMANDS.pop("RESULT")
    try:
        runner = CliRunner()
        url = f"tcp://127.0.0.1:{server.port}"
        result = await asyncio.to_thread(
            runner.invoke, main, ["job", "result", "j", "--url", url], catch_exceptions=False
        )
    finally:
        COMMANDS["RESULT"] = saved
    assert result.exit_code == EXIT_UNSUPPORTED
    assert "does not support conveyor's RESULT extension" in result.stderr
