"""The label's own rules, deferred until an interval's labels are due.

An interval is ingested as soon as its features are in. Its labels (the spec's target) may come later (``labels:
{after: 2d}``) or from a label source of their own (``labels.source``): until they are due, the rules of the
model's suites that are about the target column are set aside for that batch, so a missing label is not a
quarantine. Once they are due (a backfill of old data, or labels that come with the rows) every rule applies as
written.

Which rules are the label's: an expectation whose ``column`` (or ``column_A`` / ``column_B``) is the target, or a
column list (``column_list``) that holds it, is set aside whole. A column-set rule
(``expect_table_columns_to_match_set``) is about every column, so it is kept, with the target's presence made what
the batch has (left out of the set when the batch has no target column, as a feature source without labels does):
the rest of the schema is still checked. Each rule set aside or changed is named in the task log and recorded in
the batch's validation result (``deferred_label_rules``), so a steward sees what was not checked and why.

Pure steps over suites and specs, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from airloop.core.rules import rule_text
from airloop.core.spec import format_duration

if TYPE_CHECKING:
    from collections.abc import Collection

    from airloop.adapters.expectations import SuiteFile
    from airloop.core.intervals import Interval
    from airloop.core.spec import ModelSpec

#: kwargs naming one column, and lists of columns (see ``airloop.adapters.expectations``).
_COLUMN_KWARGS = ("column", "column_A", "column_B")
_COLUMN_SET = "expect_table_columns_to_match_set"


@dataclass(frozen=True)
class DeferredRule:
    """One rule of a suite that did not apply as written to a batch whose labels are not due."""

    suite: str
    type: str
    kwargs: dict[str, Any]
    action: str  # "set aside" | "target left out of the column set"
    text: str

    def describe(self) -> str:
        return f"{self.suite}: {self.text} ({self.type}): {self.action}"

    def to_dict(self) -> dict[str, Any]:
        return {"suite": self.suite, "type": self.type, "kwargs": self.kwargs, "action": self.action, "text": self.text}


def labels_pending(spec: ModelSpec, interval: Interval, now: datetime) -> str | None:
    """Why the interval's labels are not due at ``now`` (None: they are, and the label's rules apply).

    Labels from a label source of their own are never the feature batch's to check; labels that come ``after`` an
    interval are due once ``interval.end + after`` has passed.
    """
    if spec.labels.source is not None:
        return (
            f"labels come from their own source (labels.source), not with the rows: the target `{spec.target.name}` "
            "is checked by the labels step"
        )
    latency = spec.label_latency
    if latency and now < interval.end + latency:
        due = interval.end + latency
        return (
            f"labels are due {format_duration(latency)} after the interval ends (labels.after), at "
            f"{due.isoformat()}; it is now {now.isoformat()}"
        )
    return None


def is_target_rule(expectation: dict[str, Any], target: str) -> bool:
    """Whether a suite's expectation is about the target column (a column-set rule is about every column: no)."""
    kwargs = expectation.get("kwargs") or {}
    if any(kwargs.get(k) == target for k in _COLUMN_KWARGS):
        return True
    return expectation.get("type") != _COLUMN_SET and target in (kwargs.get("column_list") or [])


def defer_label_rules(
    suites: list[SuiteFile], target: str, columns: Collection[str]
) -> tuple[list[SuiteFile], list[DeferredRule]]:
    """The suites as they apply to a batch whose labels are not due, and the rules set aside or changed.

    ``columns`` are the batch's columns. A suite keeps its name and digest (it is the steward's file that was
    applied, minus the rules named in the returned list).
    """
    out: list[SuiteFile] = []
    deferred: list[DeferredRule] = []
    for suite in suites:
        kept = []
        for expectation in suite.raw["expectations"]:
            kwargs = dict(expectation.get("kwargs") or {})
            kind = str(expectation.get("type"))
            if is_target_rule(expectation, target):
                deferred.append(DeferredRule(suite.name, kind, kwargs, "set aside", rule_text(kind, kwargs)))
                continue
            column_set = kwargs.get("column_set")
            if kind == _COLUMN_SET and isinstance(column_set, list) and target in column_set and target not in columns:
                changed = {**kwargs, "column_set": [c for c in column_set if c != target]}
                expectation = {**expectation, "kwargs": changed}
                action = "target left out of the column set (the batch has no target column)"
                deferred.append(DeferredRule(suite.name, kind, kwargs, action, rule_text(kind, kwargs)))
            kept.append(expectation)
        out.append(replace(suite, raw={**suite.raw, "expectations": kept}))
    return out, deferred
