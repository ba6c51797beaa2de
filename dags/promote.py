"""Promotion and rollback by hand or API: one `<model>_promote` DAG per model spec (wiring only)."""

from __future__ import annotations

from airflow.sdk import DAG, Param, task

from airloop.orchestration import build, tasks

for spec in build.model_specs():
    with DAG(
        dag_id=spec.dag_id("promote"),
        description=f"Promote a version of {spec.name} or roll back, through the gate, into the ledger",
        schedule=None,
        start_date=spec.schedule.start_datetime,
        catchup=False,
        max_active_runs=1,
        default_args=build.default_args(spec, "promote"),
        **build.run_limits(spec, "promote"),
        tags=build.tags(spec, "promote"),
        doc_md=build.promote_runbook(spec),
        params={
            "action": Param("promote", enum=["promote", "rollback"], description="promote a version, or roll back"),
            "version": Param(None, type=["null", "string", "integer"], description="Registry version (promote)"),
            "reason": Param(type="string", minLength=3, maxLength=500, description="Why (recorded in the ledger)"),
            "override": Param(False, type="boolean", description="Skip the gate's verdict (recorded)"),
        },
    ):

        @task(multiple_outputs=False)
        def check(model: str) -> dict:
            return tasks.promote_check(model)

        @task.short_circuit(task_id="gate", ignore_downstream_trigger_rules=False)
        def gate(model: str, request: dict) -> bool:
            return tasks.gate_requested(model, request)

        build.decision_tasks(spec, "promote", gate(spec.name, check(spec.name)))
