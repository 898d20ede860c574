"""The Django integration with real Django: a real settings module (tests/django_project),
``@task`` functions enqueued through ``django.tasks`` (or its backport) to a real conveyor
server, and run by ``python manage.py conveyor_worker``, all as subprocesses."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conveyor.job import decode_job
from tests.support.server import RunningServer

PROJECT = Path(__file__).parent / "django_project"

ENQUEUE = """
import asyncio, datetime as dt, json, django
django.setup()
from django.utils import timezone
from shop import tasks

results = {
    "add": tasks.add.enqueue(2, 3),
    "receipt": tasks.send_receipt.enqueue("order-7", total=42),
    "ping": tasks.ping.enqueue("pong"),
    "attempt": tasks.attempt.enqueue("first"),
    "explode": tasks.explode.enqueue(),
    "later": tasks.add.using(run_after=timezone.now() + dt.timedelta(hours=1)).enqueue(1, 1),
    "async": asyncio.run(tasks.ping.aenqueue("from-async")),
}
print(json.dumps({name: [r.id, str(r.status), r.backend] for name, r in results.items()}))
"""

QUERY = """
import json, django
django.setup()
from shop.models import Event, Receipt
print(json.dumps({
    "receipts": [[r.order, r.total] for r in Receipt.objects.all()],
    "events": sorted([e.name, e.task_id, e.status] for e in Event.objects.all()),
}))
"""


async def run(shop: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "SHOP_DIR": str(shop),
        "CONVEYOR_URL": url,
        "PYTHONPATH": str(PROJECT),
    }
    return await asyncio.to_thread(
        subprocess.run, [sys.executable, *args], cwd=PROJECT, env=env,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    (tmp_path / "marks").mkdir()
    return tmp_path


async def test_tasks_are_pushed_to_conveyor_and_run_by_the_worker_command(
    server: RunningServer, shop: Path
) -> None:
    migrated = await run(shop, server.url, "manage.py", "migrate", "--run-syncdb", "-v", "0")
    assert migrated.returncode == 0, migrated.stderr
    enqueued = await run(shop, server.url, "-c", ENQUEUE)
    assert enqueued.returncode == 0, enqueued.stderr
    ids = {name: value[0] for name, value in json.loads(enqueued.stdout).items()}
    assert {value[1] for value in json.loads(enqueued.stdout).values()} == {"READY"}
    assert {value[2] for value in json.loads(enqueued.stdout).values()} == {"default"}

    # what reached the server: one job per task, as docs/python-api.md describes
    queued = await server.manager.list_queue("emails", 0, 10)
    (receipt,) = [decode_job(q.payload) for q in queued.items]
    assert receipt.jid == ids["receipt"]
    assert receipt.jobtype == "shop.tasks.send_receipt"
    assert receipt.args == ["order-7"]
    assert receipt.custom == {"kwargs": {"total": 42}}
    assert receipt.retry == 2
    later = await server.manager.locate(ids["later"])
    assert later is not None
    assert later.where == "scheduled"

    worked = await run(
        shop, server.url, "manage.py", "conveyor_worker", "--burst",
        "--queue", "default", "--queue", "emails", "--log-format", "json",
    )  # fmt: skip
    assert worked.returncode == 0, worked.stderr
    lines = [json.loads(line) for line in worked.stderr.splitlines() if line.startswith("{")]
    outcomes = {r["jid"]: r["outcome"] for r in lines if r["logger"] == "conveyor.worker.jobs"}
    assert outcomes == {
        ids["add"]: "done",
        ids["receipt"]: "done",
        ids["ping"]: "done",
        ids["attempt"]: "done",
        ids["explode"]: "retry",
        ids["async"]: "done",
    }
    marks = {p.name for p in (shop / "marks").iterdir()}
    assert marks == {
        "add-5", "ping-pong", "ping-from-async", f"attempt-first-{ids['attempt']}-1"
    }  # fmt: skip
    failed = await server.manager.locate(ids["explode"])
    assert failed is not None
    assert failed.where == "retries"
    assert "kaboom" in str(decode_job(failed.payload).failure)

    stored = await run(shop, server.url, "-c", QUERY)
    assert stored.returncode == 0, stored.stderr
    found = json.loads(stored.stdout)
    assert found["receipts"] == [["order-7", 42]]
    events = {task_id: (name, status) for name, task_id, status in found["events"]}
    assert events[ids["receipt"]] == ("send_receipt", "SUCCESSFUL")
    assert events[ids["explode"]] == ("explode", "FAILED")
    assert len(events) == 6


async def test_only_tasks_of_installed_apps_run(server: RunningServer, shop: Path) -> None:
    """A job whose jobtype names a plain function (or any importable path) is not run: it
    fails as an unknown jobtype, and nothing is imported outside INSTALLED_APPS."""
    async with await __import__("conveyor").client.Client.connect(server.url) as client:
        for jid, jobtype in (
            ("plain-func-01", "shop.tasks.not_a_task"),
            ("outside-0001", "antigravity.fly"),
        ):
            await client.push({"jid": jid, "jobtype": jobtype, "args": [], "retry": 1})
    worked = await run(shop, server.url, "manage.py", "conveyor_worker", "--burst")
    assert worked.returncode == 0, worked.stderr
    assert not (shop / "marks" / "not-a-task").exists()
    for jid in ("plain-func-01", "outside-0001"):
        found = await server.manager.locate(jid)
        assert found is not None
        assert (decode_job(found.payload).failure or {})["errtype"] == "conveyor.UnknownJobType"


async def test_bad_options_are_named(server: RunningServer, shop: Path) -> None:
    script = (
        "import django; from django.conf import settings; "
        "settings.configure(TASKS={'default': {'BACKEND': "
        "'conveyor.contrib.django.ConveyorBackend', 'OPTIONS': {'ulr': 'x'}}}, "
        "INSTALLED_APPS=['conveyor.contrib.django']); django.setup(); "
        "from conveyor.contrib.django._compat import task_backends; task_backends['default']"
    )
    result = await run(shop, server.url, "-c", script)
    assert result.returncode != 0
    assert "unknown ['ulr']" in result.stderr
