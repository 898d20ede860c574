"""The dashboard over a real manager (MemoryStore), driven through its ASGI app with httpx:
every page renders real data, actions change state through the manager, and the safety
features (auth, CSRF, read-only, prefixes, headers) hold."""

from __future__ import annotations

import base64
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from conveyor.manager import Manager, ServerStats
from conveyor.store.base import JobFilter, SortedSet
from conveyor.web import create_app, start_web
from conveyor.web.serve import parse_bind
from tests.support.browser import Seeded, seed

BASE = "http://dash.test"


@pytest.fixture
async def seeded(web_manager: Manager) -> Seeded:
    return await seed(web_manager)


def client_for(app: Any, **headers: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE, headers=headers)


@pytest.fixture
async def web(web_manager: Manager, seeded: Seeded) -> AsyncIterator[httpx.AsyncClient]:
    stats = ServerStats(connections=3, command_count=99)
    async with client_for(create_app(web_manager, stats=lambda: stats)) as client:
        yield client


async def csrf(client: httpx.AsyncClient, path: str = "/queues") -> str:
    page = await client.get(path)
    match = re.search(r'name="csrf_token" value="([0-9a-f]+)"', page.text)
    assert match, "the page has no CSRF token"
    return match.group(1)


async def size(manager: Manager, name: SortedSet) -> int:
    return (await manager.list_set(name, JobFilter(), 0, 1)).total


# ---------------------------------------------------------------- pages


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/", ["Processed", "Dead", "critical", "live-graph", "7 days"]),
        ("/?days=30", ["30 days"]),
        ("/queues", ["default", "critical", "paused"]),
        ("/queues/default", ["SendEmail", "order-11"]),
        ("/busy", ["w-alpha", "worker-1.internal:4242", "GenerateReport", "46.9 MB"]),
        ("/retries", ["DeliverNewsletter", "SMTP timeout #3", "mailers"]),
        ("/scheduled", ["Reminder", "invoice-2"]),
        ("/morgue", ["ImportCsv", "malformed row #1"]),
        ("/batches", ["No batches yet"]),
        ("/cron", ["No periodic jobs yet", "Add an entry"]),
        ("/throttles", ["No throttles", "Expired jobs"]),
    ],
)
async def test_every_page_renders_its_data(
    web: httpx.AsyncClient, path: str, expected: list[str]
) -> None:
    response = await web.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    for text in expected:
        assert text in response.text, f"{text!r} missing from {path}"


async def test_job_detail_by_faktory_key_shows_failure_and_location(
    web: httpx.AsyncClient, seeded: Seeded
) -> None:
    listing = (await web.get("/api/sets/dead")).json()
    entry = next(job for job in listing["jobs"] if job["jid"] == seeded.dead[1])
    assert "%7C" in entry["key"]  # <RFC3339Nano>|<jid>, URL-escaped as Faktory
    page = await web.get(f"/morgue/{entry['key']}")
    assert page.status_code == 200
    for text in (seeded.dead[1], "ConnectionError", "malformed row #1", "app/jobs.py:41"):
        assert text in page.text
    assert ">dead</span>" in page.text


async def test_jobs_route_finds_a_job_wherever_it_is(
    web: httpx.AsyncClient, seeded: Seeded
) -> None:
    to_set = await web.get(f"/jobs/{seeded.retries[0]}")
    assert to_set.status_code == 303
    assert to_set.headers["location"].startswith("/retries/")
    busy = await web.get(f"/jobs/{seeded.busy[0]}")
    assert busy.status_code == 200
    assert ">working</span>" in busy.text
    assert "GenerateReport" in busy.text
    assert (await web.get("/jobs/no-such-jid")).status_code == 404
    found = await web.get("/search", params={"q": seeded.busy[0]})
    assert found.headers["location"] == f"/jobs/{seeded.busy[0]}"
    text = await web.get("/search", params={"q": "malformed"})
    assert text.headers["location"] == "/morgue?q=malformed"


async def test_a_queued_job_has_a_page_and_is_found_by_the_search(
    web: httpx.AsyncClient, seeded: Seeded
) -> None:
    jid = seeded.queued[3]
    queue_page = await web.get("/queues/default")
    link = f"/jobs/{jid}?queue=default"
    assert f'href="{link}"' in queue_page.text  # the queue page links to the job's page
    for path in (link, f"/jobs/{jid}"):
        page = await web.get(path)
        assert page.status_code == 200, path
        assert ">queued</span>" in page.text
        assert "SendEmail" in page.text
    assert (await web.get(f"/jobs/{jid}?queue=critical")).status_code == 404  # not in that one
    found = await web.get("/search", params={"q": jid})
    assert found.headers["location"] == f"/jobs/{jid}"
    api = (await web.get(f"/api/jobs/{jid}")).json()
    assert (api["where"], api["queue"], api["jid"]) == ("queued", "default", jid)


