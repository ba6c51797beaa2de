"""``make demo``: the whole loop on the vendored real data, driven the way a user would drive it.

Seeds the source, starts the embedded runtime, waits for the DAGs to be parsed, unpauses the model's ingestion
so the scheduler replays the data's timeline (catchup). Then, in data time, as planned from the model's spec
(:func:`plan_story`): trains the first champion through the REST API on (almost) one training window of data,
scores every interval with it, and steps ``<model>_monitor`` through the monitoring windows after it (param
``as_of``) as the later data would have come in. When the monitor requests retraining, the request's Asset
event starts ``<model>_train``, whose challenger goes through the gate; a new champion re-scores the windows
after the request. The summary shows intervals, the champion and its metrics, predictions by version, judged
windows, requests and the promotion ledger. The servers stay up for exploring (``make down`` stops them)
unless ``--exit`` is given.

The default story is the bike rentals' (``bikes``: 2011 trains the first champion, the monitor judges the
four-week windows of 2012, where demand grows and retraining is requested); ``airloop demo --model birds`` tells
the bird strikes' (the first champion on 1990-1992, three-month windows of 1993 and after).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from airloop.core.settings import SOURCE_CONN_ID, WAREHOUSE_CONN_ID, paths
from airloop.core.spec import ModelSpec, get_spec
from airloop.ops import runtime

#: The model whose story ``make demo`` tells when none is named (``--model``).
MODEL = "bikes"
#: The models whose vendored data tells a story (any model with a spec and seeded data can be named).
DEMO_MODELS = ("bikes", "birds")
STAGES = 9
#: How often a followed run's state is read (two REST calls); the run's end is seen within this.
FOLLOW_POLL_S = 0.5
#: Monitoring windows judged at most, after the first champion's data.
MAX_WINDOWS = 6
_TERMINAL = {"success", "failed"}


@dataclass(frozen=True)
class StoryPlan:
    """The demo's data-time story of one model, derived from its spec (:func:`plan_story`)."""

    model: str
    intervals: int
    #: The first champion is trained on the data of the first ``first_intervals`` intervals, until ``first_end``.
    first_intervals: int
    first_end: datetime
    #: Every validated partition starting in [score_start, score_end) is scored with the first champion.
    score_start: date
    score_end: date
    #: The ends (``as_of``) of the monitoring windows judged after the first champion's data, in order.
    windows: tuple[datetime, ...]
    #: With a label table of its own (``labels.source.table``), the demo fills it in data time: the labels of the
    #: rows before ``labels_first`` have arrived before the first champion is trained (its training data); those
    #: before ``labels_last`` by the end of the data (``labels.after`` after their interval ended): they arrive
    #: after their rows were scored and judged. Rows after ``labels_last`` were scored, their labels not in yet.
    #: None: labels come with the rows.
    labels_first: datetime | None = None
    labels_last: datetime | None = None


def plan_story(spec: ModelSpec, until: datetime | None = None) -> StoryPlan:
    """The story for ``spec``'s schedule, training window and monitoring window.

    The first champion is trained as soon as (almost) one training window of data is in: on the intervals that
    end less than ``training.window_days`` after the schedule's start (at least one; always leaving one interval
    after it). The monitor then judges windows of ``monitoring.window_days``, each ending on an interval's end
    (where the newest data ends): the first at least a window after the champion's data, each next at least a
    window after the one before, up to :data:`MAX_WINDOWS` and the end of the data.
    """
    from airloop.core.intervals import expected_intervals

    intervals = list(expected_intervals(spec, until=until or datetime.now(UTC)))
    if len(intervals) < 2:
        raise DemoFailed(f"{spec.name}'s schedule holds {len(intervals)} interval(s): the demo needs two at least.")
    start = intervals[0].start
    limit = start + timedelta(days=spec.training.window_days)
    first = min(max(1, sum(i.end < limit for i in intervals)), len(intervals) - 1)
    first_end = intervals[first - 1].end
    ends = [i.end for i in intervals[first:]]
    step = timedelta(days=spec.monitoring.window_days)
    windows: list[datetime] = []
    previous = first_end
    while len(windows) < MAX_WINDOWS:
        end = next((e for e in ends if e >= previous + step), None)
        if end is None:
            break
        windows.append(end)
        previous = end
    last = intervals[-1].start.date() + timedelta(days=1)  # every partition starts before this day
    labels_first = labels_last = None
    if spec.labels.source is not None and spec.labels.source.table:
        labels_first = first_end
        labels_last = labels_arrived_by(spec, first_end, intervals[-1].end, until)
    return StoryPlan(
        spec.name, len(intervals), first, first_end, start.date(), last, tuple(windows), labels_first, labels_last
    )


