"""Ingestion: one `<model>_ingest` DAG per model spec (wiring only; the logic lives in `airloop`)."""

from __future__ import annotations

from airflow.sdk import DAG, task

from airloop import dagkit, links, tasks

for spec in dagkit.model_specs():
    validated = dagkit.validated_asset(spec)
    with DAG(
        dag_id=spec.dag_id("ingest"),
        description=f"Extract, validate and publish each interval of {spec.name}",
        schedule=dagkit.ingest_timetable(spec),
        start_date=spec.schedule.start_datetime,
        end_date=spec.schedule.end_datetime,
        catchup=spec.schedule.catchup,
        max_active_runs=spec.schedule.max_active_runs,
        default_args=dagkit.default_args(spec),
        tags=dagkit.tags(spec, "ingest"),
        doc_md=dagkit.ingest_runbook(spec),
    ):

        @task
        def extract(model: str) -> dict:
            return tasks.ingest_extract(model)

        @task
        def validate(model: str) -> dict:
            return tasks.ingest_validate(model)

        @task(outlets=[validated])
        def publish(model: str, checked: dict) -> dict:
            return tasks.ingest_publish(model, checked)

        extracted = extract(spec.name)
        checked = links.attach(validate(spec.name), links.VALIDATION)
        extracted >> checked
        publish(spec.name, checked)