async def test_counts_are_pluralised(web: httpx.AsyncClient, web_manager: Manager) -> None:
    await web_manager.push(b'{"jid":"lonely-001","jobtype":"T","args":[],"queue":"solo"}')
    page = await web.get("/queues/solo")
    assert "1 job ·" in page.text
    assert "1 jobs" not in page.text
    assert 'data-confirm="Delete 1 job in solo?"' in page.text
    many = await web.get("/queues/default")
    assert "12 jobs ·" in many.text
    token = await csrf(web, "/queues/solo")
    done = await web.post(
        "/queues/solo", data={"csrf_token": token, "action": "delete_jobs", "jid": "lonely-001"}
    )
    assert "Deleted+1+job+from+solo." in done.headers["location"]


async def test_sets_filter_search_sort_and_page_on_the_server(
    web: httpx.AsyncClient, seeded: Seeded
) -> None:
    by_text = (await web.get("/api/sets/retries", params={"q": "timeout #2"})).json()
    assert [job["args"] for job in by_text["jobs"]] == ['[2,{"user":"user-2@example.com"}]']
    by_jid = (await web.get("/api/sets/retries", params={"q": seeded.retries[3]})).json()
    assert [job["jid"] for job in by_jid["jobs"]] == [seeded.retries[3]]
    assert (await web.get("/api/sets/dead", params={"queue": "mailers"})).json()["jobs"] == []
    typed = (await web.get("/api/sets/dead", params={"jobtype": "ImportCsv"})).json()
    assert typed["paging"]["total"] == 3
    ascending = (await web.get("/api/sets/retries")).json()["jobs"]
    descending = (await web.get("/api/sets/retries", params={"sort": "desc"})).json()["jobs"]
    assert [j["jid"] for j in descending] == [j["jid"] for j in reversed(ascending)]
    scores = [j["score"] for j in ascending]
    assert scores == sorted(scores)
    dead = [j["score"] for j in (await web.get("/api/sets/dead")).json()["jobs"]]
    assert dead == sorted(dead, reverse=True)  # latest deaths first by default
    dead_asc = (await web.get("/api/sets/dead", params={"sort": "asc"})).json()["jobs"]
    assert [j["score"] for j in dead_asc] == sorted(dead)
    toggle = await web.get("/morgue", params={"sort": "asc"})
    assert "sort=desc" in toggle.text
    assert "malformed row #0" in toggle.text
    second = (await web.get("/api/sets/retries", params={"per_page": 3, "page": 2})).json()
    assert second["paging"] == {"page": 2, "per_page": 3, "total": 4, "pages": 2}
    assert [j["jid"] for j in second["jobs"]] == [ascending[3]["jid"]]
    html = await web.get("/morgue", params={"q": "row #0"})
    assert "malformed row #0" in html.text
    assert "malformed row #1" not in html.text


@pytest.mark.parametrize(
    "path",
    [
        "/?days=5",
        "/morgue?page=0",
        "/retries?per_page=x",
        "/scheduled?sort=up",
        "/api/history?days=1",
    ],
)
async def test_bad_parameters_get_a_clear_400(web: httpx.AsyncClient, path: str) -> None:
    response = await web.get(path)
    assert response.status_code == 400
    assert "must be" in response.text


async def test_unknown_things_are_404(web: httpx.AsyncClient) -> None:
    assert (await web.get("/queues/nope")).status_code == 404
    assert (await web.get("/retries/2026-01-01T00:00:00Z%7Cnope")).status_code == 404
    missing = await web.get("/api/sets/bogus")
    assert missing.status_code == 404
    assert "error" in missing.json()


# ---------------------------------------------------------------- actions


async def test_pause_and_resume_a_queue_from_the_queues_page(
    web: httpx.AsyncClient, web_manager: Manager
) -> None:
    token = await csrf(web)
    done = await web.post(
        "/queues", data={"csrf_token": token, "queue": "critical", "action": "pause"}
    )
    assert done.status_code == 303
    assert {q.name for q in await web_manager.queues() if q.paused} == {"critical", "reports"}
    page = await web.get(done.headers["location"])
    assert "Queue critical paused." in page.text
    forged = await web.get("/queues", params={"notice": "Send your password to evil.example"})
    assert "evil.example" not in forged.text
    await web.post("/queues", data={"csrf_token": token, "queue": "critical", "action": "resume"})
    assert {q.name for q in await web_manager.queues() if q.paused} == {"reports"}