def labels_arrived_by(spec: ModelSpec, first_end: datetime, as_of: datetime, until: datetime | None = None) -> datetime:
    """The end of the newest interval whose labels have arrived by ``as_of`` (it ended ``labels.after`` before),
    never before the first champion's data (``first_end``), whose labels arrived before it was trained."""
    from airloop.core.intervals import expected_intervals

    arrived_by = as_of - spec.label_latency
    ends = [i.end for i in expected_intervals(spec, until=until or datetime.now(UTC)) if i.end <= arrived_by]
    return max([first_end, *ends])


def labels_reruns(spec: ModelSpec, after: datetime, until: datetime) -> list[Any]:
    """The labels runs to run again so every interval ending in (``after``, ``until``] reads its labels once more,
    newest first: each run also reads the intervals before it within ``labels.max_lag`` (``steps.revisits``), so
    one run covers several."""
    from airloop.core.intervals import Interval, grid_intervals
    from airloop.stages.labels.steps import revisits

    start = spec.schedule.start_datetime
    pending = [i for i in grid_intervals(spec, Interval.of(start, until)) if after < i.end <= until]
    chosen: list[Interval] = []
    covered: set[Interval] = set()
    for interval in reversed(pending):
        if interval in covered:
            continue
        chosen.append(interval)
        covered |= {interval, *revisits(spec, interval)}
    return chosen


class DemoFailed(RuntimeError):
    """The demo could not finish; the message says where and what to look at."""


def _label_table(spec: ModelSpec, engine: Any) -> tuple[Any, Any]:
    """(the spec's label table, the source table it is copied from), as SQLAlchemy tables.

    The label table holds the columns the labels step reads (the keys, the time column, the label column), typed as
    in the source table: the demo copies them from the seeded source rows as their labels "arrive" in data time."""
    import sqlalchemy as sa

    given = spec.labels.source
    if given is None or not given.table or not spec.source.table:
        raise DemoFailed(
            f"{spec.name}: the demo fills a label table only from `labels.source.table` and `source.table`"
        )
    names = list(
        dict.fromkeys(
            [*(given.keys or spec.keys), given.time_column or spec.source.time_column, given.column or spec.target.name]
        )
    )
    source = sa.Table(spec.source.table, sa.MetaData(), autoload_with=engine)
    missing = [n for n in names if n not in source.c]
    if missing:
        raise DemoFailed(f"source table {spec.source.table} has no column(s) {missing} to copy into {given.table}")
    labels = sa.Table(given.table, sa.MetaData(), *(sa.Column(n, source.c[n].type) for n in names))
    return labels, source


def prepare_labels(spec: ModelSpec, engine: Any) -> str:
    """Create the spec's label table empty (dropping an older one): no label has arrived yet."""
    labels, _ = _label_table(spec, engine)
    labels.drop(engine, checkfirst=True)
    labels.create(engine)
    return str(labels.name)


def labels_arrive(spec: ModelSpec, engine: Any, until: datetime) -> int:
    """The labels of the source rows before ``until`` arrive: the label table holds exactly those afterwards.
    Returns how many label rows it holds."""
    import sqlalchemy as sa

    from airloop.adapters.source import _bounds_for  # the bound in the form the column stores (naive UTC or not)
    from airloop.core.intervals import Interval

    labels, source = _label_table(spec, engine)
    time = source.c[spec.labels.source.time_column or spec.source.time_column]  # type: ignore[union-attr]
    _, end = _bounds_for(time.type, Interval.of(until - timedelta(days=1), until))
    columns = [source.c[c.name] for c in labels.c]
    with engine.begin() as conn:
        conn.execute(labels.delete())
        conn.execute(labels.insert().from_select([c.name for c in labels.c], sa.select(*columns).where(time < end)))
        return int(conn.execute(sa.select(sa.func.count()).select_from(labels)).scalar_one())


#: When each stage of this demo began: (number, its line, time.monotonic()).
_stage_starts: list[tuple[int, str, float]] = []


def _stage(number: int, text: str) -> None:
    _stage_starts.append((number, text, time.monotonic()))
    print(f"[{number}/{STAGES}] {text}", flush=True)


