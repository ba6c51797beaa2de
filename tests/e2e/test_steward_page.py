"""The data steward's page in a real browser, after real ingestion: servers (scheduler, LocalExecutor,
api-server), three bikes intervals ingested by a backfill (the third holds the humidity sensor's fault of
2011-03-10 and is quarantined), then Debian's headless Chromium logs into the Airflow UI as ``steward``, opens the
airloop view, follows the link to the suites page and reads the rules, their history and the dry-run commands.
The command the page shows is then run as written: it names the same failing rule.

The smallest real setup of the e2e tests (that of ``test_backfill.py``), not the whole demo.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.helpers import backfill_runtime, wait_for
from tests.e2e.test_demo import ARTIFACTS, CHROMIUM, CHROMIUM_FLAGS

pytestmark = pytest.mark.e2e

FAULT = "2011-02-26T000000Z"


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory, seeded_source: Path) -> Iterator[tuple[httpx.Client, str]]:
    """The runtime on free ports, with a bikes spec that does not catch up (only the backfill creates runs)."""
    with backfill_runtime(tmp_path_factory, "e2e-steward-home") as (client, base, _home):
        yield client, base


def _ingest_three_intervals(client: httpx.Client) -> None:
    wait_for("bikes_ingest to be parsed", lambda: client.get("/api/v2/dags/bikes_ingest").status_code == 200)
    assert client.patch("/api/v2/dags/bikes_ingest", json={"is_paused": False}).status_code == 200
    body = {
        "dag_id": "bikes_ingest",
        "from_date": "2011-01-01T00:00:00Z",
        "to_date": "2011-02-26T00:00:00Z",
        "reprocess_behavior": "completed",
        "max_active_runs": 3,
    }

    def create() -> Any:  # SQLite may be busy with the dag-processor: try again, as a user would
        response = client.post("/api/v2/backfills", json=body)
        return response if response.status_code != 503 else None

    assert wait_for("the backfill to be created", create, timeout=60, every=3).status_code == 200

    def finished() -> Any:
        runs = client.get("/api/v2/dags/bikes_ingest/dagRuns", params={"run_type": "backfill"}).json()["dag_runs"]
        return runs if len(runs) == 3 and all(r["state"] in ("success", "failed") for r in runs) else None

    wait_for("the three ingest runs to finish", finished, timeout=420, every=2)


def test_the_steward_page_in_a_real_browser(
    servers: tuple[httpx.Client, str], capsys: pytest.CaptureFixture[str]
) -> None:
    from playwright.sync_api import expect, sync_playwright

    from airloop.ops import runtime
    from airloop.ops.cli import main

    client, base = servers
    _ingest_three_intervals(client)
    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: install Debian's chromium (`apt-get install chromium`)"
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1400})
            page.goto(f"{base}/plugin/airloop")
            page.fill('input[name="username"]', "steward")
            page.fill('input[name="password"]', runtime.read_credentials()["steward"])
            page.click('button[type="submit"]')
            page.wait_for_url("**/plugin/airloop", timeout=60_000)
            view = page.frame_locator("iframe")
            expect(view.locator("h1#model")).to_have_text("bikes", timeout=60_000)
            view.locator("#suites-link").click()  # from the model's page to the stewards' page
            expect(view.locator("h1#model")).to_have_text("bikes: expectation suites", timeout=60_000)
            # Every rule in plain words; the humidity rule failed on the fault's interval, with its share and values.
            hum = view.locator("tr.rule", has_text="hum is greater than 0 and at most 1")
            expect(hum).to_have_count(1)
            expect(hum.locator("td.verdict.fail")).to_have_count(1)
            expect(hum.locator("td.verdict.fail")).to_contain_text("fail: 22 of 657 rows (3.35%); e.g. 0.0")
            expect(hum.locator("td.verdict.pass")).to_have_count(2)
            expect(view.locator("tr.rule", has_text="season is one of 1, 2, 3 or 4")).to_have_count(1)
            expect(view.locator("#top-failing")).to_contain_text("hum is greater than 0 and at most 1")
            expect(view.locator("#digests tr")).to_have_count(4)  # header and three intervals
            expect(view.locator("#digests")).to_contain_text("(now)")
            # The exact command per interval.
            commands = view.locator("#commands code.command")
            expect(commands).to_have_count(3)
            command = commands.filter(has_text=FAULT).inner_text()
            assert command == f"airloop suites check bikes --on {FAULT}"
            page.screenshot(path=str(ARTIFACTS / "airloop-suites.png"), full_page=True)
            hum.scroll_into_view_if_needed()  # the page scrolls inside the UI's frame: a second shot of the failure
            page.screenshot(path=str(ARTIFACTS / "airloop-suites-history.png"), full_page=True)
            anonymous = browser.new_page()
            assert anonymous.request.get(f"{base}/airloop/models/bikes/suites").status == 401
        finally:
            browser.close()
    assert all((ARTIFACTS / f"airloop-suites{s}.png").stat().st_size > 10_000 for s in ("", "-history"))
    # The command as the page shows it dry-runs that interval: it would fail on the same rule, writing nothing.
    capsys.readouterr()
    assert main(shlex.split(command)[1:]) == 1
    out = capsys.readouterr().out
    assert f"partition {FAULT}, 657 rows): would FAIL" in out
    assert "FAIL  hum is greater than 0 and at most 1: 22 of 657 rows unexpected" in out