async def test_delete_one_queued_job_and_clear_a_queue(
    web: httpx.AsyncClient, web_manager: Manager, seeded: Seeded
) -> None:
    token = await csrf(web, "/queues/default")
    victim = seeded.queued[0]
    await web.post(
        "/queues/default", data={"csrf_token": token, "action": "delete_jobs", "jid": victim}
    )
    assert await web_manager.locate(victim) is None
    assert (await web_manager.list_queue("default", 0, 100)).total == 11
    await web.post("/queues/critical", data={"csrf_token": token, "action": "clear"})
    assert "critical" not in {q.name for q in await web_manager.queues()}
    nothing = await web.post("/queues/default", data={"csrf_token": token, "action": "delete_jobs"})
    assert nothing.status_code == 400
    assert (await web_manager.list_queue("default", 0, 100)).total == 11


async def test_retry_a_dead_job_puts_it_back_in_its_queue(
    web: httpx.AsyncClient, web_manager: Manager, seeded: Seeded
) -> None:
    token = await csrf(web, "/morgue")
    key = (await web.get("/api/sets/dead")).json()["jobs"][0]["key"]
    jid = key.rsplit("%7C", 1)[1]
    response = await web.post(f"/morgue/{key}", data={"csrf_token": token, "action": "retry"})
    assert response.status_code == 303
    queued = await web_manager.list_queue("imports", 0, 10)
    assert [job.jid for job in queued.items] == [jid]
    assert await size(web_manager, SortedSet.DEAD) == 2


async def test_bulk_and_all_actions_on_retries(
    web: httpx.AsyncClient, web_manager: Manager, seeded: Seeded
) -> None:
    token = await csrf(web, "/retries")
    rows = (await web.get("/api/sets/retries")).json()["jobs"]
    keys = [f"{row['at']}|{row['jid']}" for row in rows[:2]]
    await web.post("/retries", data={"csrf_token": token, "action": "kill", "key": keys})
    assert await size(web_manager, SortedSet.RETRIES) == 2
    assert await size(web_manager, SortedSet.DEAD) == 5
    bad = await web.post("/retries", data={"csrf_token": token, "action": "explode", "key": "all"})
    assert bad.status_code == 400
    assert await size(web_manager, SortedSet.RETRIES) == 2
    await web.post("/retries", data={"csrf_token": token, "action": "delete", "key": "all"})
    assert await size(web_manager, SortedSet.RETRIES) == 0
    await web.post("/scheduled", data={"csrf_token": token, "action": "add_to_queue", "key": "all"})
    assert await size(web_manager, SortedSet.SCHEDULED) == 0
    default = await web_manager.list_queue("default", 0, 100)
    assert set(seeded.scheduled) <= {job.jid for job in default.items}


async def test_quiet_one_worker_and_terminate_all(
    web: httpx.AsyncClient, web_manager: Manager
) -> None:
    token = await csrf(web, "/busy")
    await web.post("/busy", data={"csrf_token": token, "wid": "w-beta", "signal": "quiet"})
    assert await web_manager.beat("w-beta", 1) == "quiet"
    assert await web_manager.beat("w-alpha", 1) == "running"
    await web.post("/busy", data={"csrf_token": token, "wid": "all", "signal": "terminate"})
    assert await web_manager.beat("w-alpha", 1) == "terminate"
    page = await web.get("/busy")
    assert page.text.count('class="tag terminate"') == 2


# ---------------------------------------------------------------- JSON API


async def test_stats_is_the_info_json_with_the_servers_connection_stats(
    web: httpx.AsyncClient, web_manager: Manager
) -> None:
    stats = (await web.get("/stats")).json()
    info = await web_manager.info(ServerStats(connections=3, command_count=99))
    assert stats.keys() == info.keys()
    assert stats["faktory"]["sets"] == info["faktory"]["sets"]
    assert stats["server"]["connections"] == 3
    assert stats["server"]["command_count"] == 99
    health = (await web.get("/health")).json()
    assert set(health["server"]) == {
        "description",
        "faktory_version",
        "connections",
        "command_count",
    }


