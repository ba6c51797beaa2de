"""Training: one `<model>_train` DAG per model spec (wiring only; the logic lives in `airloop`)."""

from __future__ import annotations

from airflow.sdk import DAG, Param, task

from airloop.orchestration import build, links, tasks

for spec in build.model_specs():
    with DAG(
        dag_id=spec.dag_id("train"),
        description=f"Train {spec.name}, gate the challenger against @champion, promote and record",
        schedule=build.train_schedule(spec),
        start_date=spec.schedule.start_datetime,
        catchup=False,
        max_active_runs=1,
        default_args=build.default_args(spec, "train"),
        **build.run_limits(spec, "train"),
        tags=build.tags(spec, "train"),
        doc_md=build.train_runbook(spec),
        params={
            "reason": Param(
                None, type=["null", "string"], maxLength=500, description="Why this run (required by hand)"
            ),
            "window_start": Param(None, type=["null", "string"], format="date", description="First day (UTC)"),
            "window_end": Param(None, type=["null", "string"], format="date", description="Day after the last"),
            "overrides": Param({}, type="object", description=f"Allowed: {build.overridable_text(spec)}"),
        },
    ):

        @task(multiple_outputs=False)
        def check(model: str) -> dict:
            return tasks.train_check(model)

        @task(multiple_outputs=False, retries=1)
        def train(model: str, request: dict) -> dict:
            return tasks.train_fit(model, request)

        @task.short_circuit(task_id="gate", ignore_downstream_trigger_rules=False)
        def gate(model: str, trained: dict) -> bool:
            return tasks.gate_trained(model, trained)

        trained = links.attach(train(spec.name, check(spec.name)), links.MLFLOW_RUN)
        build.decision_tasks(spec, "train", gate(spec.name, trained))
