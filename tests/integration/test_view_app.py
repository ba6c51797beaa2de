"""The airloop view inside Airflow's own api-server app (in process), with its real auth manager.

The app is Airflow's ``create_app()`` with this project's plugins folder, so the view is mounted exactly as the
api-server mounts it; requests go through Starlette's test client. The model is ``bikesview``, a copy of the
bikes spec in a models folder of this module's own, with warehouse rows and report files written here.
Pending approvals are rows of Airflow's own tables (``dag_run``, ``task_instance``, ``hitl_detail``) written here;
server-level checks (the UI's cookie, a real browser, approvals answered through the API) are in ``tests/e2e``.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
MODEL = "bikesview"
RUN = "scheduled__2011-03-01T00:00:00+00:00"
EVIL = "<script>alert('x')</script>"


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("view-models")
    raw = yaml.safe_load((ROOT / "include" / "models" / "bikes.yaml").read_text())
    raw["name"] = MODEL
    (folder / f"{MODEL}.yaml").write_text(yaml.safe_dump(raw))
    shutil.copy(ROOT / "include" / "models" / "bikes.yaml", folder / "bikes.yaml")
    mp = pytest.MonkeyPatch()
    mp.setenv("AIRLOOP_MODELS_DIR", str(folder))
    yield folder
    mp.undo()


@pytest.fixture(scope="module")
def story(models_dir: Path) -> dict[str, Any]:
    """Warehouse rows and report files of one model: two validations, three drift windows, a request, the ledger."""
    import sqlalchemy as sa

    from airloop.adapters import warehouse
    from airloop.adapters.db import engine_for
    from airloop.core.settings import WAREHOUSE_CONN_ID, paths

    engine = engine_for(WAREHOUSE_CONN_ID)
    warehouse.ensure_schema(engine)
    reports = paths().reports / MODEL
    docs = reports / "validation" / "2011-03-01" / "data_docs" / "index.html"
    docs.parent.mkdir(parents=True, exist_ok=True)
    docs.write_text("<html><body>GX data docs of 2011-03-01</body></html>")
    result = reports / "validation" / "2011-02-01" / "validation_result.json"
    result.parent.mkdir(parents=True, exist_ok=True)
    result.write_text('{"success": true}')
    base = datetime(2011, 3, 1, tzinfo=UTC)
    with engine.begin() as conn:
        for model in (MODEL,):
            tables = (warehouse.validation_results, warehouse.drift_metrics, warehouse.retrain_requests)
            for t in tables:
                conn.execute(t.delete().where(t.c.model == model))
            batches = warehouse.prediction_batches
            ids = sa.select(batches.c.id).where(batches.c.model == model)
            conn.execute(warehouse.prediction_rows.delete().where(warehouse.prediction_rows.c.batch_id.in_(ids)))
            conn.execute(batches.delete().where(batches.c.model == model))
            conn.execute(warehouse.promotion_ledger.delete().where(warehouse.promotion_ledger.c.model == model))
        common = {"model": MODEL, "content_digest": "d" * 64, "suite_digests": {}, "validated_at": base}
        conn.execute(
            warehouse.validation_results.insert(),
            [
                common
                | {
                    "partition": "2011-03-01",
                    "interval_start": base,
                    "interval_end": base + timedelta(days=28),
                    "success": False,
                    "rows": 672,
                    "evaluated_expectations": 20,
                    "failed_expectations": 2,
                    "failures": [{"expectation": "expect_column_values_to_be_between", "kwargs": {"column": "temp"}}],
                    "report_path": str(docs.parent.parent / "validation_result.json"),
                    "docs_path": str(docs),
                    "dag_run_id": RUN,
                },
                common
                | {
                    "partition": "2011-02-01",
                    "interval_start": base - timedelta(days=28),
                    "interval_end": base,
                    "success": True,
                    "rows": 650,
                    "evaluated_expectations": 20,
                    "failed_expectations": 0,
                    "failures": [],
                    "report_path": str(result),
                    "docs_path": None,
                    "dag_run_id": "scheduled__2011-02-01T00:00:00+00:00",
                },
            ],
        )
        for i, (share, drifted) in enumerate(((0.1, False), (0.2, False), (0.6, True))):
            end = base + timedelta(days=28 * (i + 1))
            report = reports / "drift" / f"{end:%Y-%m-%d}_v1" / "report.html"
            report.parent.mkdir(parents=True, exist_ok=True)
            report.write_text(f"<html><body>Evidently report {end:%Y-%m-%d}</body></html>")
            conn.execute(
                warehouse.drift_metrics.insert().values(
                    model=MODEL,
                    window_end=end,
                    champion_version="1",
                    window_start=end - timedelta(days=28),
                    reference="seasonal",
                    reference_rows=1000,
                    current_rows=600,
                    drift_share=share,
                    drifted=drifted,
                    drifted_columns=["temp", "atemp"] if drifted else [],
                    column_scores={},
                    prediction_score=0.1,
                    prediction_drifted=False,
                    labelled_rows=600,
                    mae=80.0,
                    rmse=110.0,
                    reference_mae=40.0,
                    performance_metric="mae",
                    degradation=1.0 if drifted else 0.05,
                    degraded=drifted,
                    notes=[],
                    report_path=str(report),
                    dag_id=f"{MODEL}_monitor",
                    dag_run_id=f"manual__{end:%Y-%m-%d}",
                    measured_at=end,
                )
            )
        scored = {"model": MODEL, "partition": "2011-02-01", "interval_start": base - timedelta(days=28)}
        warehouse.insert_predictions(
            conn,
            [
                scored
                | {
                    "interval_end": base,
                    "ts": base - timedelta(hours=h),
                    "row_key": f"2011-02-28T{24 - h:02d}:00:00Z",
                    "prediction": 100.0 + h,
                    "model_version": "1",
                    "mlflow_run_id": "r" * 32,
                    "input_digest": "d" * 64,
                }
                for h in (1, 2)
            ],
        )
        conn.execute(
            warehouse.retrain_requests.insert().values(
                model=MODEL,
                window_start=base + timedelta(days=56),
                window_end=base + timedelta(days=84),
                champion_version="1",
                reason="drift in 2 of the last 3 windows",
                drifted_columns=["temp", "atemp"],
                figures={},
                report_path=str(report),
                dag_id=f"{MODEL}_monitor",
                dag_run_id="manual__2011-05-24",
                requested_at=base + timedelta(days=84),
            )
        )
        conn.execute(
            warehouse.promotion_ledger.insert().values(
                model=MODEL,
                seq=1,
                action="promote",
                outcome="promoted",
                moved=True,
                candidate_version="1",
                from_version=None,
                champion_after="1",
                decided_by="gate",
                reason=f"first champion {EVIL}",
                evidence={},
                recorded_at=base,
            )
        )
    return {"docs": docs, "result": result, "drift_run": "manual__2011-05-24"}


@pytest.fixture(scope="module")
def api(airflow_db: Path, story: dict[str, Any]) -> Iterator[Any]:
    """Airflow's api-server app, in process, with users admin (admin) and steward (viewer)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "admin:admin,steward:viewer")
    mp.setenv("AIRFLOW__API_AUTH__JWT_SECRET", "view-tests-" + "s" * 64)
    from airflow.api_fastapi.app import create_app
    from fastapi.testclient import TestClient

    with TestClient(create_app(), follow_redirects=False) as client:
        yield client
    mp.undo()