async def test_api_reads_everything_the_pages_show(web: httpx.AsyncClient, seeded: Seeded) -> None:
    overview = (await web.get("/api/overview", params={"days": 30})).json()
    assert overview["summary"]["dead"] == 3
    assert overview["summary"]["retries"] == 4
    assert len(overview["history"]) == 30
    assert overview["history"][-1]["processed"] == 16  # 9 acked + 7 failed, today
    queues = {q["name"]: q for q in (await web.get("/api/queues")).json()}
    assert queues["reports"]["paused"] is True
    assert queues["default"]["size"] == 12
    queue = (await web.get("/api/queues/default", params={"per_page": 5})).json()
    assert [j["jid"] for j in queue["jobs"]] == seeded.queued[:5]
    busy = (await web.get("/api/busy")).json()
    assert {w["wid"]: w["busy"] for w in busy["workers"]} == {"w-alpha": 1, "w-beta": 0}
    assert [j["jid"] for j in busy["jobs"]] == seeded.busy
    job = (await web.get(f"/api/sets/retries/{seeded.retries[0]}")).json()
    assert job["failure"]["errtype"] == "ConnectionError"
    assert job["location"] == {"where": "retries", "queue": "mailers"}
    located = (await web.get(f"/api/jobs/{seeded.busy[0]}")).json()
    assert located["where"] == "working"


async def test_api_actions_need_json_or_a_token(
    web: httpx.AsyncClient, web_manager: Manager, seeded: Seeded
) -> None:
    target = "/api/sets/dead/actions/delete"
    form_like = await web.post(
        target, content=b'{"all": true}', headers={"content-type": "text/plain"}
    )
    assert form_like.status_code == 403
    assert await size(web_manager, SortedSet.DEAD) == 3
    done = await web.post(target, json={"jids": [seeded.dead[0]]})
    assert done.json() == {"ok": True, "count": 1}
    token = await csrf(web)
    with_token = await web.post(
        "/api/queues/default/pause", content=b"", headers={"x-csrf-token": token}
    )
    assert with_token.status_code == 200
    assert "default" in {q.name for q in await web_manager.queues() if q.paused}
    bad = await web.post("/api/workers/explode", json={"all": True})
    assert bad.status_code == 400
    assert "quiet or terminate" in bad.json()["error"]
    quiet = await web.post("/api/workers/quiet", json={"wids": ["w-alpha"]})
    assert quiet.json()["count"] == 1
    not_a_list = await web.post(target, json={"jids": "abc"})
    assert not_a_list.status_code == 400


# ---------------------------------------------------------------- safety


async def test_forms_without_a_valid_token_are_refused_and_change_nothing(
    web: httpx.AsyncClient, web_manager: Manager
) -> None:
    await csrf(web)  # the browser has its cookie, the attacker's form has no token
    for data in (
        {"queue": "default", "action": "pause"},
        {"queue": "default", "action": "pause", "csrf_token": "0" * 64},
    ):
        refused = await web.post("/queues", data=data)
        assert refused.status_code == 403
    cross_site = await web.post(
        "/queues",
        data={"queue": "default", "action": "pause", "csrf_token": await csrf(web)},
        headers={"sec-fetch-site": "cross-site"},
    )
    assert cross_site.status_code == 403
    foreign_origin = await web.post(
        "/api/queues/default/pause", json={}, headers={"origin": "https://evil.example"}
    )
    assert foreign_origin.status_code == 403
    proxied = await web.post(
        "/api/queues/critical/pause",
        json={},
        headers={"origin": "https://jobs.example", "x-forwarded-host": "jobs.example"},
    )
    assert proxied.status_code == 200  # the proxy's public host is our origin
    assert not any(q.paused for q in await web_manager.queues() if q.name == "default")


async def test_password_protects_everything_but_health(
    web_manager: Manager, seeded: Seeded
) -> None:
    app = create_app(web_manager, password="s3cret")
    async with client_for(app) as anonymous:
        denied = await anonymous.get("/")
        assert denied.status_code == 401
        assert denied.headers["www-authenticate"].startswith("Basic")
        assert (await anonymous.get("/api/queues")).status_code == 401
        assert (await anonymous.get("/health")).status_code == 200
    wrong = base64.b64encode(b"admin:nope").decode()
    async with client_for(app, authorization=f"Basic {wrong}") as guesser:
        assert (await guesser.get("/stats")).status_code == 401
    right = base64.b64encode(b"anyone:s3cret").decode()
    async with client_for(app, authorization=f"Basic {right}") as user:
        assert (await user.get("/")).status_code == 200
        assert (await user.get("/static/app.css")).status_code == 200


