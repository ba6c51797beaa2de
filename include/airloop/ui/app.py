"""The airloop view: a FastAPI app mounted on Airflow's api-server at ``/airloop`` by ``plugins/airloop_view.py``.

Airflow does not put plugin apps behind its authentication, so every route here depends on
:data:`GetUserDep`: the UI's ``_token`` cookie (sent by the page embedded in the UI) or an
``Authorization: Bearer`` token. Anonymous requests get 401 before anything is read. A user sees only the
models whose DAGs the auth manager lets them read, and the approvals' answer link only if the auth manager would
take their answer (``can_answer_approvals`` in the JSON).

Routes (under ``/airloop``):

- ``/`` and ``/models/<model>``: the model's page (champion, challenger, approvals, drift trend, requests,
  ledger, validations); ``/api/models`` and ``/api/models/<model>``: the same as JSON, for services.
- ``/api/models/<model>/champion?at=<ISO 8601 | now>``: who was champion at that moment, since when, who or what
  moved it, the reason and the evidence (:func:`airloop.stages.promote.ledger.champion_at`); ``?prediction=
  <partition>:<row key>`` answers it for a prediction row instead. A bad ``at`` is 400 naming it and the form.
- ``/reports/<path>``: a report file under ``AIRLOOP_HOME/reports`` (Data Docs, validation results, Evidently),
  served with :data:`REPORT_HEADERS` so a report's scripts never run with the UI's origin.
- ``/models/<model>/suites``: the data steward's page (:mod:`airloop.ui.suites`): each suite's rules in plain words,
  what they did to the recent intervals, the suite digests in force, the ``airloop suites check`` command per
  interval; ``/api/models/<model>/suites``: the same as JSON.
- ``/go/<kind>?dag_id=&run_id=``: where a task's extra link leads (:mod:`airloop.orchestration.links`), resolved when
  clicked, so a link made when the task ended still finds what appeared later (the training run a request started).
- ``/metrics``: Prometheus metrics of every model's ML health (:mod:`airloop.ui.metrics_export`). A scraper is a
  service, not a person with a UI session, so this route takes a scrape token instead of the UI's auth:
  ``Authorization: Bearer <AIRLOOP_METRICS_TOKEN>``. Without that variable set the route is off (404 saying how to
  turn it on); a missing or wrong token is 401. The figures are every model's, so give the token to the monitoring
  stack only.
"""

from __future__ import annotations

import hmac
import logging
from datetime import datetime
from typing import Annotated, Any

from airflow.api_fastapi.core_api.security import GetUserDep
from fastapi import FastAPI, Header, HTTPException, Query
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response

from airloop.core import settings, urls
from airloop.core.settings import WAREHOUSE_CONN_ID, paths
from airloop.ui import board as view
from airloop.ui import links
from airloop.ui import suites as steward

log = logging.getLogger(__name__)
#: The stages whose DAGs ask for approvals (train before promotion, promote before a rollback).
APPROVAL_STAGES = ("train", "promote")

#: Headers of every report file. Reports are HTML written by GX and Evidently from the data, served from the
#: Airflow UI's own origin: ``sandbox`` gives the document a unique opaque origin, so its scripts cannot read the
#: UI's cookies or storage nor call the API as the user. ``allow-scripts`` because Evidently's reports are drawn
#: by their bundled JavaScript (and GX Data Docs use some); ``allow-same-origin`` is deliberately absent.
#: ``nosniff`` keeps a JSON or text report from being sniffed into HTML.
REPORT_HEADERS = {"Content-Security-Policy": "sandbox allow-scripts", "X-Content-Type-Options": "nosniff"}


def _user_name(user: Any) -> str:
    return str(getattr(user, "get_name", lambda: "?")())