def stage_times(starts: list[tuple[int, str, float]], end: float) -> list[str]:
    """One line per stage: its wall time (until the next stage began, the last until ``end``) and its line cut
    short, then the total; what ``make demo`` prints at its end so a slow stage shows where the seconds went."""
    if not starts:
        return []
    lines = []
    for (number, text, begun), following in zip(starts, [*starts[1:], (0, "", end)], strict=True):
        short = text if len(text) <= 60 else text[:59] + "…"
        lines.append(f"[{number}] {following[2] - begun:6.1f} s  {short}")
    return [*lines, f"    {end - starts[0][2]:6.1f} s  in all"]


_last_bar: list[str] = [""]


def _bar(done: int, total: int, detail: str, width: int = 30) -> None:
    """A progress bar redrawn in place on a terminal; one line per change when the output is a file or pipe."""
    filled = int(width * done / total) if total else width
    line = f"      [{'#' * filled}{'.' * (width - filled)}] {done}/{total} intervals {detail}"
    if sys.stdout.isatty():
        print("\r" + line, end="\n" if done >= total else "", flush=True)
    elif line != _last_bar[0]:
        print(line, flush=True)
    _last_bar[0] = line


class Api:
    """A minimal client of Airflow's REST API v2 for the demo (token from the generated admin password)."""

    def __init__(self, base_url: str, token: str) -> None:
        self.client = httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30)

    def get(self, path: str, **params: Any) -> httpx.Response:
        return self.client.get(f"/api/v2{path}", params=params)

    def patch(self, path: str, body: dict[str, Any]) -> httpx.Response:
        return self.client.patch(f"/api/v2{path}", json=body)

    def post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        return self.client.post(f"/api/v2{path}", json=body)