def _token(role: str) -> dict[str, str]:
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    token = get_auth_manager().generate_jwt(SimpleAuthManagerUser(username=role, role=role))
    return {"Authorization": f"Bearer {token}"}


ROUTES = [
    "/airloop/",
    f"/airloop/models/{MODEL}",
    "/airloop/api/models",
    f"/airloop/api/models/{MODEL}",
    f"/airloop/reports/{MODEL}/validation/2011-02-01/validation_result.json",
    f"/airloop/go/validation?dag_id={MODEL}_ingest&run_id={RUN}",
    f"/airloop/models/{MODEL}/suites",
    f"/airloop/api/models/{MODEL}/suites",
    f"/airloop/api/models/{MODEL}/champion?at=2011-04-01",
]


@pytest.mark.parametrize("route", ROUTES)
def test_anonymous_and_forged_requests_are_refused_and_see_nothing(api: Any, route: str) -> None:
    resp = api.get(route)
    assert resp.status_code == 401, resp.text
    assert MODEL not in resp.text and "success" not in resp.text
    forged = api.get(route, headers={"Authorization": "Bearer not-a-token"})
    assert forged.status_code in (401, 403), forged.text
    assert MODEL not in forged.text and "success" not in forged.text


def test_the_page_tells_the_model_story(api: Any, story: dict[str, Any]) -> None:
    resp = api.get(f"/airloop/models/{MODEL}", headers=_token("viewer"))
    assert resp.status_code == 200, resp.text
    html = resp.text
    assert '<h1 id="model">bikesview</h1>' in html
    assert "No @champion yet" in html  # nothing registered in MLflow for this model
    # The drift chart: three windows, the last one drifted, each linking to its report; the threshold line.
    assert html.count('<circle class="window') == 3
    assert html.count('class="window drifted"') == 1
    assert 'class="threshold"' in html
    assert f"/airloop/reports/{MODEL}/drift/2011-05-24_v1/report.html" in html
    assert "temp, atemp" in html and "mae worse by 100%" in html and "MAE" not in html
    # The latest predictions, newest first, each with the version that made it.
    predictions = html.split('<table id="predictions">')[1].split("</table>")[0]
    assert predictions.index("2011-02-28T23:00:00Z") < predictions.index("2011-02-28T22:00:00Z")
    assert "<td>101</td>" in predictions and "<td>v1</td>" in predictions
    # Validations: the quarantined interval links to its Data Docs page, the passed one to its result.
    assert "quarantined" in html and "2 of 20" in html
    quarantined = html.split('id="quarantined"')[1].split("</table>")[0]
    assert "2011-03-01" in quarantined and "expect_column_values_to_be_between (temp)" in quarantined
    assert "2011-02-01" not in quarantined
    assert f"/airloop/reports/{MODEL}/validation/2011-03-01/data_docs/index.html" in html
    # Request and ledger; every value is escaped.
    assert "drift in 2 of the last 3 windows" in html
    assert "promoted" in html and "first champion" in html
    assert EVIL not in html and "&lt;script&gt;" in html