async def test_read_only_mode_shows_no_actions_and_refuses_posts(
    web_manager: Manager, seeded: Seeded
) -> None:
    async with client_for(create_app(web_manager, read_only=True)) as client:
        for path in ("/queues", "/queues/default", "/busy", "/retries", "/morgue"):
            page = await client.get(path)
            assert page.status_code == 200
            assert 'method="post"' not in page.text
            assert "Read-only mode" in page.text
        refused = await client.post("/queues", data={"queue": "default", "action": "pause"})
        assert refused.status_code == 403
        api = await client.post("/api/sets/dead/actions/delete", json={"all": True})
        assert api.status_code == 403
    assert await size(web_manager, SortedSet.DEAD) == 3


async def test_root_path_and_x_script_name_prefix_every_link(
    web_manager: Manager, seeded: Seeded
) -> None:
    async with client_for(create_app(web_manager, root_path="/ops/jobs")) as client:
        for path in ("/ops/jobs/queues", "/queues"):  # proxies that keep or strip the prefix
            page = await client.get(path)
            assert page.status_code == 200
            assert 'href="/ops/jobs/static/app.css' in page.text
            assert 'href="/ops/jobs/queues/default"' in page.text
            assert 'href="/queues' not in page.text
    async with client_for(create_app(web_manager), **{"x-script-name": "/faktory"}) as client:
        page = await client.get("/faktory/morgue")
        assert page.status_code == 200
        assert 'action="/faktory/morgue"' in page.text
        token = await csrf(client, "/faktory/queues")
        done = await client.post(
            "/faktory/queues", data={"csrf_token": token, "queue": "default", "action": "pause"}
        )
        assert done.headers["location"].startswith("/faktory/queues?")
    async with client_for(create_app(web_manager), **{"x-script-name": "/faktory"}) as fresh:
        cookie = (await fresh.get("/faktory/queues")).headers["set-cookie"]
        assert "Path=/faktory" in cookie
        assert "HttpOnly" in cookie
        assert "SameSite=Strict" in cookie


async def test_security_headers_on_every_response(web: httpx.AsyncClient) -> None:
    assert (await web.get("/static/app.js")).headers["cache-control"] == "public, max-age=3600"
    for path in ("/", "/stats", "/static/app.js", "/nope"):
        headers = (await web.get(path)).headers
        assert "script-src 'self'" in headers["content-security-policy"]
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        assert headers["x-frame-options"] == "DENY"
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "same-origin"
    page = (await web.get("/")).text
    assert re.search(r"<script(?![^>]*\bsrc=)[^>]*>", page) is None, "inline script in page"
    assert "style=" not in page
    assert "http://" not in page.replace(BASE, "")
    assert "https://" not in page


# ---------------------------------------------------------------- serving


async def test_start_web_serves_in_this_loop_and_stops(web_manager: Manager) -> None:
    from tests.support.browser import WebConfig

    handle = await start_web(web_manager, WebConfig(web_bind="127.0.0.1:0", password="pw"))
    try:
        assert handle.port
        async with httpx.AsyncClient(base_url=handle.url) as client:
            assert (await client.get("/health")).status_code == 200
            assert (await client.get("/")).status_code == 401
            authed = await client.get("/stats", auth=("x", "pw"))
            assert authed.json()["server"]["connections"] == 0
    finally:
        await handle.stop()
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient() as client:
            await client.get(f"{handle.url}/health")


async def test_start_web_disabled_or_bad_binding(web_manager: Manager) -> None:
    from tests.support.browser import WebConfig

    disabled = await start_web(web_manager, WebConfig(web_bind=":0"))
    assert disabled.port is None
    await disabled.stop()
    with pytest.raises(ValueError, match="HOST:PORT"):
        await start_web(web_manager, WebConfig(web_bind="localhost"))
    assert parse_bind("0.0.0.0:7420") == ("0.0.0.0", 7420)
    assert parse_bind(":7420") == ("127.0.0.1", 7420)


def test_the_web_package_never_touches_the_store() -> None:
    """Layering (DESIGN.md): web/ calls the manager only."""
    from pathlib import Path

    import conveyor.web

    package = Path(conveyor.web.__file__).parent
    for source in package.glob("*.py"):
        text = source.read_text()
        assert ".store" not in text.replace("conveyor.store.base", ""), source.name
        assert "open_store" not in text, source.name
