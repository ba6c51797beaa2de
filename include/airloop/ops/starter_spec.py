"""The starter spec ``airloop model new`` writes: YAML with a comment on every choice, for people to edit.

Rendered as text (not dumped) so that each section says where its fields are documented and why each generated
value is what it is. Scalars are written in YAML's JSON-compatible flow style whenever they are not plain words.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import date
from typing import Any

from airloop.core.spec import DEFAULT_ESTIMATORS, DEFAULT_GATE_METRICS
from airloop.ops.profiling import MINORITY_SHARE, Choice, Column, Request

_WORD = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")
_RESERVED = {"true", "false", "null", "yes", "no", "on", "off", "y", "n", "~"}
#: Training defaults of a starter spec: a year of data, the newest eight weeks held out.
WINDOW_DAYS = 365
HOLDOUT_DAYS = 56
#: An integer feature with at most this many values may be a code: its comment says so.
CODE_VALUES = 12


def scalar(value: Any) -> str:
    """A YAML scalar: a plain word as is, anything else JSON-quoted (JSON is valid YAML)."""
    if isinstance(value, str) and _WORD.match(value) and value.lower() not in _RESERVED:
        return value
    return json.dumps(value)


def flow(values: list[Any]) -> str:
    return "[" + ", ".join(scalar(v) for v in values) + "]"


@dataclass(frozen=True)
class Draft:
    """Everything the starter spec is rendered from."""

    request: Request
    choice: Choice
    start: date
    end: date | None
    first: date
    last: date
    profiled_rows: int
    total_rows: int
    features: list[Column]
    left_out: list[Column]
    target: Column
    classes: dict[Any, float] | None
    rows_per_day: float


def render(draft: Draft) -> str:
    """The whole spec, section by section."""
    parts = [_header(draft), _source(draft), _schedule(draft), _features(draft), _target(draft)]
    parts += [_training(draft), _gate(draft), _monitoring(draft)]
    return "\n".join(parts)


def _header(d: Draft) -> str:
    r = d.request
    origin = f"table {r.table}" if r.table else "a query"
    sampled = (
        f"the newest {d.profiled_rows} of {d.total_rows} rows"
        if d.profiled_rows < d.total_rows
        else (f"all {d.total_rows} rows")
    )
    return (
        f"# {r.name}: a starter spec written by `airloop model new` from {origin} ({sampled} profiled,\n"
        f"# {d.first} to {d.last}). Edit it, then `airloop model check {r.name}`. Every field: docs/model-spec.md.\n"
        f"name: {r.name}\n"
        f"description: {scalar(f'Predicts {r.target} ({r.task}). Say what for, and for whom.')}\n"
        "owner: unassigned               # the team that answers for this model\n"
        f"tags: [{r.task}]\n"
        "leakage_columns: "
        + (f"{flow(list(r.leakage))}   # known only after the fact: never features\n" if r.leakage else "[]\n")
    )


def _source(d: Draft) -> str:
    r = d.request
    lines = ["# Where an interval's rows come from (docs/model-spec.md, `source`).", "source:"]
    lines.append(f"  connection: {scalar(r.connection)}   # an Airflow connection: repoint it there, not here")
    if r.table:
        lines.append(f"  table: {scalar(r.table)}")
    else:
        assert r.query is not None
        lines.append("  query: |-")
        lines += [f"    {line}" for line in r.query.strip().splitlines()]
    lines.append(f"  time_column: {scalar(r.time_column)}")
    why = "given with --keys" if r.keys else "the time column alone: one row per timestamp"
    lines.append(f"  keys: {flow(r.key_columns)}   # {why}; the suites check they are unique")
    return "\n".join(lines) + "\n"


def _schedule(d: Draft) -> str:
    c = d.choice
    lines = ["# One ingest run per interval [start, end) (docs/model-spec.md, `schedule`).", "schedule:"]
    if c.cron:
        lines.append(f"  cron: {scalar(c.cron)}   # {c.why}")
    else:
        lines.append(f"  every: {c.every}   # {c.why}")
    lines.append(f"  start: {d.start}   # the first row is on {d.first}")
    if d.end is not None:
        lines.append(f"  end: {d.end}   # the data ends on {d.last}: the last complete interval starts here;")
        lines.append("                     # remove `end` for a feed that keeps growing")
    lines += ["  catchup: true", "  max_active_runs: 4"]
    return "\n".join(lines) + "\n"


def _features(d: Draft) -> str:
    lines = [
        "# The model's inputs: numeric (passed through) or categorical (one-hot) (docs/model-spec.md, `features`)."
    ]
    if d.left_out:
        lines.append("# Left out (add them back by hand if they should be inputs):")
        lines += [f"#   - {c.name}: {c.reason}" for c in d.left_out]
    lines.append("features:")
    for c in d.features:
        notes = [f"{c.missing:.1%} missing"] if c.missing else []
        if c.kind == "numeric" and c.integer and c.distinct <= CODE_VALUES:
            notes.append(f"{c.distinct} integer values: kind categorical if they are codes, not amounts")
        note = f"   # {'; '.join(notes)}" if notes else ""
        lines.append(f"  - {{name: {scalar(c.name)}, kind: {c.kind}}}{note}")
    return "\n".join(lines) + "\n"


def _target(d: Draft) -> str:
    r, t = d.request, d.target
    lines = ["# What the model predicts (docs/model-spec.md, `target`)."]
    if t.missing:
        lines.append(f"# {t.missing:.1%} of the profiled rows have no {r.target}: rows without a label cannot train.")
    if d.classes is not None:
        shown = ", ".join(f"{k!r} {v:.1%}" for k, v in d.classes.items())
        lines.append(f"# Classes seen: {shown}.")
    else:
        lines.append(f"# Observed from {t.minimum:g} to {t.maximum:g}.")
    lines += ["target:", f"  name: {scalar(r.target)}", f"  task: {r.task}"]
    if d.classes is not None:
        rarest = min(d.classes.values())
        if len(d.classes) == 2:
            lines.append(
                f"  # positive_class: {scalar(list(d.classes)[-1])}   # default: the second of the sorted classes"
            )
        if rarest < MINORITY_SHARE:
            lines.append(
                f"  class_weight: balanced   # the rarest class is {rarest:.1%} of the rows "
                f"(under {MINORITY_SHARE:.0%})"
            )
    return "\n".join(lines) + "\n"


def _training(d: Draft) -> str:
    expected = d.rows_per_day * (WINDOW_DAYS - HOLDOUT_DAYS)
    min_rows = max(1, min(1000, math.floor(expected * 0.5)))
    return (
        "# How a version is trained (docs/model-spec.md, `training`).\n"
        "training:\n"
        '  cron: null                 # retrain on drift and on demand; e.g. "0 3 * * 1" retrains weekly too\n'
        f"  window_days: {WINDOW_DAYS}           # train on the newest year of validated data ...\n"
        f"  holdout_days: {HOLDOUT_DAYS}           # ... holding out its newest eight weeks for the gate\n"
        f"  min_rows: {min_rows}   # about {expected:.0f} rows are expected before the holdout: at most half of that\n"
        "  estimator:\n"
        f"    class: {DEFAULT_ESTIMATORS[d.request.task]}\n"
        "    params: {}\n"
        "  # overridable:             # what a run may override (param `overrides`), each within its range, e.g.\n"
        "  #   max_iter: {min: 10, max: 500}\n"
        "# Time limits per stage, each like 30m or 2h (docs/model-spec.md, `Timeouts`); the defaults hold unless set:\n"
        "# timeouts:\n"
        "#   train: {task: 2h, run: 6h, deadline: 4h}   # task: each try; run: the whole run; deadline: a late alert\n"
        "validation:\n"
        f"  suite_dir: {d.request.name}   # expectations/{d.request.name}/*.json, generated beside this file\n"
    )


def _gate(d: Draft) -> str:
    metric = DEFAULT_GATE_METRICS[d.request.task]
    example = "{roc_auc: 0.7}" if d.request.task == "classification" else "{r2: 0.5}"
    return (
        "# What a challenger must show to become @champion (docs/model-spec.md, `gate`).\n"
        "gate:\n"
        "  mode: enabled              # or dry_run: the verdict is recorded, nothing moves\n"
        f"  metric: {metric}   # the {d.request.task} default; docs/model-spec.md lists the metrics that fit\n"
        f"  thresholds: {{}}             # absolute bounds, once you know what good is, e.g. {example}\n"
        "  min_improvement: 0.01      # at least 1 % better than the champion\n"
    )


def _monitoring(d: Draft) -> str:
    per_window = d.rows_per_day * 28
    min_rows = max(1, min(100, math.floor(per_window * 0.5)))
    live = d.end is None
    cron = '"@daily"' if live else "null"
    why = "each run judges the newest four weeks" if live else "historical data: run it by hand or by API (as_of)"
    return (
        "# How drift and accuracy are watched (docs/model-spec.md, `monitoring`).\n"
        "monitoring:\n"
        f"  cron: {cron}   # {why}\n"
        "  window_days: 28\n"
        f"  min_rows: {min_rows}   # about {per_window:.0f} rows per four weeks: a window needs at least this\n"
    )
