"""Batch scoring: one `<model>_score` DAG per model spec (wiring only; the logic lives in `airloop`)."""

from __future__ import annotations

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import DAG, Param, task

from airloop.orchestration import assets, build, tasks

for spec in build.model_specs():
    with DAG(
        dag_id=spec.dag_id("score"),
        description=f"Score each validated partition of {spec.name} with the pinned @champion (and a waiting "
        "@challenger, in shadow)",
        schedule=[assets.validated_asset(spec)],
        start_date=spec.schedule.start_datetime,
        catchup=False,
        max_active_runs=1,
        default_args=build.default_args(spec, "score"),
        **build.run_limits(spec, "score"),
        tags=build.tags(spec, "score"),
        doc_md=build.score_runbook(spec),
        params={
            "start": Param(None, type=["null", "string"], format="date", description="Re-score from (UTC)"),
            "end": Param(None, type=["null", "string"], format="date", description="Re-score until (excl.)"),
        },
    ):

        @task(multiple_outputs=False)
        def pin(model: str) -> dict:
            return tasks.score_pin(model)

        @task
        def select(model: str) -> list:
            return tasks.score_select(model)

        @task
        def score(model: str, partitions: list, pinned: dict) -> list:
            return tasks.score_partitions(model, partitions, pinned)

        @task(multiple_outputs=False)
        def shadow(model: str, partitions: list) -> dict:
            return tasks.score_shadow(model, partitions)

        @task.short_circuit(task_id="live_gate_due")
        def live_gate_due(shadowed: dict) -> bool:
            return tasks.shadow_gate_due(shadowed)

        selected = select(spec.name)
        scored = score(spec.name, selected, pin(spec.name))
        shadowed = shadow(spec.name, selected)
        scored >> shadowed
        live_gate_due(shadowed) >> TriggerDagRunOperator(**build.live_gate_trigger_args(spec))