def test_json_for_services(api: Any) -> None:
    models = api.get("/airloop/api/models", headers=_token("admin")).json()["models"]
    assert MODEL in models and "bikes" in models
    board = api.get(f"/airloop/api/models/{MODEL}", headers=_token("admin")).json()
    assert [w["drift_share"] for w in board["drift"]] == [0.1, 0.2, 0.6]  # oldest first
    assert board["ledger"][0]["outcome"] == "promoted"
    assert [p["prediction"] for p in board["predictions"]] == [101.0, 102.0]
    assert board["drift"][-1]["performance_metric"] == "mae"
    assert board["requests"][0]["window_end"].startswith("2011-05-24")
    missing = api.get("/airloop/api/models/nope", headers=_token("admin"))
    assert missing.status_code == 404 and "nope" in missing.json()["detail"]


def test_who_was_champion_at_a_time_as_json(api: Any) -> None:
    route = f"/airloop/api/models/{MODEL}/champion"
    before = api.get(route, params={"at": "2011-02-01"}, headers=_token("viewer"))
    assert before.status_code == 200, before.text
    assert before.json()["champion"] is None and before.json()["first_promotion"] == "2011-03-01T00:00:00+00:00"
    for at in ("2011-04-01T12:00:00Z", "2011-04-01 12:00", "2011-04-01T14:00:00+02:00"):
        answer = api.get(route, params={"at": at}, headers=_token("viewer")).json()
        assert answer["at"] == "2011-04-01T12:00:00+00:00", at
        assert (answer["champion"], answer["since"], answer["seq"], answer["decided_by"]) == (
            "1",
            "2011-03-01T00:00:00+00:00",
            1,
            "gate",
        )
        assert answer["reason"] == f"first champion {EVIL}" and answer["action"] == "promote"
    assert api.get(route, params={"at": "now"}, headers=_token("viewer")).json()["champion"] == "1"

    bad = api.get(route, params={"at": "last tuesday"}, headers=_token("viewer"))
    assert bad.status_code == 400
    assert "Query parameter `at` is 'last tuesday', not a time: give ISO 8601" in bad.json()["detail"]
    neither = api.get(route, headers=_token("viewer"))
    assert neither.status_code == 400 and "`at`" in neither.json()["detail"]
    served = api.get(route, params={"prediction": "2011-02-01:2011-02-28T23:00:00Z"}, headers=_token("viewer"))
    assert served.status_code == 200, served.text
    assert served.json()["prediction"]["model_version"] == "1" and served.json()["seq"] == 1
    never = api.get(route, params={"prediction": "2011-02-01:no-such-key"}, headers=_token("viewer"))
    assert never.status_code == 404 and "no-such-key" in never.json()["detail"]
    unknown = api.get("/airloop/api/models/nope/champion", params={"at": "now"}, headers=_token("viewer"))
    assert unknown.status_code == 404 and "nope" in unknown.json()["detail"]


