"""Ingestion: one `<model>_ingest` DAG per model spec (wiring only; the logic lives in `airloop`)."""

from __future__ import annotations

from airflow.sdk import DAG, task

from airloop.orchestration import assets, build, links, tasks

for spec in build.model_specs():
    validated = assets.validated_asset(spec)
    with DAG(
        dag_id=spec.dag_id("ingest"),
        description=f"Extract, validate and publish each interval of {spec.name}",
        schedule=build.ingest_timetable(spec),
        start_date=spec.schedule.start_datetime,
        end_date=spec.schedule.end_datetime,
        catchup=spec.schedule.catchup,
        max_active_runs=spec.schedule.max_active_runs,
        default_args=build.default_args(spec, "ingest"),
        **build.run_limits(spec, "ingest"),
        tags=build.tags(spec, "ingest"),
        doc_md=build.ingest_runbook(spec),
    ):

        @task(multiple_outputs=False)
        def extract(model: str) -> dict:
            return tasks.ingest_extract(model)

        @task(multiple_outputs=False)
        def validate(model: str) -> dict:
            return tasks.ingest_validate(model)

        @task(multiple_outputs=False, outlets=[validated])
        def publish(model: str, checked: dict) -> dict:
            return tasks.ingest_publish(model, checked)

        extracted = extract(spec.name)
        checked = links.attach(validate(spec.name), links.VALIDATION)
        extracted >> checked
        publish(spec.name, checked)
