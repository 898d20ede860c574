"""``conveyor job cancel`` and ``conveyor group ls|show`` against a real ``conveyor server``
subprocess over loopback (docs/cli.md): what they print, their JSON and exit codes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner, Result

from conveyor.cli import main
from conveyor.client import SyncClient
from conveyor.console.common import EXIT_NOT_FOUND
from tests.support.server import ServerProcess, SpawnServer

AGGREGATE = {"max_size": 50, "max_delay": 3600, "grace": 3600}


@pytest.fixture
def served(spawn_server: SpawnServer) -> ServerProcess:
    return spawn_server()


@pytest.fixture
def cli(served: ServerProcess, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("CONVEYOR_URL", served.url)
    runner = CliRunner()

    def run(*args: str, input: str | None = None) -> Result:
        return runner.invoke(main, list(args), input=input, catch_exceptions=False)

    return run


@pytest.fixture
def client(served: ServerProcess) -> Iterator[SyncClient]:
    with SyncClient.connect(served.url) as connected:
        yield connected


def test_job_cancel_says_what_it_did_to_each_job(cli: Any, client: SyncClient) -> None:
    queued = client.push({"jobtype": "Email", "args": [1]})
    later = client.push({"jobtype": "Email", "args": [2], "at": "2099-01-01T00:00:00Z"})
    member = client.push(
        {"jobtype": "Digest", "args": [3], "custom": {"group": "g", "aggregate": AGGREGATE}}
    )
    done = cli("job", "cancel", queued, later, member, "--json")
    assert done.exit_code == 0, done.output
    report = json.loads(done.stdout)
    assert report["asked"] == 3
    assert [(j["jid"], j["outcome"], j["was"]) for j in report["jobs"]] == [
        (queued, "cancelled", "queued"),
        (later, "cancelled", "scheduled"),
        (member, "cancelled", "aggregating"),
    ]
    again = cli("job", "cancel", "-", input=f"{queued}\nnever-seen-1\n")
    assert again.exit_code == EXIT_NOT_FOUND  # one of them is unknown
    assert "Cancelled 0 jobs." in again.stdout
    assert "never-seen-1: no such job" in again.stderr
    assert queued not in again.stderr  # already cancelled: not an error
    shown = cli("job", "show", member)
    assert shown.exit_code == 0, shown.output
    assert "cancelled" in shown.stdout
    assert "was" in shown.stdout
    assert "aggregating" in shown.stdout
    info = client.info()
    assert info["features"]["cancellation"]["cancelled"] == 3
    assert info["faktory"]["sets"]["scheduled"] == 0


def test_groups_are_listed_and_shown(cli: Any, client: SyncClient) -> None:
    assert cli("group", "ls").stdout.strip() == "No jobs are waiting in aggregating groups."
    for n in range(3):
        client.push(
            {"jobtype": "Digest", "args": [n], "custom": {"group": "alice", "aggregate": AGGREGATE}}
        )
    client.push(
        {
            "jobtype": "Digest",
            "args": [9],
            "queue": "low",
            "custom": {"group": "bob", "aggregate": AGGREGATE},
        }
    )
    listed = json.loads(cli("group", "ls", "--json").stdout)
    assert listed["total"] == 2
    assert [(g["queue"], g["group"], g["size"], g["max_size"]) for g in listed["groups"]] == [
        ("default", "alice", 3, 50),
        ("low", "bob", 1, 50),
    ]
    table = cli("group", "ls")
    assert "alice" in table.stdout
    assert "3/50" in table.stdout
    assert "2 groups shown of 2" in table.stdout
    shown = json.loads(cli("group", "show", "Digest", "alice", "--json").stdout)
    assert shown["group"]["size"] == 3
    assert [m["args"] for m in shown["members"]] == ["[0]", "[1]", "[2]"]
    low = cli("group", "show", "Digest", "bob", "--queue", "low")
    assert low.exit_code == 0
    assert "bob" in low.stdout
    assert "ADDED" in low.stdout  # a member was never enqueued: when it joined its group
    assert " ago" in low.stdout
    missing = cli("group", "show", "Digest", "carol")
    assert missing.exit_code == EXIT_NOT_FOUND
    assert "no aggregating group" in missing.stderr