def _readable_models(user: Any) -> list[Any]:
    """The specs whose DAGs this user may read (an auth manager other than Simple may restrict some)."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagDetails

    from airloop.core.spec import load_specs

    auth = get_auth_manager()
    return [
        spec
        for spec in load_specs(paths().models_dir)
        if all(
            auth.is_authorized_dag(method="GET", user=user, details=DagDetails(id=spec.dag_id(stage)))
            for stage in urls.STAGES
        )
    ]


def _can_answer_approvals(user: Any, spec: Any) -> bool:
    """Whether the auth manager lets this user answer the approvals of the model's train and promote DAGs.

    The same check as Airflow's endpoint that records an answer (PUT on the DAG's HITL details), so the view
    offers the answer link only to users whose answer Airflow would take.
    """
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails

    auth = get_auth_manager()
    return all(
        auth.is_authorized_dag(
            method="PUT", user=user, access_entity=DagAccessEntity.HITL_DETAIL, details=DagDetails(id=spec.dag_id(s))
        )
        for s in APPROVAL_STAGES
    )


def _spec(user: Any, model: str, specs: list[Any] | None = None) -> Any:
    for spec in _readable_models(user) if specs is None else specs:
        if spec.name == model:
            return spec
    raise HTTPException(status_code=404, detail=f"No model {model!r} that you may read.")


def _ui_base() -> str:
    from airflow.configuration import conf

    return conf.get("api", "base_url", fallback="") or ""


def _mlflow_ui() -> str | None:
    from airloop.adapters import registry

    return registry.ui_base()


def pending_approvals(dag_ids: list[str]) -> list[view.Approval]:
    """Tasks of these DAGs waiting in ``awaiting_input`` for an answer, oldest first (Airflow's metadata DB)."""
    import sqlalchemy as sa
    from airflow.models.hitl import HITLDetail
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    ui = _ui_base().rstrip("/")
    with create_session() as session:
        rows = session.execute(
            sa.select(TaskInstance.dag_id, TaskInstance.run_id, TaskInstance.task_id, HITLDetail.subject)
            .add_columns(HITLDetail.created_at)
            .join(TaskInstance, TaskInstance.id == HITLDetail.ti_id)
            .where(HITLDetail.responded_at.is_(None), TaskInstance.dag_id.in_(dag_ids))
            .order_by(HITLDetail.created_at)
        ).all()
    return [
        view.Approval(
            dag_id=d,
            run_id=r,
            task_id=t,
            subject=subject,
            created_at=created,
            url=f"{ui}/dags/{d}/runs/{r}/tasks/{t}/required_actions",
        )
        for d, r, t, subject, created in rows
    ]


def _board(spec: Any, user: Any = None) -> view.Board:
    from airloop.adapters.db import engine_for

    try:
        approvals = pending_approvals([spec.dag_id(stage) for stage in APPROVAL_STAGES])
    except Exception as exc:  # the page still shows the rest, and says what it could not read
        log.warning("airloop view: pending approvals of %s unreadable: %s", spec.name, exc)
        approvals = []
    board = view.load_board(spec, engine_for(WAREHOUSE_CONN_ID), approvals=approvals, mlflow_ui=_mlflow_ui())
    if user is not None:
        board.can_answer_approvals = _can_answer_approvals(user, spec)
    return board


def _approval_times(dag_ids: list[str]) -> dict[str, list[datetime]]:
    """Creation times of the pending approvals of these DAGs, by DAG id."""
    times: dict[str, list[datetime]] = {}
    for a in pending_approvals(dag_ids):
        times.setdefault(a.dag_id, []).append(a.created_at)
    return times


def check_scrape_token(authorization: str | None) -> None:
    """Let a scrape through only with the configured token (compared in constant time)."""
    expected = settings.metrics_token()
    name = settings.METRICS_TOKEN.name
    if not expected:
        raise HTTPException(
            status_code=404,
            detail=f"Metrics are off: set {name} on the api-server and scrape with "
            "'Authorization: Bearer <token>' (see docs/observability.md).",
        )
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected.encode()):
        raise HTTPException(
            status_code=401,
            detail=f"A scrape needs 'Authorization: Bearer <token>' with the token in {name}.",
            headers={"WWW-Authenticate": "Bearer"},
        )


def metrics_response() -> Response:
    """One scrape: every model's health, read now."""
    from airloop.adapters.db import engine_for
    from airloop.core.spec import load_specs
    from airloop.ui import metrics_export

    def read() -> metrics_export.Health:
        specs = load_specs(paths().models_dir)
        return metrics_export.read_health(specs, engine_for(WAREHOUSE_CONN_ID), approvals=_approval_times)

    body, content_type = metrics_export.exposition(read)
    return Response(content=body, media_type=content_type)


def _suites(spec: Any) -> steward.SuitesPage:
    from airloop.adapters.db import engine_for

    p = paths()
    return steward.load_suites_page(spec, engine_for(WAREHOUSE_CONN_ID), p.expectations_dir, project=p.project)


