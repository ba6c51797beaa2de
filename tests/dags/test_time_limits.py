"""Time-limit policy: every task has an ``execution_timeout``, every DAG a ``dagrun_timeout`` and a deadline that
alerts through the failure alert channel, all read from the model spec (``timeouts``); nothing can hold a run
slot forever without a word."""

from __future__ import annotations

from datetime import timedelta

import pytest

from airloop.core.spec import load_specs
from tests.dags.test_dag_integrity import DAGS

STAGES = ("ingest", "train", "promote", "score", "monitor", "labels")  # every DAG file in dags/

#: The one task whose limit is longer than its run's: a person's approval (its wait is covered by the run limit).
APPROVAL_TASKS = {"approve"}
#: The labels DAG's one task, which first waits (deferred) until an interval's labels are due: its run limit covers
#: the wait, its deferral timeout the wait plus a try.
LABELS_DUE_TASKS = {"collect"}
DEADLINE_CALLBACK = "airloop.orchestration.notifiers.deadline_missed"


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS))


@pytest.fixture(scope="module")
def specs():
    from airloop.core.settings import paths

    return {spec.name: spec for spec in load_specs(paths().models_dir)}


def test_every_dag_of_every_stage_is_held_to_the_policy(dagbag, specs):
    assert dagbag.import_errors == {}
    expected = {f"{name}_{stage}" for name in specs for stage in STAGES}
    assert expected <= set(dagbag.dag_ids)  # the policy below covers every stage of every model


def test_every_task_has_an_execution_timeout_within_its_run(dagbag):
    for dag_id, dag in dagbag.dags.items():
        for task in dag.tasks:
            where = f"{dag_id}.{task.task_id}"
            assert isinstance(task.execution_timeout, timedelta), f"{where} has no execution_timeout"
            assert task.execution_timeout > timedelta(0), where
            if task.task_id not in APPROVAL_TASKS:
                assert dag.dagrun_timeout and task.execution_timeout <= dag.dagrun_timeout, where


def test_every_dag_has_a_run_timeout_and_a_deadline_alert_before_it(dagbag):
    from airflow.sdk.definitions.callback import SyncCallback
    from airflow.sdk.definitions.deadline import DeadlineReference

    for dag_id, dag in dagbag.dags.items():
        assert isinstance(dag.dagrun_timeout, timedelta), f"{dag_id} has no dagrun_timeout"
        assert dag.deadline, f"{dag_id} has no deadline alert"
        (alert,) = dag.deadline
        assert alert.reference == DeadlineReference.DAGRUN_QUEUED_AT, dag_id
        assert timedelta(0) < alert.interval < dag.dagrun_timeout, f"{dag_id}: the deadline must come before the limit"
        assert isinstance(alert.callback, SyncCallback), dag_id
        assert alert.callback.path == DEADLINE_CALLBACK, dag_id
        assert alert.callback.kwargs["owner"] not in ("", "airflow"), dag_id


def test_limits_are_the_specs(dagbag, specs):
    for spec in specs.values():
        for stage in STAGES:
            dag = dagbag.dags[spec.dag_id(stage)]
            limits = spec.stage_timeouts(stage)
            assert dag.dagrun_timeout == limits.run, dag.dag_id
            assert dag.deadline[0].interval == limits.deadline, dag.dag_id
            for task in dag.tasks:
                if stage == "labels" and task.task_id in LABELS_DUE_TASKS:
                    # each stretch in a worker gets a try's time; the deferred wait, labels.after and a try's time
                    assert task.execution_timeout == limits.task, dag.dag_id
                    assert task.wait_timeout == limits.task + spec.label_latency, dag.dag_id
                elif task.task_id not in APPROVAL_TASKS:
                    assert task.execution_timeout == limits.task, f"{dag.dag_id}.{task.task_id}"


def test_the_deadline_survives_serialization(dagbag):
    """The scheduler works from the serialized DAG: the deadline and the limits must be in it."""
    from airflow.serialization.serialized_objects import DagSerialization

    dag = dagbag.dags["bikes_train"]
    restored = DagSerialization.from_dict(DagSerialization.to_dict(dag))
    assert restored.dagrun_timeout == dag.dagrun_timeout
    (alert,) = restored.deadline  # kept encoded until the scheduler makes the run's deadline
    assert alert["reference"] == {"reference_type": "DagRunQueuedAtDeadline"}
    assert alert["interval"]["__data__"] == dag.deadline[0].interval.total_seconds()
    assert alert["callback"]["__data__"]["path"] == DEADLINE_CALLBACK
    assert restored.get_task("train").execution_timeout == dag.get_task("train").execution_timeout


def test_an_approval_may_take_its_whole_wait(bikes_spec):
    """A deferred task's trigger times out at its execution_timeout: the approval's must cover the person's wait,
    and the run's limit must cover it too."""
    from airflow.sdk import DAG, task

    from airloop.orchestration import build as dagkit

    gate = bikes_spec.gate.model_copy(
        update={"approval": bikes_spec.gate.approval.model_copy(update={"required": True, "timeout_hours": 24})}
    )
    spec = bikes_spec.model_copy(update={"gate": gate, "timeouts": type(bikes_spec.timeouts)()})
    with DAG("approval_limits", schedule=None, **dagkit.run_limits(spec, "train")) as dag:

        @task.short_circuit(task_id="gate")
        def gated() -> bool:
            return True

        dagkit.decision_tasks(spec, "train", gated())
    approve = dag.get_task("approve")
    assert approve.execution_timeout >= timedelta(hours=24) + spec.stage_timeouts("train").task
    assert dag.dagrun_timeout > approve.execution_timeout
    assert dag.deadline[0].interval > timedelta(hours=24)


def test_the_labels_run_may_wait_until_its_labels_are_due(bikes_spec):
    """The labels DAG's one task waits (deferred) `labels.after` past the interval's end: its deferral's timeout, and
    the run's limit and deadline, cover that wait and a try of work after it; the work itself gets a try's time."""
    from airflow.sdk import DAG

    from airloop.orchestration import build as dagkit

    labels = bikes_spec.labels.model_copy(update={"after": timedelta(days=2)})
    spec = bikes_spec.model_copy(update={"labels": labels})
    with DAG("labels_limits", schedule=None, **dagkit.run_limits(spec, "labels")) as dag:
        collect = dagkit.labels_collect(spec)
    assert dag.task_ids == ["collect"] and collect.label_latency == timedelta(days=2)
    task = spec.stage_timeouts("labels").task
    assert collect.wait_timeout == timedelta(days=2) + task and collect.execution_timeout == task
    assert dag.dagrun_timeout == timedelta(days=2, hours=2) and dag.dagrun_timeout >= collect.wait_timeout
    assert timedelta(days=2) < dag.deadline[0].interval < dag.dagrun_timeout


def test_the_labels_task_refuses_a_wait_timeout_shorter_than_the_wait():
    """A deferral that timed out before the labels were due would fail every run that waits: refused when built."""
    from airloop.orchestration.labels_task import CollectLabelsWhenDue

    with pytest.raises(
        ValueError, match=r"collect: wait_timeout \(1d\) must cover the longest wait, label_latency \(2d\)"
    ):
        CollectLabelsWhenDue(
            task_id="collect", model="m", label_latency=timedelta(days=2), wait_timeout=timedelta(days=1)
        )