def test_reports_are_served_only_from_the_reports_folder(api: Any, story: dict[str, Any]) -> None:
    ok = api.get(f"/airloop/reports/{MODEL}/validation/2011-03-01/data_docs/index.html", headers=_token("viewer"))
    assert ok.status_code == 200 and "GX data docs of 2011-03-01" in ok.text
    # The client normalises a plain "../" away (the request leaves /airloop); encoded dots reach the route.
    assert "root:" not in api.get("/airloop/reports/../../../etc/passwd", headers=_token("viewer")).text
    for path in ("%2e%2e/%2e%2e/%2e%2e/etc/passwd", "..%2f..%2f..%2fetc/passwd", f"{MODEL}/nothing.html", "x/y.html"):
        resp = api.get(f"/airloop/reports/{path}", headers=_token("viewer"))
        assert resp.status_code == 404, (path, resp.text)
        assert "root:" not in resp.text


def test_links_resolve_when_clicked(api: Any, story: dict[str, Any]) -> None:
    from airloop.core.urls import VALIDATION, link_url

    h = _token("viewer")
    resp = api.get(link_url(VALIDATION, f"{MODEL}_ingest", RUN), headers=h)  # what the task's link holds
    assert resp.status_code == 307
    assert resp.headers["location"] == f"/airloop/reports/{MODEL}/validation/2011-03-01/data_docs/index.html"
    resp = api.get(f"/airloop/go/drift-report?dag_id={MODEL}_monitor&run_id=manual__2011-05-24", headers=h)
    assert resp.status_code == 307 and resp.headers["location"].endswith("/drift/2011-05-24_v1/report.html")
    # Nothing recorded for that run: a page that says so and what to look at, not a broken redirect.
    resp = api.get(f"/airloop/go/drift-report?dag_id={MODEL}_monitor&run_id=manual__nothing", headers=h)
    assert resp.status_code == 404 and "No drift report for this run" in resp.text
    resp = api.get(f"/airloop/go/training-run?dag_id={MODEL}_monitor&run_id=manual__nothing", headers=h)
    assert resp.status_code == 404 and "No retraining was requested" in resp.text
    resp = api.get(f"/airloop/go/mlflow-run?dag_id={MODEL}_train&run_id=manual__nothing", headers=h)
    assert resp.status_code == 404 and "No MLflow run for this DAG run" in resp.text
    assert api.get(f"/airloop/go/other?dag_id={MODEL}_train&run_id=x", headers=h).status_code == 404
    assert api.get("/airloop/go/validation?dag_id=someone_elses&run_id=x", headers=h).status_code == 404
    assert api.get(f"/airloop/go/validation?dag_id={MODEL}_ingest", headers=h).status_code == 422


def test_the_view_is_in_the_ui_navigation(api: Any) -> None:
    plugins = api.get("/api/v2/plugins", headers=_token("admin")).json()["plugins"]
    ours = next(p for p in plugins if p["name"] == "airloop")
    view = ours["external_views"][0]
    assert view["href"] == "/airloop/" and view["url_route"] == "airloop" and view["nav_top_level"] is True
    assert ours["fastapi_apps"][0]["url_prefix"] == "/airloop"


SCRAPE_TOKEN = "scrape-" + "t" * 40