def create_app() -> FastAPI:
    """The view's app; the plugin mounts it at :data:`airloop.ui.board.MOUNT`."""
    app = FastAPI(title="airloop view", description=__doc__, docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/", response_class=HTMLResponse)
    def index(user: GetUserDep) -> Response:
        specs = _readable_models(user)
        if not specs:
            return HTMLResponse(
                view.render_message("No model", "No model spec whose DAGs you may read.", status=404), 404
            )
        return RedirectResponse(f"{urls.MOUNT}/models/{specs[0].name}", status_code=307)

    @app.get("/models/{model}", response_class=HTMLResponse)
    def model_page(model: str, user: GetUserDep) -> HTMLResponse:
        specs = _readable_models(user)  # once per request: each reads every spec and asks the auth manager
        board = _board(_spec(user, model, specs), user)
        html = view.render_board(
            board,
            reports_root=paths().reports,
            airflow_ui=_ui_base(),
            models=[s.name for s in specs],
            user=_user_name(user),
        )
        return HTMLResponse(html)

    @app.get("/api/models")
    def api_models(user: GetUserDep) -> JSONResponse:
        return JSONResponse({"models": [s.name for s in _readable_models(user)]})

    @app.get("/api/models/{model}")
    def api_model(model: str, user: GetUserDep) -> JSONResponse:
        spec = _spec(user, model)
        return JSONResponse(_board(spec, user).to_dict())

    @app.get("/go/{kind}", response_class=HTMLResponse)
    def go(kind: str, user: GetUserDep, dag_id: str = Query(...), run_id: str = Query(...)) -> Response:
        if kind not in urls.KINDS:
            raise HTTPException(status_code=404, detail=f"No link kind {kind!r}; known: {', '.join(urls.KINDS)}.")
        spec = next((s for s in _readable_models(user) if dag_id in {s.dag_id(st) for st in urls.STAGES}), None)
        if spec is None:
            raise HTTPException(status_code=404, detail=f"No DAG {dag_id!r} of a model that you may read.")
        target = links.resolve(kind, spec, dag_id, run_id, reports_root=paths().reports, mlflow_ui=_mlflow_ui())
        if target.url:
            url = target.url if not target.url.startswith("/dags/") else _ui_base().rstrip("/") + target.url
            return RedirectResponse(url, status_code=307)
        return HTMLResponse(view.render_message(target.title, target.message, status=404), status_code=404)

    add_report_route(app)
    add_outcomes_route(app)
    add_champion_route(app)
    add_suites_routes(app)
    add_metrics_route(app)
    return app


def add_outcomes_route(app: FastAPI) -> None:
    """``/api/models/{model}/outcomes``: the outcome curve alone (realized gate metric per interval and version)."""

    @app.get("/api/models/{model}/outcomes")
    def api_outcomes(model: str, user: GetUserDep) -> JSONResponse:
        """The outcome curve alone: realized gate metric per interval and version, outcomes per version."""
        from airloop.adapters.db import engine_for

        spec = _spec(user, model)
        board = view.Board(model=spec.name, description=spec.description, owner=spec.owner, dag_ids={})
        view.load_outcome_curve(board, spec, engine_for(WAREHOUSE_CONN_ID))
        data = board.to_dict()
        return JSONResponse({k: data[k] for k in ("model", "outcome_metric", "outcome_curve", "outcome_counts")})


def add_report_route(app: FastAPI) -> None:
    """``/reports/<path>``: a report file of a model the user may read, sandboxed off the UI's origin."""

    @app.get("/reports/{path:path}")
    def report(path: str, user: GetUserDep) -> FileResponse:
        root = paths().reports.resolve()
        target = (root / path).resolve()
        # Only files under the reports folder, of a model this user may read: ``..`` or a symlink out is 404.
        if not target.is_relative_to(root) or not target.is_file():
            raise HTTPException(status_code=404, detail="No such report.")
        model = target.relative_to(root).parts[0]
        _spec(user, model)
        return FileResponse(target, headers=REPORT_HEADERS)


def add_champion_route(app: FastAPI) -> None:
    """``/api/models/<model>/champion``: who was champion at a moment (or of a prediction), and why."""

    @app.get("/api/models/{model}/champion")
    def api_champion(
        model: str, user: GetUserDep, at: str | None = Query(None), prediction: str | None = Query(None)
    ) -> JSONResponse:
        from airloop.adapters.db import engine_for
        from airloop.core.times import MOMENT_FORM, moment
        from airloop.stages.promote.ledger import NoSuchPrediction, champion_at, champion_of_prediction

        spec = _spec(user, model)
        engine = engine_for(WAREHOUSE_CONN_ID)
        if (at is None) == (prediction is None):
            raise HTTPException(
                status_code=400,
                detail=f"Give exactly one of the query parameters `at` ({MOMENT_FORM}) or `prediction` "
                "(<partition>:<row key>).",
            )
        if prediction is not None:
            partition, sep, row_key = prediction.partition(":")
            if not sep or not partition or not row_key:
                raise HTTPException(
                    status_code=400,
                    detail=f"Query parameter `prediction` is {prediction!r}: expected <partition>:<row key>.",
                )
            try:
                row, answer = champion_of_prediction(engine, spec.name, partition, row_key)
            except NoSuchPrediction as exc:
                raise HTTPException(status_code=404, detail=str(exc)) from None
            return JSONResponse({**answer.to_dict(), "prediction": _jsonable(row)})
        try:
            when = moment(str(at), "Query parameter `at`")
        except ValueError as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from None
        return JSONResponse(champion_at(engine, spec.name, when).to_dict())


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()}


def add_suites_routes(app: FastAPI) -> None:
    """``/models/<model>/suites`` and its JSON: the data steward's page, behind the UI's login like the rest."""

    @app.get("/models/{model}/suites", response_class=HTMLResponse)
    def suites_page(model: str, user: GetUserDep) -> HTMLResponse:
        specs = _readable_models(user)
        page = _suites(_spec(user, model, specs))
        html = steward.render_suites_page(
            page, reports_root=paths().reports, models=[s.name for s in specs], user=_user_name(user)
        )
        return HTMLResponse(html)

    @app.get("/api/models/{model}/suites")
    def api_suites(model: str, user: GetUserDep) -> JSONResponse:
        return JSONResponse(_suites(_spec(user, model)).to_dict())


def add_metrics_route(app: FastAPI) -> None:
    """``/metrics``: for a scraper, behind the scrape token instead of a user's login."""

    @app.get("/metrics")
    def metrics(authorization: Annotated[str | None, Header()] = None) -> Response:
        check_scrape_token(authorization)
        return metrics_response()
