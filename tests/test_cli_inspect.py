"""The inspector CLI (``conveyor stats|queue|job|push|worker ls``) against a real ``conveyor
server`` subprocess over loopback: JSON output, tables and exit codes (docs/cli.md)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner, Result

from conveyor.cli import main
from conveyor.client import SyncClient
from conveyor.console.common import EXIT_CONNECT, EXIT_NOT_FOUND, EXIT_UNSUPPORTED, EXIT_USAGE
from conveyor.server import COMMANDS
from tests.support.server import MakeServer, ServerProcess, SpawnServer
from tests.support.services import free_port


@pytest.fixture
def served(spawn_server: SpawnServer) -> ServerProcess:
    """A real ``conveyor server`` over SQLite, with a password."""
    return spawn_server(password="s3cret")


@pytest.fixture
def cli(served: ServerProcess, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("CONVEYOR_URL", f"tcp://127.0.0.1:{served.port}")
    monkeypatch.setenv("CONVEYOR_PASSWORD", "s3cret")
    runner = CliRunner()

    def run(*args: str, input: str | None = None) -> Result:
        return runner.invoke(main, list(args), input=input, catch_exceptions=False)

    return run


@pytest.fixture
def client(served: ServerProcess) -> Iterator[SyncClient]:
    with SyncClient.connect(served.url) as connected:
        yield connected


def as_json(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def fail_next(client: SyncClient, queue: str = "default") -> str:
    job = client.fetch(queue)
    assert job is not None
    client.fail(job["jid"], "RuntimeError", "boom")
    return str(job["jid"])


def test_push_then_list_show_and_stats(cli: Any, client: SyncClient) -> None:
    pushed = as_json(cli("push", "Email", '["a@b.c", 2]', "--queue", "mail", "--json"))
    assert (pushed["jobtype"], pushed["args"], pushed["queue"]) == ("Email", ["a@b.c", 2], "mail")
    later = as_json(cli("push", "Email", "--in", "1h", "--retry", "3", "--json"))
    assert "at" in later
    listed = as_json(cli("job", "ls", "mail", "--json"))
    assert (listed["total"], [j["jid"] for j in listed["jobs"]]) == (1, [pushed["jid"]])
    scheduled = as_json(cli("job", "ls", "scheduled", "--json"))
    assert [(j["jid"], j["job"]["retry"]) for j in scheduled["jobs"]] == [(later["jid"], 3)]
    shown = as_json(cli("job", "show", pushed["jid"], "--json"))
    assert (shown[0]["where"], shown[0]["queue"], shown[0]["job"]["args"]) == (
        "queued",
        "mail",
        ["a@b.c", 2],
    )
    info = as_json(cli("stats", "--json"))  # the INFO document as the server sent it
    assert info["faktory"]["queues"] == {"mail": 1}
    assert info["faktory"]["sets"]["scheduled"] == 1
    table = cli("stats")
    assert table.exit_code == 0
    assert "SCHEDULED" in table.stdout
    assert "mail" in table.stdout
    person = cli("job", "ls", "mail")
    assert pushed["jid"] in person.stdout
    assert "1 job shown of 1" in person.stdout  # singular


def test_job_actions_and_their_exit_codes(cli: Any, client: SyncClient) -> None:
    jids = [client.push({"jobtype": "Flaky", "args": [n], "retry": 5}) for n in range(3)]
    failed = [fail_next(client) for _ in range(2)]
    assert failed == jids[:2]
    retried = cli("job", "retry", failed[0], jids[2], "nope", "--json")
    assert retried.exit_code == EXIT_NOT_FOUND
    assert json.loads(retried.stdout) == {
        "asked": 3,
        "changed": 1,
        "refused": {jids[2]: "already waiting in queue default", "nope": "not found"},
    }
    killed = cli("job", "kill", failed[1])
    assert killed.exit_code == 0
    assert "Killed 1 job." in killed.stdout
    dead = as_json(cli("job", "ls", "dead", "--json"))
    assert [j["jid"] for j in dead["jobs"]] == [failed[1]]
    deleted = cli("job", "delete", "-", input=f"{failed[1]}\n{jids[2]}\n\n")
    assert deleted.exit_code == 0, deleted.output
    assert "Deleted 2 jobs." in deleted.stdout
    queue = as_json(cli("job", "ls", "default", "--json"))
    assert [j["jid"] for j in queue["jobs"]] == [failed[0]]


def test_bulk_action_with_all_and_filters(cli: Any, client: SyncClient) -> None:
    for n in range(6):
        client.push({"jobtype": "A" if n % 2 else "B", "args": [n], "retry": 5})
    for _ in range(6):
        fail_next(client)
    refused = cli("job", "retry", "--all", "retries", "--jobtype", "A")
    assert refused.exit_code == EXIT_USAGE  # no terminal to ask, and no --yes
    assert "--yes" in refused.output
    done = as_json(cli("job", "retry", "--all", "retries", "--jobtype", "A", "--yes", "--json"))
    assert (done["asked"], done["changed"]) == (3, 3)
    left = as_json(cli("job", "ls", "retries", "--json"))
    assert sorted(j["job"]["jobtype"] for j in left["jobs"]) == ["B", "B", "B"]
    assert as_json(cli("job", "ls", "default", "--json"))["total"] == 3
    searched = as_json(cli("job", "ls", "default", "--search", "a", "--limit", "2", "--json"))
    assert len(searched["jobs"]) == 2  # "a" matches every payload ("args"): --limit cuts
    assert searched["total"] is None


def test_queues(cli: Any, client: SyncClient) -> None:
    for queue in ("mail", "mail", "sms"):
        client.push({"jobtype": "T", "args": [], "queue": queue})
    paused = cli("queue", "pause", "mail", "nope")
    assert paused.exit_code == EXIT_NOT_FOUND
    assert "Paused: mail." in paused.stdout
    assert "no queue named nope" in paused.stderr
    listed = as_json(cli("queue", "ls", "--json"))
    assert [(q["name"], q["size"], q["paused"]) for q in listed] == [
        ("mail", 2, True),
        ("sms", 1, False),
    ]
    inspected = as_json(cli("queue", "inspect", "mail", "--json"))
    assert (inspected[0]["size"], inspected[0]["paused"]) == (2, True)
    cleared = as_json(cli("queue", "clear", "mail", "--yes", "--json"))
    assert cleared == {"deleted": {"mail": 2}}
    assert as_json(cli("queue", "resume", "--all", "--json")) == {"resumed": ["mail", "sms"]}
    assert as_json(cli("queue", "remove", "sms", "--yes", "--json")) == {"removed": ["sms"]}
    assert [q["name"] for q in as_json(cli("queue", "ls", "--json"))] == ["mail"]
    assert cli("queue", "pause").exit_code == EXIT_USAGE  # neither names nor --all


def test_workers(cli: Any, served: ServerProcess) -> None:
    assert as_json(cli("worker", "ls", "--json")) == []
    with SyncClient.connect(served.url, wid="w-cli-1", labels=["eu"]) as worker:
        listed = as_json(cli("worker", "ls", "--json"))
        assert [(w["wid"], w["state"], w["labels"]) for w in listed] == [
            ("w-cli-1", "running", ["eu"])
        ]
        quieted = cli("worker", "quiet", "w-cli-1")
        assert (quieted.exit_code, quieted.stdout.strip()) == (0, "Quieted 1 worker.")
        assert worker.beat() == "quiet"
        missing = cli("worker", "stop", "w-cli-1", "w-gone")
        assert missing.exit_code == EXIT_NOT_FOUND
        assert worker.beat() == "terminate"


def test_bad_arguments_exit_2_and_change_nothing(cli: Any, client: SyncClient) -> None:
    for args in (
        ("push", "T", '{"not": "an array"}'),
        ("push", "T", "[1", "--json"),
        ("push", "T", "--in", "soon"),
        ("push", "T", "--at", "tomorrow"),
        ("push", "T", "--in", "5m", "--at", "2030-01-01T00:00:00Z"),
        ("job", "retry"),
        ("job", "retry", "x", "--all", "dead"),
    ):
        result = cli(*args)
        assert result.exit_code == EXIT_USAGE, (args, result.output)
        assert "error:" in result.stderr
    assert client.info()["faktory"]["total_enqueued"] == 0


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m conveyor ...`` as a real process."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("CONVEYOR_", "FAKTORY_"))}
    return subprocess.run(
        [sys.executable, "-m", "conveyor", *args],
        env={**environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_connection_and_password_errors_as_a_process(served: ServerProcess) -> None:
    url = f"tcp://127.0.0.1:{served.port}"
    ok = run_cli("stats", "--json", env={"FAKTORY_URL": url, "FAKTORY_PASSWORD": "s3cret"})
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["server"]["description"].startswith("conveyor")
    wrong = run_cli("queue", "ls", "--url", f"tcp://:nope@127.0.0.1:{served.port}")
    assert wrong.returncode == EXIT_CONNECT
    assert "refused the password" in wrong.stderr
    missing = run_cli("queue", "ls", "--url", url)
    assert missing.returncode == EXIT_CONNECT
    assert "requires a password" in missing.stderr
    nobody = run_cli("stats", "--url", f"tcp://127.0.0.1:{free_port()}")
    assert nobody.returncode == EXIT_CONNECT
    assert "cannot connect" in nobody.stderr
    assert "Traceback" not in nobody.stderr


async def test_a_server_without_the_extension_is_named_clearly(
    make_server: MakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that answers ``unknown command ADMIN`` (as Faktory does): the commands that
    need it say so, those built on standard commands still work."""
    monkeypatch.delitem(COMMANDS, "ADMIN")
    server = await make_server()
    await server.manager.push(b'{"jid":"faktory-1","jobtype":"T","args":[],"queue":"q"}')
    runner = CliRunner()
    url = ["--url", server.url]

    def invoke(*args: str) -> Result:
        return runner.invoke(main, [*args, *url], catch_exceptions=False)

    shown = await asyncio.to_thread(invoke, "job", "show", "faktory-1")
    assert shown.exit_code == EXIT_UNSUPPORTED
    assert "does not support conveyor's ADMIN extension" in shown.stderr
    queues = await asyncio.to_thread(invoke, "queue", "ls", "--json")
    assert queues.exit_code == 0  # INFO and QUEUE LATENCY: standard
    assert [(q["name"], q["size"], q["paused"]) for q in json.loads(queues.stdout)] == [
        ("q", 1, None)
    ]
    paused = await asyncio.to_thread(invoke, "queue", "pause", "q")
    assert paused.exit_code == 0
    assert await server.manager.store.paused_queues() == {"q"}