def test_metrics_are_off_without_a_scrape_token(api: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRLOOP_METRICS_TOKEN", raising=False)
    resp = api.get("/airloop/metrics", headers={"Authorization": f"Bearer {SCRAPE_TOKEN}"})
    assert resp.status_code == 404 and "AIRLOOP_METRICS_TOKEN" in resp.json()["detail"]
    assert MODEL not in resp.text
    # A UI user's token is not a scrape token either: the route is for the monitoring stack only.
    assert api.get("/airloop/metrics", headers=_token("admin")).status_code == 404


def test_metrics_need_the_scrape_token(api: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRLOOP_METRICS_TOKEN", SCRAPE_TOKEN)
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": SCRAPE_TOKEN}, _token("admin")):
        resp = api.get("/airloop/metrics", headers=headers)
        assert resp.status_code == 401, (headers, resp.text)
        assert MODEL not in resp.text and resp.headers["www-authenticate"] == "Bearer"


def test_metrics_scrape_tells_each_models_health(api: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    monkeypatch.setenv("AIRLOOP_METRICS_TOKEN", SCRAPE_TOKEN)
    resp = api.get("/airloop/metrics", headers={"Authorization": f"Bearer {SCRAPE_TOKEN}"})
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/plain; version=")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(resp.text)
        for s in f.samples
    }
    ours = (("model", MODEL),)
    assert samples[("airloop_quarantined_intervals", ours)] == 1
    assert samples[("airloop_promotions_total", ours)] == 1
    assert samples[("airloop_retrain_requests_total", ours)] == 1
    assert samples[("airloop_drift_share", ours)] == 0.6
    assert samples[("airloop_last_validation_success", ours)] == 0
    assert samples[("airloop_pending_approvals", ours)] == 0  # read from Airflow's metadata DB: none waiting
    assert samples[("airloop_source_up", (("source", "airflow"),))] == 1
    assert samples[("airloop_source_up", (("source", "warehouse"),))] == 1
    assert ("airloop_quarantined_intervals", (("model", "bikes"),)) in samples  # every spec, not only one


def test_reports_are_sandboxed_off_the_uis_origin(api: Any, story: dict[str, Any]) -> None:
    """A report is the data's HTML on the UI's origin: served in a CSP sandbox with scripts but no same-origin."""
    for path in (
        f"{MODEL}/validation/2011-03-01/data_docs/index.html",
        f"{MODEL}/drift/2011-05-24_v1/report.html",
        f"{MODEL}/validation/2011-02-01/validation_result.json",
    ):
        resp = api.get(f"/airloop/reports/{path}", headers=_token("viewer"))
        assert resp.status_code == 200, (path, resp.text)
        policy = [d.strip().split() for d in resp.headers.get("content-security-policy", "").split(";")]
        sandbox = next((d for d in policy if d and d[0] == "sandbox"), None)
        assert sandbox is not None, (path, resp.headers)
        assert "allow-same-origin" not in sandbox and "allow-top-navigation" not in sandbox, (path, sandbox)
        assert resp.headers.get("x-content-type-options") == "nosniff", (path, resp.headers)
    # The view's own page is not sandboxed (it is the UI's page; it only links to reports).
    page = api.get(f"/airloop/models/{MODEL}", headers=_token("viewer"))
    assert "sandbox" not in page.headers.get("content-security-policy", "")


@pytest.fixture
def approvals_in_airflow(airflow_db: Path) -> Iterator[dict[str, str]]:
    """Real rows in Airflow's metadata DB: a pending approval of this model's training and of its promotion, an
    answered one of its training, and a pending one of another model. Removed afterwards."""
    import uuid

    import sqlalchemy as sa
    from airflow.models.dagrun import DagRun
    from airflow.models.hitl import HITLDetail
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    base = datetime(2011, 6, 1, tzinfo=UTC)
    asks = [  # dag_id, run_id, subject, answered
        (f"{MODEL}_train", "manual__pending", "Promote bikesview v7?", False),
        (f"{MODEL}_promote", "manual__pending_promote", "Roll bikesview back to v5?", False),
        (f"{MODEL}_train", "manual__answered", "Promote bikesview v6?", True),
        ("bikes_train", "manual__other_model", "Promote bikes v9?", False),
    ]
    with create_session() as session:
        for i, (dag_id, run_id, subject, answered) in enumerate(asks):
            session.execute(
                sa.insert(DagRun.__table__).values(
                    dag_id=dag_id,
                    run_id=run_id,
                    run_type="manual",
                    run_after=base,
                    logical_date=None,
                    data_interval_end=None,
                )
            )
            ti_id = uuid.uuid4()
            session.execute(
                sa.insert(TaskInstance.__table__).values(
                    id=ti_id, dag_id=dag_id, run_id=run_id, task_id="approve", map_index=-1, pool="default_pool"
                )
            )
            session.execute(
                sa.insert(HITLDetail.__table__).values(
                    ti_id=ti_id,
                    options=["Approve", "Reject"],
                    subject=subject,
                    params={},
                    params_input={},
                    created_at=base + timedelta(minutes=i),
                    responded_at=base + timedelta(hours=1) if answered else None,
                    chosen_options=["Approve"] if answered else None,
                )
            )
    yield {"pending": "manual__pending", "pending_promote": "manual__pending_promote"}
    with create_session() as session:
        run_ids = [a[1] for a in asks]
        tis = sa.select(TaskInstance.id).where(TaskInstance.run_id.in_(run_ids))
        session.execute(sa.delete(HITLDetail.__table__).where(HITLDetail.ti_id.in_(tis)))
        session.execute(sa.delete(TaskInstance.__table__).where(TaskInstance.run_id.in_(run_ids)))
        session.execute(sa.delete(DagRun.__table__).where(DagRun.run_id.in_(run_ids)))


def test_pending_approvals_are_this_models_unanswered_ones_oldest_first(
    api: Any, approvals_in_airflow: dict[str, str]
) -> None:
    from airloop.ui.app import pending_approvals

    found = pending_approvals([f"{MODEL}_train", f"{MODEL}_promote"])
    assert [(a.dag_id, a.run_id, a.subject) for a in found] == [
        (f"{MODEL}_train", "manual__pending", "Promote bikesview v7?"),
        (f"{MODEL}_promote", "manual__pending_promote", "Roll bikesview back to v5?"),
    ]
    assert found[0].url.endswith(f"/dags/{MODEL}_train/runs/manual__pending/tasks/approve/required_actions")
    # The same on the page and in the JSON: the answered one and the other model's are not there.
    html = api.get(f"/airloop/models/{MODEL}", headers=_token("viewer")).text
    assert "Promote bikesview v7?" in html and "Roll bikesview back to v5?" in html
    assert "Promote bikesview v6?" not in html and "Promote bikes v9?" not in html
    board = api.get(f"/airloop/api/models/{MODEL}", headers=_token("viewer")).json()
    assert [a["subject"] for a in board["approvals"]] == ["Promote bikesview v7?", "Roll bikesview back to v5?"]


def test_the_steward_page_shows_each_rule_and_what_it_did(api: Any) -> None:
    board = api.get(f"/airloop/models/{MODEL}", headers=_token("viewer")).text
    assert f'<a id="suites-link" href="/airloop/models/{MODEL}/suites">' in board  # linked from the model's page
    resp = api.get(f"/airloop/models/{MODEL}/suites", headers=_token("viewer"))
    assert resp.status_code == 200, resp.text
    html = resp.text
    assert f"{MODEL}: expectation suites" in html and "Suite bikes_values" in html and "Suite bikes_schema" in html
    assert "temp is between 0 and 1" in html and "hum is greater than 0 and at most 1" in html
    # The stored failure of 2011-03-01 is on temp's rule; the other interval passed it.
    temp = html.split('<span class="text">temp is between 0 and 1</span>')[1].split("</tr>")[0]
    assert 'class="verdict fail bad" title="2011-03-01: fail"' in temp
    assert f"airloop suites check {MODEL} --on 2011-03-01" in html
    assert f"airloop suites check {MODEL} --on 2011-02-01" in html
    top = html.split('id="top-failing"')[1].split("</table>")[0]
    assert "temp is between 0 and 1" in top and "1 of 2" in top


def test_the_steward_page_as_json(api: Any) -> None:
    page = api.get(f"/airloop/api/models/{MODEL}/suites", headers=_token("admin")).json()
    assert [i["partition"] for i in page["intervals"]] == ["2011-03-01", "2011-02-01"]
    values = next(s for s in page["suites"] if s["name"] == "bikes_values")
    temp = next(r for r in values["rules"] if r["column"] == "temp")
    assert temp["text"] == "temp is between 0 and 1" and temp["failures"] == 1
    assert [v["status"] for v in temp["history"]] == ["fail", "absent"]  # no suite digest recorded for 2011-02-01
    assert page["intervals"][0]["command"] == f"airloop suites check {MODEL} --on 2011-03-01"
    assert api.get("/airloop/api/models/nope/suites", headers=_token("admin")).status_code == 404


def test_a_user_who_may_not_read_the_dags_sees_no_suites(api: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The auth manager decides: here it refuses ``viewer`` the bikesview DAGs (an auth manager with DAG-level
    rules would); the page and its JSON are then 404 and name nothing of the model's suites."""
    from airflow.api_fastapi.app import get_auth_manager

    auth = get_auth_manager()
    allowed = auth.is_authorized_dag

    def refuse_viewer(*, method: str, user: Any, details: Any = None, **kw: Any) -> bool:
        if user.get_name() == "viewer" and details is not None and str(details.id).startswith(f"{MODEL}_"):
            return False
        return bool(allowed(method=method, user=user, details=details, **kw))

    monkeypatch.setattr(auth, "is_authorized_dag", refuse_viewer)
    for route in (f"/airloop/models/{MODEL}/suites", f"/airloop/api/models/{MODEL}/suites"):
        resp = api.get(route, headers=_token("viewer"))
        assert resp.status_code == 404, resp.text
        assert "bikes_values" not in resp.text and "suites check" not in resp.text
    assert MODEL not in api.get("/airloop/api/models", headers=_token("viewer")).json()["models"]
    assert api.get(f"/airloop/api/models/{MODEL}/suites", headers=_token("admin")).status_code == 200


def test_the_outcome_curve_shows_each_versions_realized_metric_per_interval(api: Any) -> None:
    """Outcomes of two versions over three intervals: one line per version, a point per interval it served, the
    figure in the gate's metric (rmse) computed from the stored outcomes; the same as JSON."""
    from airloop.adapters import warehouse
    from airloop.adapters.db import engine_for
    from airloop.core.settings import WAREHOUSE_CONN_ID

    engine = engine_for(WAREHOUSE_CONN_ID)
    base = datetime(2011, 3, 1, tzinfo=UTC)
    served = {"2011-02-01": ("1", 10.0), "2011-03-01": ("1", 20.0), "2011-03-29": ("2", 5.0)}
    rows = []
    for n, (partition, (version, error)) in enumerate(served.items()):
        for h in range(4):
            ts = base + timedelta(days=28 * (n - 1), hours=h)
            label = 100.0 + h
            rows.append(
                {
                    "model": MODEL,
                    "partition": partition,
                    "row_key": ts.isoformat(),
                    "ts": ts,
                    "model_version": version,
                    "prediction": label + (error if h % 2 else -error),
                    "label": repr(label),
                    "label_revision": 1,
                    "label_arrived_at": ts + timedelta(days=28),
                    "joined_at": ts + timedelta(days=28),
                }
            )
    with engine.begin() as conn:
        conn.execute(warehouse.outcomes.delete().where(warehouse.outcomes.c.model == MODEL))
        conn.execute(warehouse.outcomes.insert(), rows)
    try:
        html = api.get(f"/airloop/models/{MODEL}", headers=_token("viewer")).text
        assert '<svg id="outcome-chart"' in html
        assert html.count('<polyline class="version"') == 2 and html.count('<circle class="outcome"') == 3
        table = html.split('<table id="outcomes">')[1].split("</table>")[0]
        assert "<th>rmse</th>" in table
        # newest first; rmse of errors of +-e is e
        assert table.index("2011-03-29") < table.index("2011-03-01") < table.index("2011-02-01")
        assert "<td>v2</td><td>5</td><td>4</td>" in table and "<td>v1</td><td>20</td><td>4</td>" in table
        assert "v1 8, v2 4" in html
        data = api.get(f"/airloop/api/models/{MODEL}/outcomes", headers=_token("viewer")).json()
        assert data["outcome_metric"] == "rmse" and data["outcome_counts"] == {"1": 8, "2": 4}
        assert [(c["window"], c["version"], c["value"]) for c in data["outcome_curve"]] == [
            ("2011-02-01", "1", 10.0),
            ("2011-03-01", "1", 20.0),
            ("2011-03-29", "2", 5.0),
        ]
        board = api.get(f"/airloop/api/models/{MODEL}", headers=_token("admin")).json()
        assert board["outcome_curve"] == data["outcome_curve"]
        assert api.get("/airloop/api/models/nope/outcomes", headers=_token("admin")).status_code == 404
    finally:
        with engine.begin() as conn:
            conn.execute(warehouse.outcomes.delete().where(warehouse.outcomes.c.model == MODEL))
