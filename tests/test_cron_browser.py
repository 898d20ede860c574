"""The Cron page in a real Chromium: entries by source, the schedule in words, the next runs
in the entry's time zone, pause, run now, add (and a refused add), delete."""

from __future__ import annotations

from typing import Any

import pytest

from conveyor.manager.features.cron import CronFeature
from tests.support.browser import LiveDashboard, screenshot


@pytest.fixture
def page(chromium_browser: Any) -> Any:
    context = chromium_browser.new_context(viewport={"width": 1360, "height": 900})
    tab = context.new_page()
    tab.set_default_timeout(5000)
    problems: list[str] = []
    tab.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
    tab.on("pageerror", lambda exc: problems.append(str(exc)))
    tab.on("dialog", lambda dialog: dialog.accept())
    tab.problems = problems
    yield tab
    context.close()


def test_the_cron_page_shows_and_manages_entries(page: Any, live_dashboard: LiveDashboard) -> None:
    cron = live_dashboard.manager.feature(CronFeature)
    nightly = {
        "id": "nightly",
        "schedule": "30 2 * * *",
        "tz": "Europe/Paris",
        "job": {"type": "N"},
    }
    cron.reconfigure(CronFeature.from_config({"cron": [nightly]}))  # as from the config file
    cleanup = {"id": "cleanup", "schedule": "*/5 * * * *", "job": {"type": "Cleanup", "args": [7]}}
    live_dashboard.call(cron.add(cleanup))

    page.goto(live_dashboard.url + "/cron")
    file_entry = page.locator('[data-source="file"] [data-entry="nightly"]')
    assert "At 02:30 (Europe/Paris)" in file_entry.inner_text()
    next_runs = file_entry.locator(".cron-next span").all_inner_texts()
    assert len(next_runs) == 5
    assert all(text.endswith(("CET", "CEST")) and "02:30:00" in text for text in next_runs)
    assert file_entry.locator('button[value="delete"]').count() == 0  # only paused, not deleted
    api_entry = page.locator('[data-source="api"] [data-entry="cleanup"]')
    assert "Every 5 minutes" in api_entry.inner_text()
    screenshot(page, "cron")

    file_entry.locator('button[value="pause"]').click()
    page.wait_for_url("**/cron?notice=*")
    assert page.locator(".notice").inner_text() == "Paused nightly."
    assert page.locator('[data-entry="nightly"] .tag').first.inner_text() == "paused"

    page.locator('[data-entry="cleanup"] button[value="run"]').click()
    page.wait_for_url("**/cron?notice=*")
    assert "Enqueued cleanup now: jid cron:cleanup:" in page.locator(".notice").inner_text()
    row = page.locator('[data-entry="cleanup"] .cron-runs tbody tr').first
    assert "manual" in row.inner_text()
    assert row.locator(".cron-outcome").inner_text() == "enqueued"

    form = page.locator("form.cron-form")
    form.locator('input[name="schedule"]').fill("* * *")
    form.locator('input[name="type"]').fill("Broken")
    form.locator("button.primary").click()
    page.wait_for_url("**/cron?notice=*")
    assert (
        "Refused: cron entry schedule: '* * *' has 3 fields" in page.locator(".notice").inner_text()
    )
    form = page.locator("form.cron-form")
    form.locator('input[name="schedule"]').fill("@every 1h")
    form.locator('input[name="type"]').fill("Hourly")
    form.locator('input[name="args"]').fill('["x"]')
    form.locator('input[name="id"]').fill("hourly")
    form.locator("button.primary").click()
    page.wait_for_url("**/cron?notice=*")
    assert page.locator(".notice").inner_text() == "Saved hourly: Every hour."
    assert page.locator('[data-source="api"] [data-entry="hourly"]').count() == 1

    page.locator('[data-entry="cleanup"] button[value="delete"]').click()
    page.wait_for_url("**/cron?notice=*")
    assert page.locator('[data-entry="cleanup"]').count() == 0
    assert sorted(cron.entries) == ["hourly", "nightly"]
    assert page.problems == [], page.problems
