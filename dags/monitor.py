"""Monitoring: one `<model>_monitor` DAG per model spec (wiring only; the logic lives in `airloop`)."""

from __future__ import annotations

from airflow.sdk import DAG, Param, task

from airloop.orchestration import assets, build, links, tasks

for spec in build.model_specs():
    with DAG(
        dag_id=spec.dag_id("monitor"),
        description=f"Drift and performance of {spec.name}'s champion; ask for retraining when it is due",
        schedule=build.monitor_schedule(spec),
        start_date=spec.schedule.start_datetime,
        catchup=False,
        max_active_runs=1,
        default_args=build.default_args(spec, "monitor"),
        **build.run_limits(spec, "monitor"),
        tags=build.tags(spec, "monitor"),
        doc_md=build.monitor_runbook(spec),
        params={
            "as_of": Param(None, type=["null", "string"], format="date", description="Window end (UTC); default: now"),
        },
    ):

        @task(multiple_outputs=False)
        def check(model: str) -> dict:
            return tasks.monitor_check(model)

        @task(multiple_outputs=False)
        def judge(model: str, request: dict) -> dict:
            return tasks.monitor_judge(model, request)

        @task(multiple_outputs=False, outlets=[assets.retrain_asset(spec)])
        def request(model: str, summary: dict) -> dict:
            return tasks.monitor_request_retraining(model, summary)

        @task(multiple_outputs=False)
        def freshness(model: str) -> dict:
            return tasks.monitor_freshness(model)

        judged = links.attach(judge(spec.name, check(spec.name)), links.DRIFT)
        freshness(spec.name)
        links.attach(request(spec.name, judged), links.TRAINING_RUN)
