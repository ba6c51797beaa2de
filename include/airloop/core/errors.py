"""The two kinds of failure every task tells apart, and the few errors shared across layers.

- :class:`ExpectedFailure`: the input is wrong (bad data, bad params, a refused request, a broken suite). A retry
  would fail the same way, so the task fails at once; the message names what, where and the fix.
- :class:`ServiceUnavailable`: a service the task needs (MLflow, a database, the object store) did not answer. Airflow
  retries the task with backoff; the message names the service (credentials masked) and what to check.

The task guard (:func:`airloop.orchestration.tasks.guard`) checks these two bases and nothing else. Pure: no
imports beyond the standard library, safe at DAG parse time.
"""

from __future__ import annotations


class ExpectedFailure(Exception):
    """Bad input or a refusal: fail the task without retries; the message is what on-call reads."""


class ServiceUnavailable(RuntimeError):
    """MLflow, a database or the object store could not be reached: retry the task with backoff.

    The message says which service and where (credentials masked), what the task was doing, and what to check.
    """


class NoChampion(LookupError):
    """No version holds the ``champion`` alias yet: scoring and monitoring skip (not a failure)."""
