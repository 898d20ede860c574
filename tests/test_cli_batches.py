"""``conveyor batch ls|show`` and what ``conveyor job show`` says of tracked, batch and
waiting jobs, against a real ``conveyor server`` subprocess (docs/cli.md)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner, Result

from conveyor.cli import main
from conveyor.client import SyncClient
from conveyor.console.common import EXIT_NOT_FOUND
from tests.support.server import ServerProcess, SpawnServer


@pytest.fixture
def served(spawn_server: SpawnServer) -> ServerProcess:
    return spawn_server()


@pytest.fixture
def cli(served: ServerProcess, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("CONVEYOR_URL", served.url)
    runner = CliRunner()

    def run(*args: str) -> Result:
        return runner.invoke(main, list(args), catch_exceptions=False)

    return run


@pytest.fixture
def client(served: ServerProcess) -> Iterator[SyncClient]:
    with SyncClient.connect(served.url) as connected:
        yield connected


def as_json(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def job(**fields: Any) -> dict[str, Any]:
    return {"jid": uuid.uuid4().hex, "jobtype": "T", "args": [], **fields}


def test_batch_ls_and_show(cli: Any, client: SyncClient) -> None:
    callback = job(jobtype="Done", queue="callbacks")
    bid = client.batch_new({"description": "thumbnails", "success": callback})
    other = client.batch_new({"description": "emails", "complete": job(jobtype="Sent")})
    child = client.batch_new({"parent_bid": bid, "success": job(jobtype="ChildDone")})
    jids = [client.push(job(custom={"bid": bid})) for _ in range(3)]
    client.batch_commit(bid)
    fetched = client.fetch("default")
    assert fetched is not None
    client.ack(fetched["jid"])

    listed = as_json(cli("batch", "ls", "--json"))
    assert listed["total"] == 3
    assert [b["bid"] for b in listed["batches"]] == [child, other, bid]
    found = as_json(cli("batch", "ls", "--search", "THUMB", "--json"))
    (shown,) = found["batches"]
    assert (shown["bid"], shown["total"], shown["succeeded"], shown["committed"]) == (
        bid,
        3,
        1,
        True,
    )
    table = cli("batch", "ls")
    assert table.exit_code == 0
    assert "thumbnails" in table.stdout
    assert "1/3 succeeded" in table.stdout

    detail = as_json(cli("batch", "show", bid, "--json"))
    assert detail["success"] == {
        "jid": callback["jid"], "jobtype": "Done", "queue": "callbacks", "state": ""
    }  # fmt: skip
    assert [c["bid"] for c in detail["children_batches"]] == [child]
    assert [j["jid"] for j in detail["jobs"]] == jids
    assert {j["state"] for j in detail["jobs"]} == {"enqueued", "success"}
    assert detail["expires_at"] > detail["created_at"]
    text = cli("batch", "show", bid)
    assert "3 total, 2 pending, 0 failed" in text.stdout
    assert f"child {child}" in text.stdout

    missing = cli("batch", "show", "b-nope")
    assert missing.exit_code == EXIT_NOT_FOUND
    assert "no such batch b-nope" in missing.stderr


def test_job_show_tells_tracking_batch_and_dependencies(cli: Any, client: SyncClient) -> None:
    bid = client.batch_new({"success": job(jobtype="Done")})
    member = client.push(job(custom={"bid": bid}))
    client.track_set(member, percent=40, desc="resizing")
    waiting = client.push(job(custom={"after": [member]}))
    shown = as_json(cli("job", "show", member, waiting, "--json"))
    assert shown[0]["batch"] == bid
    assert shown[0]["tracking"]["percent"] == 40
    assert shown[0]["tracking"]["state"] == "enqueued"
    assert shown[1]["where"] == "waiting"
    text = cli("job", "show", waiting)
    assert "waits for" in text.stdout
    assert "waiting" in text.stdout
    refused = cli("job", "retry", waiting)
    assert refused.exit_code == EXIT_NOT_FOUND
    assert "waiting for other jobs" in refused.stderr