def _wait_for_dag(api: Api, dag_id: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if api.get(f"/dags/{dag_id}").status_code == 200:
            return
        errors = api.get("/importErrors").json().get("import_errors", [])
        if errors:
            text = "\n".join(f"{e['filename']}: {e['stack_trace'].strip().splitlines()[-1]}" for e in errors)
            raise DemoFailed(f"DAG files failed to import:\n{text}")
        time.sleep(1)
    raise DemoFailed(f"{dag_id} did not appear within {timeout:.0f} s; see {paths().run / 'dag-processor.log'}")


def _runs(api: Api, dag_id: str) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    while True:
        page = api.get(f"/dags/{dag_id}/dagRuns", limit=100, offset=len(runs), order_by="logical_date").json()
        runs += page["dag_runs"]
        if len(runs) >= page["total_entries"] or not page["dag_runs"]:
            return runs


def _replay_ingest(
    api: Api, spec: ModelSpec, expected: int, timeout: float = 3600, stage: str = "ingest"
) -> list[dict[str, Any]]:
    """Unpause the stage's DAG (ingest, or labels) and wait until its catch-up ran every interval."""
    dag_id = spec.dag_id(stage)
    response = api.patch(f"/dags/{dag_id}", {"is_paused": False})
    response.raise_for_status()
    deadline = time.monotonic() + timeout
    while True:
        runs = _runs(api, dag_id)
        done = [r for r in runs if r["state"] in _TERMINAL]
        failed = sum(r["state"] == "failed" for r in done)
        verb = "published" if stage == "ingest" else "recorded"
        _bar(len(done), expected, f"({len(done) - failed} {verb}, {failed} failed)")
        if len(done) >= expected:
            return runs
        if time.monotonic() > deadline:
            raise DemoFailed(f"ingestion did not finish within {timeout:.0f} s ({len(done)}/{expected} intervals)")
        time.sleep(1)


def _trigger_and_follow(
    api: Api, dag_id: str, conf: dict[str, Any], timeout: float = 900, quiet: bool = False
) -> dict[str, Any]:
    """Trigger a run the way a service would (REST API, with conf), print task states as they end, wait."""
    _wait_for_dag(api, dag_id)
    api.patch(f"/dags/{dag_id}", {"is_paused": False}).raise_for_status()
    response = api.post(f"/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf})
    response.raise_for_status()
    return _follow(api, dag_id, response.json()["dag_run_id"], timeout, quiet)


def _follow(api: Api, dag_id: str, run_id: str, timeout: float = 900, quiet: bool = False) -> dict[str, Any]:
    """Wait for a run to end, printing its task states as they end (unless ``quiet``); fail on a failed run."""
    deadline = time.monotonic() + timeout
    shown: set[str] = set()
    while time.monotonic() < deadline:
        tis = api.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances").json()["task_instances"]
        for ti in sorted(tis, key=lambda t: t["start_date"] or ""):
            if ti["task_id"] == "outcome" and ti["state"] == "skipped":
                continue  # runs only when something failed
            key = f"{ti['task_id']}[{ti['map_index']}]" if ti.get("map_index", -1) >= 0 else ti["task_id"]
            if ti["state"] in ("success", "failed", "skipped", "upstream_failed") and key not in shown:
                shown.add(key)
                if not quiet:
                    print(f"      {key:<10} {ti['state']}", flush=True)
        run = api.get(f"/dags/{dag_id}/dagRuns/{run_id}").json()
        if run["state"] in _TERMINAL:
            if run["state"] == "failed":
                raise DemoFailed(
                    f"{dag_id} run {run_id} failed; read its task logs in the Airflow UI, or "
                    f"{paths().airflow_home / 'logs'}"
                )
            return run
        time.sleep(FOLLOW_POLL_S)
    raise DemoFailed(f"{dag_id} run {run_id} did not finish within {timeout:.0f} s")


def _window_line(spec: ModelSpec, as_of: datetime) -> str:
    """One judged window, read back from ``drift_metrics``: drift, performance, and the request if any."""
    from airloop.adapters import warehouse
    from airloop.adapters.db import engine_for

    engine = engine_for(WAREHOUSE_CONN_ID)
    rows = [r for r in warehouse.drift_history(engine, spec.name, limit=20) if r["window_end"] == as_of]
    if not rows:
        return f"{as_of:%Y-%m-%d}: not judged (see the {spec.dag_id('monitor')} run's log)"
    row = rows[0]
    drifted = ", ".join(row["drifted_columns"]) or "none"
    perf = performance_text(row)
    request = warehouse.retrain_request_for(engine, spec.name, as_of)
    if request:
        outcome = f"RETRAINING REQUESTED: {request['reason']}"
    else:  # the decision's reason is in the window's verdict, beside its report
        verdict = Path(row["report_path"]).parent / "verdict.json"
        why = json.loads(verdict.read_text())["decision"]["reason"] if verdict.is_file() else "see the task log"
        outcome = f"no request: {why}"
    return (
        f"{as_of:%Y-%m-%d} v{row['champion_version']}: {'drift' if row['drifted'] else 'no drift'} "
        f"(features: {drifted}), {perf} -> {outcome}"
    )


def performance_text(row: dict[str, Any]) -> str:
    """``roc_auc 0.791 (+3.2% worse than at training)``: a judged window's performance, in its task's metric."""
    from airloop.core.numbers import num

    perf = row.get("performance")
    if perf and perf.get("value") is not None:
        change = perf.get("degradation")
        if change is None:
            return f"{perf['metric']} {num(perf['value'])} (not judged: {perf.get('unjudged') or 'no reference'})"
        way = "worse" if change > 0 else "better"
        return f"{perf['metric']} {num(perf['value'])} ({abs(change):.1%} {way} than at training)"
    if row.get("mae") is not None:  # a row written before the monitor judged by task
        degradation = row.get("degradation")
        versus = "" if degradation is None else f" ({degradation:+.0%} vs training)"
        return f"MAE {num(row['mae'])}{versus}"
    return "no labels yet"


def _closing_loop(
    api: Api,
    spec: ModelSpec,
    windows: tuple[datetime, ...],
    judged: list[datetime] | None = None,
    arrive: Callable[[datetime], None] | None = None,
) -> datetime | None:
    """Judge the planned windows in data time; follow the training each request starts; stop after a window
    that asked for nothing once a retraining has run. The last request's window end (each window judged is
    appended to ``judged``)."""
    from airloop.adapters import warehouse
    from airloop.adapters.db import engine_for

    monitor, train = spec.dag_id("monitor"), spec.dag_id("train")
    retrained: datetime | None = None
    for as_of in windows:
        if arrive is not None:
            arrive(as_of)  # the labels that arrived by the window's end, before the monitor (and training) read them
        known = {r["dag_run_id"] for r in _runs(api, train)}
        _trigger_and_follow(api, monitor, {"as_of": f"{as_of:%Y-%m-%d}"}, quiet=True)
        if judged is not None:
            judged.append(as_of)
        print(f"      {_window_line(spec, as_of)}", flush=True)
        if warehouse.retrain_request_for(engine_for(WAREHOUSE_CONN_ID), spec.name, as_of) is None:
            if retrained:
                break
            continue
        deadline = time.monotonic() + 120
        while not (new := [r for r in _runs(api, train) if r["dag_run_id"] not in known]):
            if time.monotonic() > deadline:
                raise DemoFailed(f"the retrain request of {as_of:%Y-%m-%d} started no {train} run within 120 s")
            time.sleep(1)
        print(f"      {train} started by the request (Asset {spec.name}.retrain_requested):", flush=True)
        _follow(api, train, new[0]["dag_run_id"])
        retrained = as_of
    return retrained


def _champion_metrics(spec: ModelSpec, metrics: dict[str, float], task: str | None) -> str:
    """``rmse 52.1, mae 33.4, r2 0.871``: the spec's gate metric, then the task's main metrics, from the run."""
    from airloop.core.numbers import num
    from airloop.stages.train.record import headline_names

    kind = task or ("regression" if spec.target.task == "regression" else "binary")
    names = [n for n in headline_names(kind, spec.gate_metric) if f"holdout_{n}" in metrics]
    return ", ".join(f"{n} {num(metrics[f'holdout_{n}'])}" for n in names) or "no holdout metrics"


def model_summary(spec: ModelSpec) -> list[str]:
    """The champion (version, metrics, lineage) and the newest ledger rows."""
    import sqlalchemy as sa

    from airloop.adapters import registry
    from airloop.adapters.db import engine_for
    from airloop.stages.promote.ledger import ledger, shown

    lines: list[str] = []
    champion = registry.version_for_alias(spec.name, registry.CHAMPION)
    if champion is None:
        lines.append(f"No @champion for {spec.name} yet.")
    else:
        c = registry.client()
        mv = c.get_model_version(spec.name, champion)
        run = c.get_run(str(mv.run_id))
        m = run.data.metrics
        lines.append(
            f"@champion: {spec.name} v{champion} (MLflow run {str(mv.run_id)[:12]}): "
            f"holdout {_champion_metrics(spec, m, run.data.params.get('task'))} on {int(m.get('holdout_rows', 0))} rows"
        )
        lines.append(
            f"  trained on {run.data.tags.get('airloop.window', '?')}: {int(m['train_rows'])} rows from "
            f"{len(mv.tags.get('airloop.partitions', '').split(','))} validated partitions (dataset digest "
            f"{mv.tags.get('airloop.dataset_digest', '?')[:12]})"
        )
    from airloop.adapters.warehouse import SERVED, ensure_schema, prediction_batches

    engine = engine_for(WAREHOUSE_CONN_ID)
    ensure_schema(engine)
    b = prediction_batches.c
    with engine.connect() as conn:  # the provenance is per batch (partition): one row per interval, not per row
        counts = conn.execute(
            sa.select(b.model_version, sa.func.sum(b.rows), sa.func.count())
            .where(b.model == spec.name, b.role == SERVED)
            .group_by(b.model_version)
        ).all()
    for version, rows, partitions in counts:
        lines.append(f"Predictions: {rows} rows in {partitions} intervals, every one stamped with v{version}")
    from airloop.adapters.warehouse import drift_history, retrain_requests_of

    windows = drift_history(engine, spec.name, limit=1000)
    requests = retrain_requests_of(engine, spec.name)
    drifted = sum(w["drifted"] for w in windows)
    lines.append(f"Drift windows judged: {len(windows)} ({drifted} drifted); retrain requests: {len(requests)}")
    for request in requests:
        lines.append(
            f"  request #{request['id']} window ending {request['window_end']:%Y-%m-%d} (champion "
            f"v{request['champion_version']}): {request['reason']}"
        )
        lines.append(f"    report: {request['report_path']}")
    lines.append("Promotion ledger (newest first; decisions, and an intent only while it is open):")
    for row in shown(ledger(engine_for(WAREHOUSE_CONN_ID), spec.name))[:5]:
        lines.append(
            f"  #{row['seq']} {row['recorded_at']:%Y-%m-%d %H:%M} {row['action']} v{row['candidate_version']}: "
            f"{row['outcome']} (champion {row['from_version'] or 'none'} -> {row['champion_after'] or 'none'}), "
            f"by {row['decided_by']}"
        )
    return lines


def summary(spec: ModelSpec) -> list[str]:
    """What the demo did, read back from the lake and the warehouse."""
    from airloop.adapters.db import engine_for
    from airloop.adapters.warehouse import recent_validations
    from airloop.ops.status import model_status

    state = model_status()[spec.name]
    validations = recent_validations(engine_for(WAREHOUSE_CONN_ID), spec.name, limit=1000)
    rows = sum(v["rows"] for v in validations if v["success"])
    lines = [
        f"Model {spec.name}: {len(state['validated'])} intervals validated ({rows} rows), "
        f"{len(state['quarantined'])} quarantined, {len(state['missing'])} missing of {state['expected']}.",
    ]
    for v in sorted((v for v in validations if not v["success"]), key=lambda v: v["partition"]):
        reasons = "; ".join(
            f"{f['expectation']}({f['kwargs'].get('column', '')}): {f.get('unexpected_count')} rows"
            for f in v["failures"]
        )
        lines.append(f"  quarantined {v['partition']}: {reasons}")
        lines.append(f"    report: {v['report_path']}")
    return lines


def where_to_look(status: runtime.RuntimeStatus, credentials: dict[str, str]) -> list[str]:
    """The addresses a newcomer opens after the demo, and the logins (generated passwords, shown once here)."""
    from airloop.core.urls import UI_ROUTE

    roles = {u["name"]: u["role"] for u in status.users}
    urls = status.urls
    airflow = urls["airflow"].rstrip("/")
    return [
        f"Airflow UI    {airflow}",
        f"airloop view  {airflow}/plugin/{UI_ROUTE}   (champion, ledger, drift trend, validations, approvals)",
        f"MLflow        {urls['mlflow']}",
        "logins        " + ", ".join(f"{u} / {p} ({roles.get(u, '?')})" for u, p in sorted(credentials.items())),
        f"              (stored only in {status.credentials_file})",
    ]


def run_demo(keep_running: bool = True, model: str = MODEL) -> int:
    """The whole demo of ``model``: seed, start the runtime, replay ingestion, train, score, monitor, retrain."""
    started = time.monotonic()
    spec = get_spec(model)
    plan = plan_story(spec)
    from airloop.adapters.datasets import find_datasets, seed
    from airloop.adapters.db import describe, engine_for

    _stage(1, "Seeding the source database with the vendored real data sets (checksums verified)")
    engine = engine_for(SOURCE_CONN_ID)
    for dataset in find_datasets(paths().data_dir):
        print(f"      {seed(engine, dataset).rows} rows of {dataset.name} into {dataset.table} of {describe(engine)}")
    if plan.labels_first is not None:
        table = prepare_labels(spec, engine)
        print(f"      {table}: the label table of {spec.name}, empty (its labels arrive in data time)")

    _stage(2, "Starting Airflow (api-server, scheduler, dag-processor, triggerer) and MLflow on 127.0.0.1")
    status = runtime.up()
    credentials = runtime.read_credentials()
    user = "admin" if "admin" in credentials else sorted(credentials)[0]
    api = Api(status.urls["airflow"], runtime.get_token(user, credentials[user]))

    _stage(3, f"Waiting for the DAG files to be parsed ({spec.dag_id('ingest')})")
    _wait_for_dag(api, spec.dag_id("ingest"))
    _replay_train_and_score(api, spec, plan)
    since = _monitor_and_rescore(api, spec, status.urls["mlflow"], plan)
    arrived = _later_labels(api, spec, plan, since)

    print("\nSummary")
    for line in summary(spec) + model_summary(spec) + outcome_summary(spec, plan, arrived):
        print(f"  {line}")
    finished = time.monotonic()
    print("\nStage times (wall clock)")
    for line in stage_times(_stage_starts, finished):
        print(f"  {line}")
    print(f"\nDemo finished in {finished - started:.0f} s.")
    if keep_running:
        print("\nThe servers stay up for exploring (stop them with `make down`):")
        for line in where_to_look(status, credentials):
            print(f"  {line}")
    else:
        runtime.down()
        print("Servers stopped (--exit).")
    return 0


def _replay_train_and_score(api: Api, spec: ModelSpec, plan: StoryPlan) -> None:
    """Stages 4 to 6: replay every ingest interval, train the first champion, score every interval with it."""
    every = spec.schedule.every or spec.schedule.cron
    _stage(4, f"Replaying {plan.intervals} intervals ({every} each): extract, validate (Great Expectations), publish")
    if plan.labels_first is not None:
        # Labels lag their rows (labels.after): by the first champion's training, those of its data have arrived;
        # the labels DAG replays its timeline beside ingestion and records whatever has arrived.
        from airloop.adapters.db import engine_for

        arrived = labels_arrive(spec, engine_for(SOURCE_CONN_ID), plan.labels_first)
        print(
            f"      {arrived} labels arrived (rows before {plan.labels_first:%Y-%m-%d}); "
            f"{spec.dag_id('labels')} records them beside ingestion",
            flush=True,
        )
        _wait_for_dag(api, spec.dag_id("labels"))
        api.patch(f"/dags/{spec.dag_id('labels')}", {"is_paused": False}).raise_for_status()
    _replay_ingest(api, spec, plan.intervals)
    if plan.labels_first is not None:
        _replay_ingest(api, spec, plan.intervals, stage="labels")

    # Data time: the first champion is trained as if it were the end of its first intervals, then the monitor
    # judges each window after it, as the later data would have come in.
    end = f"{plan.first_end:%Y-%m-%d}"
    _stage(5, f"Training the first champion through the REST API on data until {end}: fit, MLflow, gate")
    reason = f"demo: first champion, on the data of the first {plan.first_intervals} intervals (until {end})"
    _trigger_and_follow(api, spec.dag_id("train"), {"reason": reason, "window_end": end})

    first, last = plan.score_start, plan.score_end
    _stage(6, f"Scoring every validated interval with the champion ({spec.dag_id('score')}, re-score {first}..{last})")
    _trigger_and_follow(api, spec.dag_id("score"), {"start": str(first), "end": str(last)})


def _monitor_and_rescore(api: Api, spec: ModelSpec, mlflow_url: str, plan: StoryPlan) -> datetime | None:
    """Stages 7 and 8: the monitor judges the windows after the champion's data (the labels due by each window's
    end arrive first); a new champion re-scores. Returns the time before which labels had arrived by then."""
    judged: list[datetime] = []
    from airloop.adapters import registry

    os.environ["MLFLOW_TRACKING_URI"] = mlflow_url
    before = registry.version_for_alias(spec.name, registry.CHAMPION)
    days = spec.monitoring.window_days
    _stage(
        7,
        f"Later: {spec.dag_id('monitor')} judges up to {len(plan.windows)} {days}-day windows after the champion's "
        "data (until the window after a retraining)",
    )
    arrived: list[datetime] = [plan.labels_first] if plan.labels_first else []

    def arrive(as_of: datetime) -> None:
        until = labels_arrived_by(spec, arrived[-1], as_of)
        _labels_arrive(api, spec, arrived[-1], until)
        arrived.append(until)

    requested = _closing_loop(api, spec, plan.windows, judged, arrive if arrived else None)
    after = registry.version_for_alias(spec.name, registry.CHAMPION)
    if after != before and requested is not None:
        start = requested  # the new champion was trained on data until the request's window end
        _stage(8, f"Re-scoring from {start:%Y-%m-%d} with the new champion v{after} ({spec.dag_id('score')})")
        _trigger_and_follow(api, spec.dag_id("score"), {"start": f"{start:%Y-%m-%d}", "end": str(plan.score_end)})
    else:
        _stage(8, f"@champion is still v{after}: nothing to re-score")
    return arrived[-1] if arrived else None


def _later_labels(api: Api, spec: ModelSpec, plan: StoryPlan, since: datetime | None) -> datetime | None:
    """Stage 9: by the end of the data, the labels of every interval that ended ``labels.after`` before it have
    arrived, long after their rows were scored and judged (:func:`_labels_arrive`, from ``since``: those that
    arrived during the monitoring). Returns the time before which every row's label has arrived (None: labels
    come with the rows)."""
    if plan.labels_first is None or plan.labels_last is None:
        _stage(9, f"Labels come with the rows of {spec.name}: the labels runs joined them as they went")
        return None
    until = plan.labels_last
    dag_id = spec.dag_id("labels")
    _stage(9, f"Later, labels arrive (rows before {until:%Y-%m-%d}); {dag_id} joins them with what was served")
    _labels_arrive(api, spec, since or plan.labels_first, until)
    return until


def _labels_arrive(api: Api, spec: ModelSpec, since: datetime, until: datetime) -> None:
    """In data time, the labels of the rows before ``until`` have arrived (the label table holds them); the labels
    runs of the intervals ending in (``since``, ``until``] run again (a few: each reads the ones before it within
    ``labels.max_lag`` too): they record the labels and join them with the predictions that were served
    (``outcomes``), before training or the monitor reads them."""
    from airloop.adapters.db import engine_for

    if until <= since:
        return
    dag_id = spec.dag_id("labels")
    arrived = labels_arrive(spec, engine_for(SOURCE_CONN_ID), until)
    reruns = labels_reruns(spec, since, until)
    by_end = {_when(r.get("data_interval_end")): r["dag_run_id"] for r in _runs(api, dag_id)}
    run_ids = []
    for interval in reruns:
        run_id = by_end.get(interval.end)
        if run_id is None:
            raise DemoFailed(f"{dag_id} has no run for the interval {interval} to run again")
        api.post(
            f"/dags/{dag_id}/clearTaskInstances",
            {"dry_run": False, "dag_run_id": run_id, "only_failed": False, "reset_dag_runs": True},
        ).raise_for_status()
        run_ids.append(run_id)
    print(
        f"      labels of the rows before {until:%Y-%m-%d} arrived ({arrived} in all); {dag_id} records "
        f"{', '.join(map(str, reruns))} again",
        flush=True,
    )
    for run_id in run_ids:
        _follow(api, dag_id, run_id, quiet=True)


def _when(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


def estimated_text(row: dict[str, Any]) -> str:
    """The monitor's estimate of the champion's performance on the window (when the monitor estimates), or why not."""
    from airloop.core.numbers import num

    if "estimated_performance" not in row:
        return "estimated: not yet"
    est = (row.get("estimated_performance") or {}).get(str(row.get("champion_version"))) or {}
    perf = est.get("performance") if isinstance(est, dict) else None
    if not perf:
        reason = str(est.get("reason") or "") if isinstance(est, dict) else ""
        reason = reason.split(" (")[0].removeprefix("not estimated").lstrip(": ")
        return "not estimated" + (f": {reason}" if reason else "")
    scores = {k: v for k, v in (perf.get("scores") or {}).items() if v is not None}
    metric = row.get("performance_metric")
    names = [metric] if metric in scores else list(scores)[:1]
    return "estimated " + (", ".join(f"{n} {num(scores[n])}" for n in names) or "no figure")


def outcome_summary(spec: ModelSpec, plan: StoryPlan, arrived: datetime | None = None) -> list[str]:
    """Per judged window: the monitor's figures at judging time next to what the window realized once its labels
    arrived (from ``outcomes``, per version that served it); then the outcomes per version."""
    import sqlalchemy as sa

    from airloop.adapters import warehouse
    from airloop.adapters.db import engine_for
    from airloop.adapters.outcome_curve import outcome_counts, realized_curve
    from airloop.adapters.warehouse import predictions
    from airloop.core.numbers import num

    engine = engine_for(WAREHOUSE_CONN_ID)
    metric = spec.monitoring.performance_metric or spec.gate_metric
    span = timedelta(days=spec.monitoring.window_days)
    windows = [(end - span, end) for end in plan.windows]
    curve = realized_curve(engine, spec.name, task=spec.target.task, metric=metric, windows=windows)
    judged = {r["window_end"]: r for r in warehouse.drift_history(engine, spec.name, limit=1000)}
    lines = [f"Windows: judged at their end (estimated), realized once their labels arrived ({metric}, from outcomes):"]
    for start, end in windows:
        row = judged.get(end)
        if row is None:
            continue
        realized = [c for c in curve if c["end"] == end]
        shown = (
            "; ".join(
                f"v{c['version']} {metric} {c['note'] if c['value'] is None else num(c['value'])} ({c['rows']} rows)"
                for c in realized
            )
            or "labels not arrived yet"
        )
        lines.append(
            f"  {start:%Y-%m-%d}..{end:%Y-%m-%d} judged with v{row['champion_version']}: {estimated_text(row)} | "
            f"realized: {shown}"
        )
    if arrived is not None:
        with engine.connect() as conn:
            waiting = conn.execute(
                sa.select(predictions.c.model_version, sa.func.count())
                .where(predictions.c.model == spec.name, predictions.c.ts >= arrived)
                .group_by(predictions.c.model_version)
            ).all()
        lines.append(
            f"  from {arrived:%Y-%m-%d} on: scored, labels not arrived yet ("
            + (", ".join(f"v{v} {n} predictions" for v, n in sorted(waiting)) or "nothing scored")
            + ")"
        )
    counts = outcome_counts(engine, spec.name)
    until = f" (labels arrived for the rows before {arrived:%Y-%m-%d})" if arrived else ""
    lines.append(
        "Outcomes (served predictions joined with their labels): "
        + (", ".join(f"v{v} {n} rows" for v, n in counts.items()) or "none yet")
        + until
    )
    return lines
