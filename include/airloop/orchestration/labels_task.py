"""The labels DAG's one task: wait until an interval's labels are due, without a worker slot, then collect them.

An interval's labels are due ``labels.after`` (:attr:`ModelSpec.label_latency`) after it ends. A run started
before then defers to the triggerer (a :class:`DateTimeTrigger` at the due moment) and resumes to collect; a run
whose labels are already due (a catch-up, a backfill, labels that come with the rows) collects at once. One task
instance per interval: a separate waiting task would cost a whole task instance (scheduling, a worker process,
parsing the DAG file) even when it has nothing to wait for, as in every interval of a backfill.

Imported by ``dags/labels.py`` at parse time: light imports only (the trigger and the task body load on run).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import BaseOperator

from airloop.core.spec import ModelSpec, format_duration

log = logging.getLogger(__name__)


class CollectLabelsWhenDue(BaseOperator):
    """Record one interval's labels (:func:`airloop.orchestration.tasks.labels_collect`) once they are due.

    :param model: the model spec's name.
    :param label_latency: how long after the interval ends its labels are due (``spec.label_latency``).
    :param wait_timeout: how long the deferred wait may last before the task fails (the trigger's timeout): the
        longest wait, ``labels.after``, plus a try's time (``timeouts.labels.task``), as :func:`for_spec` sets.

    ``execution_timeout`` bounds each stretch the task runs in a worker (the check before the wait, the collect
    after it): Airflow 3's task runner times the process, not the time deferred, which ``wait_timeout`` bounds.
    """

    template_fields = ()
    ui_color = "#e8f4ea"

    def __init__(self, *, model: str, label_latency: timedelta, wait_timeout: timedelta, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if label_latency < timedelta(0):
            raise ValueError(f"{self.task_id}: label_latency must not be negative, got {label_latency}")
        if wait_timeout < label_latency:
            raise ValueError(
                f"{self.task_id}: wait_timeout ({format_duration(wait_timeout)}) must cover the longest wait, "
                f"label_latency ({format_duration(label_latency)}); pass label_latency plus a try's time"
            )
        self.model = model
        self.label_latency = label_latency
        self.wait_timeout = wait_timeout

    @classmethod
    def for_spec(cls, spec: ModelSpec, *, task_id: str = "collect", **kwargs: Any) -> CollectLabelsWhenDue:
        """The task for ``spec``'s labels DAG: its wait and time limits from the spec (``timeouts.labels``)."""
        limits, wait = spec.stage_timeouts("labels"), spec.label_latency
        return cls(
            task_id=task_id,
            model=spec.name,
            label_latency=wait,
            wait_timeout=wait + limits.task,
            execution_timeout=limits.task,
            doc_md=(
                f"Waits until the interval's labels are due (its end + `labels.after`, "
                f"{format_duration(wait)}; deferred: no worker slot held), then records them and joins them with "
                "the predictions served. See the DAG's runbook."
            ),
            **kwargs,
        )

    def due_at(self, context: Any) -> datetime:
        """When the run's interval's labels are due: its end plus ``labels.after``."""
        end: datetime = context["data_interval_end"]
        return end + self.label_latency

    def execute(self, context: Any) -> dict[str, Any]:
        from airflow.sdk import timezone

        due = self.due_at(context)
        where = self._where(context)
        if timezone.utcnow() < due:
            from airflow.providers.standard.triggers.temporal import DateTimeTrigger

            log.info(
                "labels of %s due at %s; waiting (deferred, no worker slot held; times out after %s)",
                where,
                due.isoformat(),
                format_duration(self.wait_timeout),
            )
            self.defer(
                trigger=DateTimeTrigger(moment=due),
                method_name=self.execute_due.__name__,
                timeout=self.wait_timeout,
            )
        log.info("labels of %s due at %s (already due): collecting", where, due.isoformat())
        return self._collect()

    def execute_due(self, context: Any, event: Any = None) -> dict[str, Any]:
        """Resumed by the trigger at the due moment: collect."""
        log.info("labels of %s are due now (the wait is over): collecting", self._where(context))
        return self._collect()

    @staticmethod
    def _where(context: Any) -> str:
        return f"[{context['data_interval_start'].isoformat()}, {context['data_interval_end'].isoformat()})"

    def _collect(self) -> dict[str, Any]:
        from airloop.orchestration import tasks

        return tasks.labels_collect(self.model)
