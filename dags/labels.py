"""Labels: one `<model>_labels` DAG per model spec (wiring only; the logic lives in `airloop`)."""

from __future__ import annotations

from airflow.sdk import DAG

from airloop.orchestration import build

for spec in build.model_specs():
    with DAG(
        dag_id=spec.dag_id("labels"),
        description=f"Record the labels of each interval of {spec.name} once due; join them with what was served",
        schedule=build.ingest_timetable(spec),
        start_date=spec.schedule.start_datetime,
        end_date=spec.schedule.end_datetime,
        catchup=spec.schedule.catchup,
        max_active_runs=spec.schedule.max_active_runs,
        default_args=build.default_args(spec, "labels"),
        **build.run_limits(spec, "labels"),
        tags=build.tags(spec, "labels"),
        doc_md=build.labels_runbook(spec),
    ):
        build.labels_collect(spec)
