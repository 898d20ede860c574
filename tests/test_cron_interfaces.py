"""Cron from the outside: ``[[cron]]`` in the config file and ``conf.d``, SIGHUP, a bad file
stopping ``conveyor server``, ``ADMIN cron.*`` and the ``CRON`` alias, ``conveyor cron ...``,
the JSON API, and ``@app.cron`` registered by a worker and by the first push."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

import conveyor
from conveyor.client import Client
from conveyor.config import ConfigError, ServerConfig, load_config
from conveyor.errors import CommandError
from conveyor.manager import Manager
from conveyor.manager.features.cron import CronFeature
from conveyor.manager.features.cron_records import SPACE_META
from conveyor.server.admin import ADMIN_OPS
from conveyor.server.admin_cron import CRON_OPS
from conveyor.server.app import run
from conveyor.web import create_app
from tests.support.server import MakeServer, RawConnect, RunningServer
from tests.support.services import free_port

ENTRY = '[[cron]]\nid = "{id}"\nschedule = "{schedule}"\n[cron.job]\ntype = "{type}"\n'
DAILY_A = ENTRY.format(id="a", schedule="@daily", type="A")


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def cron_of(manager: Manager) -> CronFeature:
    return manager.feature(CronFeature)


def test_cron_tables_come_from_the_file_and_conf_d(tmp_path: Path) -> None:
    config_file = write(
        tmp_path / "conveyor.toml",
        ENTRY.format(id="a", schedule="*/5 * * * *", type="A")
        + "[cron.job.custom]\nexpires_in = 60\nunique_for = 30\n",
    )
    write(tmp_path / "conf.d" / "cron.toml", ENTRY.format(id="b", schedule="@daily", type="B"))
    features = load_config({"config": str(config_file)}, environ={}).build_features()
    feature = next(f for f in features if isinstance(f, CronFeature))
    assert sorted(feature.entries) == ["a", "b"]
    job = feature.entries["a"].job("cron:a:x", {"cron_id": "a"})
    assert job.custom == {"expires_in": 60, "unique_for": 30, "cron_id": "a"}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (ENTRY.format(id="b", schedule="*/5 * * *", type="B"), '[[cron]] #2 (id "b") schedule: '),
        (ENTRY.format(id="a", schedule="@daily", type="B"), "#2: id 'a' is also the id of"),
        ('[[cron]]\nschedule = "@daily"\ntz = "Moon/Base"\n[cron.job]\ntype = "X"\n', "#2 tz: "),
    ],
)
def test_a_bad_entry_in_conf_d_is_refused_naming_the_entry_and_the_field(
    tmp_path: Path, extra: str, message: str
) -> None:
    config_file = write(
        tmp_path / "conveyor.toml", ENTRY.format(id="a", schedule="@daily", type="A")
    )
    write(tmp_path / "conf.d" / "cron.toml", extra)
    with pytest.raises(ConfigError) as caught:
        load_config({"config": str(config_file)}, environ={})
    assert message in str(caught.value)


def test_a_cron_table_that_is_not_an_array_is_refused(tmp_path: Path) -> None:
    config_file = write(tmp_path / "conveyor.toml", '[cron]\nschedule = "@daily"\n')
    with pytest.raises(ConfigError, match=r"write \[\[cron\]\], not \[cron\]"):
        load_config({"config": str(config_file)}, environ={})


def test_a_bad_cron_file_stops_the_server_at_start(tmp_path: Path) -> None:
    config_file = write(
        tmp_path / "conveyor.toml", ENTRY.format(id="bad", schedule="0 25 * * *", type="X")
    )
    result = subprocess.run(
        [sys.executable, "-m", "conveyor", "server", "--config", str(config_file),
         "--storage", "memory://", "--bind", "127.0.0.1:0", "--web-bind", "off"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 2
    assert '[[cron]] #1 (id "bad") schedule: ' in result.stderr


async def test_sighup_reloads_the_entries_and_keeps_them_on_a_bad_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config_file = write(
        tmp_path / "conveyor.toml", ENTRY.format(id="a", schedule="@daily", type="A")
    )
    flags = {"config": str(config_file), "bind": "127.0.0.1:0", "web_bind": "off"}

    def reload() -> ServerConfig:
        return load_config({**flags, "storage": "memory://"}, environ={})

    started: list[Manager] = []
    original_start = Manager.start

    async def spy_start(self: Manager) -> None:
        started.append(self)
        await original_start(self)

    stop = asyncio.Event()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Manager, "start", spy_start)
        server = asyncio.create_task(run(reload(), stop=stop, reload=reload))
        while not started:
            await asyncio.sleep(0.01)
        cron = cron_of(started[0])
        assert sorted(cron.entries) == ["a"]
        write(tmp_path / "conf.d" / "more.toml", ENTRY.format(id="b", schedule="@hourly", type="B"))
        os.kill(os.getpid(), signal.SIGHUP)
        for _ in range(100):
            if "b" in cron.entries:
                break
            await asyncio.sleep(0.01)
        assert sorted(cron.entries) == ["a", "b"]
        write(tmp_path / "conf.d" / "more.toml", ENTRY.format(id="b", schedule="@often", type="B"))
        os.kill(os.getpid(), signal.SIGHUP)
        await asyncio.sleep(0.1)
        assert sorted(cron.entries) == ["a", "b"]  # the old set, whole
        assert cron.entries["b"].spec.schedule == "@hourly"
        assert "unknown schedule '@often'" in caplog.text
        stop.set()
        await server


async def test_admin_cron_ops_manage_entries_over_the_wire(server: RunningServer) -> None:
    async with await Client.connect(server.url) as client:
        assert set(CRON_OPS) <= set((await client.admin("ops"))["ops"])
        added = await client.cron(
            "add", {"id": "wire", "schedule": "*/10 * * * * *", "job": {"type": "W", "args": [1]}}
        )
        assert (added["id"], added["source"], added["description"]) == (
            "wire", "api", "Every 10 seconds",
        )  # fmt: skip
        assert len(added["next_runs"]) == 5
        listed = await client.admin("cron.list")
        assert [entry["id"] for entry in listed["entries"]] == ["wire"]
        assert (await client.cron("show", {"id": "wire"}))["schedule"] == "*/10 * * * * *"
        assert (await client.cron("get", {"id": "wire"}))["id"] == "wire"  # the CRON name
        assert (await client.admin("cron.pause", {"id": "wire"}))["paused"] is True
        jid = (await client.admin("cron.run", {"id": "wire"}))["jid"]
        assert jid.startswith("cron:wire:")
        fetched = await client.fetch("default")
        assert fetched is not None
        assert (fetched["jid"], fetched["custom"]["cron_id"]) == (jid, "wire")
        with pytest.raises(CommandError, match="cron entry tz: unknown time zone 'No/Where'"):
            await client.cron("add", {"schedule": "@daily", "tz": "No/Where", "job": {"type": "X"}})
        with pytest.raises(CommandError, match=r"unknown ADMIN operation cron\.frob"):
            await client.cron("frob")
        with pytest.raises(CommandError, match=r"invalid ADMIN cron.pause arguments: .*`id`"):
            await client.admin("cron.pause", {})
        with pytest.raises(CommandError, match=r"invalid ADMIN cron.run arguments: .*`x`"):
            await client.admin("cron.run", {"id": "wire", "x": 1})
        with pytest.raises(CommandError, match="no cron entry 'gone'"):
            await client.admin("cron.show", {"id": "gone"})
        assert await client.admin("cron.delete", {"id": "wire"}) == {"deleted": "wire"}
        assert (await client.admin("cron.list"))["entries"] == []
        assert await client.info()  # the connection lives on after the errors


async def test_the_cron_verb_stays_as_an_alias(
    server: RunningServer, raw_client: RawConnect
) -> None:
    conn = await raw_client(server.port)
    entry = b'{"id":"old","schedule":"@hourly","job":{"type":"W"}}'
    reply = await conn.call(b"CRON ADD " + entry)
    assert reply.startswith(b"$")
    assert b'"id":"old"' in reply
    assert b'"id":"old"' in await conn.call(b"CRON list")
    assert b'"paused":true' in await conn.call(b'CRON PAUSE {"id":"old"}')
    assert await conn.call(b"CRON FROB") == (
        b"-ERR no such CRON subcommand: FROB (known: LIST GET ADD PAUSE RESUME DELETE RUN)\r\n"
    )
    assert await conn.call(b"CRON PAUSE {}") == b'-ERR CRON PAUSE needs {"id": "<entry id>"}\r\n'
    assert await conn.call(b'CRON DELETE {"id":"old"}') == b'$17\r\n{"deleted":"old"}\r\n'
    admin_list = await conn.call(b"ADMIN cron.list")
    assert admin_list == b'$14\r\n{"entries":[]}\r\n'  # one set of entries behind both


async def test_client_cron_falls_back_to_the_verb_on_a_first_release_server(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    for op in CRON_OPS:  # a server of the first release: CRON, and no cron.* in ADMIN
        monkeypatch.delitem(ADMIN_OPS, op)
    async with await Client.connect(server.url) as client:
        added = await client.cron("add", {"id": "fb", "schedule": "@daily", "job": {"type": "F"}})
        assert added["id"] == "fb"
        assert (await client.cron("show", {"id": "fb"}))["id"] == "fb"
        assert [e["id"] for e in (await client.cron("list"))["entries"]] == ["fb"]
        with pytest.raises(CommandError, match=r"unknown ADMIN operation cron\.frob"):
            await client.cron("frob")


async def test_the_json_api_manages_entries(server: RunningServer) -> None:
    app = create_app(server.manager)
    transport = httpx.ASGITransport(app=app)
    headers = {"content-type": "application/json"}
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as web:
        entry = {"id": "api", "schedule": "@every 30s", "job": {"type": "A", "queue": "q1"}}
        response = await web.post("/api/cron", json=entry, headers=headers)
        assert response.status_code == 200
        assert response.json()["description"] == "Every 30 seconds"
        refused = await web.post("/api/cron", json={**entry, "schedule": "* * *"}, headers=headers)
        assert refused.status_code == 400
        assert refused.json() == {
            "error": "cron entry (id \"api\") schedule: '* * *' has 3 fields: write 5 (minute "
            "hour day month weekday) or 6 (second first)"
        }
        assert (await web.get("/api/cron/api")).json()["schedule"] == "@every 30s"  # unchanged
        run_now = await web.post("/api/cron/api/run", headers=headers)
        assert run_now.json()["jid"].startswith("cron:api:")
        assert (await web.post("/api/cron/api/pause", headers=headers)).json() == {"ok": True}
        listed = (await web.get("/api/cron")).json()["entries"]
        assert [(e["id"], e["paused"], e["runs"][0]["kind"]) for e in listed] == [
            ("api", True, "manual")
        ]
        assert (await web.get("/api/cron/nope")).status_code == 404
        assert (await web.post("/api/cron/api/frob", headers=headers)).status_code == 400
        assert (await web.post("/api/cron/api/delete", headers=headers)).json() == {"ok": True}
        assert (await web.get("/api/cron")).json() == {"entries": []}


async def run_cli(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "conveyor", "cron", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_the_cli_verbs(server: RunningServer) -> None:
    # ids, jobtypes and jids are printed as they are: no emoji (the jid
    # cron:heartbeat:... holds ":heartbeat:"), no markup ("[b]")
    url = ["--url", server.url]
    code, out, _ = await run_cli(
        "add", "*/5 * * * *", "[b]Cleanup", "--args", "[7]", "--id", "heartbeat", *url
    )
    assert (code, out.split(":")[0]) == (0, "added heartbeat")
    code, out, _ = await run_cli("ls", *url)
    assert code == 0
    for text in ("heartbeat", "api", "*/5 * * * *", "Every 5 minutes", "[b]Cleanup", "active"):
        assert text in out
    code, out, _ = await run_cli("pause", "heartbeat", *url)
    assert (code, out.strip()) == (0, "paused heartbeat")
    code, out, _ = await run_cli("run", "heartbeat", "--json", *url)
    assert json.loads(out)["jid"].startswith("cron:heartbeat:")
    code, out, _ = await run_cli("show", "heartbeat", "--json", *url)
    shown = json.loads(out)
    assert (shown["paused"], shown["job"]["args"], shown["runs"][0]["kind"]) == (
        True,
        [7],
        "manual",
    )
    code, out, _ = await run_cli("show", "heartbeat", *url)
    assert code == 0
    assert "heartbeat (api, paused)" in out
    assert " cron:heartbeat:" in out
    assert "manual" in out
    # the inspector's exit codes (docs/cli.md): 3 refused, 2 usage, 1 no server
    code, _, err = await run_cli("add", "* * *", "X", *url)
    assert code == 3
    assert "the server refused: cron entry schedule: '* * *' has 3 fields" in err
    code, _, err = await run_cli("show", "missing", *url)
    assert (code, "no cron entry 'missing'" in err) == (3, True)
    code, _, err = await run_cli("add", "@daily", "X", "--custom", "[1]", *url)
    assert (code, "must be a JSON object" in err) == (2, True)
    code, _, err = await run_cli("ls", "--url", f"tcp://127.0.0.1:{free_port()}")
    assert (code, "cannot connect" in err) == (1, True)
    code, out, _ = await run_cli("delete", "heartbeat", *url)
    assert (code, out.strip()) == (0, "deleted heartbeat")
    code, out, _ = await run_cli("ls", *url)
    assert (code, out.strip()) == (0, "No cron entries.")


async def test_the_cli_against_a_server_without_cron_exits_4(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    for op in CRON_OPS:
        monkeypatch.delitem(ADMIN_OPS, op)
    code, _, err = await run_cli("ls", "--url", server.url)
    assert code == 4
    assert "without the 'cron.list' operation" in err


async def test_app_cron_registers_when_a_worker_starts_and_at_the_first_push(
    make_server: MakeServer,
) -> None:
    running = await make_server()
    app = conveyor.App(running.url)

    @app.cron("*/5 * * * * *", args=[3], tz="Europe/Paris")
    @app.job(queue="periodic")
    async def ping(n: int) -> None: ...

    @app.cron("@daily", entry_id="ping-daily", args=[1])
    @app.job
    async def digest(n: int) -> None: ...

    cron = cron_of(running.manager)
    async with app.worker(concurrency=1, queues=["nothing"]):
        pass
    await cron.refresh()
    assert {e.id: (e.source, e.spec.job.queue, e.spec.job.args) for e in cron.entries.values()} == {
        "ping": ("code", "periodic", [3]),
        "ping-daily": ("code", "default", [1]),
    }
    store = running.manager.store
    version = await store.get_records(SPACE_META, ["version"], 0)
    # another process of the same app: its first push registers again, which changes nothing
    other = conveyor.App(running.url)
    other.crons.entries.update(app.crons.entries)
    await other.push_job(ping.build(1))
    await other.aclose()
    await app.aclose()
    assert await store.get_records(SPACE_META, ["version"], 0) == version


def test_app_cron_checks_the_entry_where_it_is_declared() -> None:
    app = conveyor.App()

    @app.job
    def nightly() -> None: ...

    with pytest.raises(ValueError, match=r"@app.cron on nightly .*schedule: "):
        app.cron("0 0 31 2 * * *")(nightly)
    with pytest.raises(ValueError, match=r"tz: unknown time zone"):
        app.cron("@daily", tz="Paris")(nightly)
    with pytest.raises(TypeError, match=r"goes above @app\.job"):
        app.cron("@daily")(lambda: None)  # type: ignore[arg-type]
    app.cron("@daily")(nightly)
    with pytest.raises(ValueError, match="declared twice"):
        app.cron("@hourly")(nightly)
