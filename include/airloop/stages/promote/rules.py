"""The promotion gate: may a challenger replace the champion? A pure decision over two evaluations.

The gate is the one place where "is this model good enough" is decided, so it is a plain function of the
spec's :class:`~airloop.core.spec.Gate` and two :class:`Evaluation` s (no MLflow, no Airflow, no I/O): every rule
is unit-tested on numbers, and the same verdict is what the DAG logs, what a person approves and what the
ledger keeps. Both models are scored on the same holdout rows, so their numbers are directly comparable.

The gate never raises on odd numbers. A NaN metric, a champion that cannot be scored or a champion metric of
zero become failed :class:`Check` s whose detail says what happened, because a gate that crashes is a gate
that someone switches off. Failing closed is the point: a refused model costs a retrain, a wrongly promoted
one costs the predictions made with it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from airloop.core import metrics as registry
from airloop.core.contracts import Evaluation
from airloop.core.numbers import as_float, num, nums, pct
from airloop.core.spec import DEFAULT_GATE_METRICS, Gate
from airloop.stages.train.record import HEADLINE_METRICS  # the gate requires these finite and shows them

#: Slices with fewer holdout rows than this carry too little evidence to refuse a model on.
MIN_SLICE_ROWS = 30
#: Shown in place of a number there is not (no champion, a slice one side lacks).
_NONE = "—"
#: Relative comparisons within this of their limit count as on it (0.1 + 0.2 is not 0.3 in floats).
_REL_EPS = 1e-9
_OVERRIDE = "a person can promote with an explicit override through the promote DAG"


def lower_is_better(name: str) -> bool:
    """The registry's direction of a metric (a name it does not know counts as lower-is-better, like a loss)."""
    metric = registry.find(name)
    return True if metric is None else metric.lower_is_better


def judged_metrics(gate: Gate | None, metric: str, task: str) -> list[str]:
    """The metrics the gate judges and shows: its metric, the task's headline metrics, then its thresholds'."""
    thresholds = list(gate.thresholds) if gate is not None else []
    return list(dict.fromkeys([metric, *HEADLINE_METRICS.get(task, ()), *thresholds]))


def default_metric(gate: Gate, task: str) -> str:
    """The gate's metric: the spec's, or the default of the task (rmse for a regression, log_loss otherwise)."""
    return gate.metric or DEFAULT_GATE_METRICS["regression" if task == "regression" else "classification"]


@dataclass(frozen=True)
class Check:
    """One rule of the gate and how the challenger fared, in one sentence with the numbers."""

    name: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class Verdict:
    """The gate's decision with all of its evidence. ``promote`` is what the DAG acts on."""

    passed: bool
    promote: bool
    mode: str
    metric: str
    challenger: Evaluation
    champion: Evaluation | None
    checks: list[Check]
    gate: Gate | None = field(default=None, compare=False)
    #: The live comparison on labelled shadow intervals (``LiveComparison.to_dict``), when there is one.
    live: dict[str, Any] | None = field(default=None, compare=False)

    @property
    def failed(self) -> list[Check]:
        """The checks that failed, in the order they ran."""
        return [c for c in self.checks if not c.passed]

    def check(self, name: str) -> Check | None:
        """The check of that name (e.g. ``"improvement"``, ``"slice:band=night"``), or None."""
        return next((c for c in self.checks if c.name == name), None)

    @property
    def reasons(self) -> list[str]:
        """Why it was refused (the failed checks' details); a dry run also says that nothing moves."""
        reasons = [c.detail for c in self.failed]
        if self.mode == "dry_run":
            if self.passed:
                reasons.append("dry run: would promote")
            reasons.append("dry run: nothing moves")
        return reasons

    def summary(self) -> str:
        """One line for logs and notifications, starting with PROMOTE, REFUSE or DRY RUN."""
        challenger = self.challenger.version or "the challenger"
        if self.passed:
            body = f"{challenger} {self._comparison()}"
            return f"PROMOTE {body}" if self.promote else f"DRY RUN, would promote {body}; nothing moves"
        failed = [c.detail for c in self.failed]
        shown = "; ".join(failed[:2]) + (f" (and {len(failed) - 2} more)" if len(failed) > 2 else "")
        if self.mode == "dry_run":
            return f"DRY RUN, would refuse {challenger}: {shown}; nothing moves"
        return f"REFUSE {challenger}: {shown}"

    def _comparison(self) -> str:
        value = self.challenger.metric(self.metric)
        if self.champion is None:
            return f"as the first champion: {self.metric} {num(value)}"
        before = self.champion.metric(self.metric)
        now, then = nums(value, before)
        change = _relative_better(value, before, lower_is_better(self.metric))
        shown = f" ({_change(change)})" if change is not None else ""
        return f"over {self.champion.version or 'the champion'}: {self.metric} {now} vs {then}{shown}"

    def markdown(self) -> str:
        """A comparison table (overall metrics, then the gate metric per slice) and the failed checks."""
        champion = self.champion
        lines = [
            f"**{self.summary()}**",
            "",
            f"Challenger: {self.challenger.version or 'unregistered'}; champion: "
            f"{(champion.version or 'unregistered') if champion else 'none yet'}; gate metric: {self.metric}; "
            f"mode: {self.mode}.",
            "",
            "| metric | champion | challenger | change | limit |",
            "|---|---:|---:|---|---|",
        ]
        for m in judged_metrics(self.gate, self.metric, self.challenger.task):
            lines.append(self._metric_row(m))
        keys = sorted(set(self.challenger.slices) | (set(champion.slices) if champion else set()))
        for key in keys:
            lines.append(self._slice_row(key))
        failed = self.failed
        lines.append("")
        if failed:
            lines.append("Failed checks:")
            lines.append("")
            lines.extend(f"- {_cell(c.detail, table=False)}" for c in failed)
        else:
            lines.append(f"All {len(self.checks)} checks passed.")
        if self.live is not None:
            lines.extend(["", *live_markdown(self.live)])
        if self.mode == "dry_run":
            lines.extend(["", "Dry run: the verdict is recorded, nothing moves."])
        return "\n".join(lines) + "\n"

    def _metric_row(self, m: str) -> str:
        value = self.challenger.metric(m)
        before = self.champion.metric(m) if self.champion is not None else math.nan
        now, then = nums(value, before)
        lower = lower_is_better(m)
        change = _relative_better(value, before, lower) if self.champion is not None else None
        limits: list[str] = []
        threshold = self.gate.thresholds.get(m) if self.gate is not None else None
        if threshold is not None:
            limits.append(f"{'≤' if lower else '≥'} {num(threshold)}")
        if m == self.metric and self.champion is not None and self.gate is not None:
            limits.append(f"≥ {pct(self.gate.min_improvement)} better")
        failed = any(not c.passed for c in self.checks if c.name == f"threshold:{m}") or (
            m == self.metric and any(not c.passed for c in self.checks if c.name == "improvement")
        )
        limit = ", ".join(limits) or _NONE
        return _row(m, then if self.champion else _NONE, now, _change(change), limit + (" ✗" if failed else ""))

    def _slice_row(self, key: str) -> str:
        ours = self.challenger.slices.get(key)
        theirs = self.champion.slices.get(key) if self.champion is not None else None
        source = ours if ours is not None else theirs or {}
        rows = as_float(source.get("rows"))
        label = f"{self.metric} @ {key}" + (f" ({rows:.0f} rows)" if math.isfinite(rows) else "")
        value = as_float(ours.get(self.metric)) if ours is not None else math.nan
        before = as_float(theirs.get(self.metric)) if theirs is not None else math.nan
        now, then = nums(value, before)
        tolerance = f"≤ {pct(self.gate.slice_tolerance)} worse" if self.gate is not None else _NONE
        check = self.check(f"slice:{key}")
        if check is None:
            limit = "new slice, not compared"
        elif ours is None:
            limit = "missing from the challenger ✗"
        elif not check.passed:
            limit = f"{tolerance} ✗"
        elif "not compared" in check.detail:
            limit = "not compared"
        else:
            limit = tolerance
        change = _relative_better(value, before, lower_is_better(self.metric))
        return _row(
            label, then if theirs is not None else _NONE, now if ours is not None else _NONE, _change(change), limit
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe evidence for the ledger: the decision, every check, both evaluations and the rules applied."""
        return {
            "passed": self.passed,
            "promote": self.promote,
            "mode": self.mode,
            "metric": self.metric,
            "summary": self.summary(),
            "reasons": self.reasons,
            "checks": [asdict(c) for c in self.checks],
            "challenger": self.challenger.to_dict(),
            "champion": None if self.champion is None else self.champion.to_dict(),
            "gate": None if self.gate is None else self.gate.model_dump(mode="json"),
            "live": self.live,
        }


def evaluate_gate(
    gate: Gate, challenger: Evaluation, champion: Evaluation | None, *, metric: str | None = None
) -> Verdict:
    """Run every rule of ``gate`` on the challenger (and against the champion, if there is one).

    ``metric`` is the spec's gate metric (``spec.gate_metric``); without it, the gate's or the task's default.
    Every comparison follows the metric's direction in :mod:`airloop.core.metrics`.
    """
    m = metric or default_metric(gate, challenger.task)
    checks = _fit_check(m, challenger)
    checks.append(_finite_check(gate, m, challenger))
    checks += _threshold_checks(gate, m, challenger)
    checks += _sanity_checks(gate, challenger)
    checks.append(_signature_check(challenger, champion))
    checks.append(_improvement_check(gate, m, challenger, champion))
    if champion is not None:
        checks += _slice_checks(gate, m, challenger, champion)
    passed = all(c.passed for c in checks)
    return Verdict(
        passed=passed,
        promote=passed and gate.mode == "enabled",
        mode=gate.mode,
        metric=m,
        challenger=challenger,
        champion=champion,
        checks=checks,
        gate=gate,
    )


def with_live(verdict: Verdict, live: dict[str, Any], *, judged: bool) -> Verdict:
    """The verdict with the live comparison shown and, when ``judged`` (``gate.shadow.require_better``), its check
    added: the challenger must beat the served predictions by ``min_improvement`` on the gate metric."""
    if not judged or verdict.gate is None:
        return replace(verdict, live=live)
    checks = [*verdict.checks, live_check(verdict.gate, verdict.metric, live)]
    passed = all(c.passed for c in checks)
    return replace(verdict, checks=checks, passed=passed, promote=passed and verdict.mode == "enabled", live=live)


def live_check(gate: Gate, m: str, live: dict[str, Any]) -> Check:
    """The challenger's gate metric on labelled shadow intervals against the served predictions' on the same rows."""
    need = gate.min_improvement
    value, before = as_float(live.get("challenger")), as_float(live.get("served"))
    where = f"on {len(live.get('intervals') or {})} labelled shadow interval(s), {int(live.get('rows') or 0):,} rows"
    served = ", ".join(f"v{v}" for v in live.get("served_versions") or []) or "served"
    if not (math.isfinite(value) and math.isfinite(before)):
        return Check(
            "live",
            False,
            f"live {m} {where} cannot be compared (challenger {num(value)}, served {num(before)}); {_OVERRIDE}",
        )
    change = _relative_better(value, before, lower_is_better(m))
    now, then = nums(value, before)
    head = f"live {m} {now} vs served ({served}) {then} {where}"
    if change is None:
        return Check("live", False, f"{head}: served {m} is 0, so a relative improvement is undefined; {_OVERRIDE}")
    if change <= 0:
        return Check("live", False, f"{head}: {_change(change)}, no improvement (at least {pct(need)} needed)")
    if change < need and not math.isclose(change, need, rel_tol=_REL_EPS, abs_tol=1e-12):
        return Check("live", False, f"{head}: improvement {pct(change)} is below the {pct(need)} needed")
    return Check("live", True, f"{head}: improvement {pct(change)} (at least {pct(need)} needed)")


def live_markdown(live: dict[str, Any]) -> list[str]:
    """The live comparison for people (the approval request, the version's description): a table, or the count."""
    intervals = live.get("intervals") or {}
    if live.get("status") != "compared":
        return [f"Live (shadow) comparison: {live.get('summary') or 'not yet'}."]
    m = str(live.get("metric"))
    value, before = as_float(live.get("challenger")), as_float(live.get("served"))
    now, then = nums(value, before)
    served = ", ".join(f"v{v}" for v in live.get("served_versions") or []) or _NONE
    change = _relative_better(value, before, lower_is_better(m))
    spans = f"{min(intervals)} to {max(intervals)}" if intervals else _NONE
    lines = [
        f"Live (shadow) comparison on {len(intervals)} labelled interval(s) ({spans}), "
        f"{int(live.get('rows') or 0):,} labelled rows scored by both:",
        "",
        "| metric | served | challenger | change |",
        "|---|---:|---:|---|",
        _row(f"{m} (live; served by {served})", then, now, _change(change)),
    ]
    lines.extend(f"- note: {_cell(n, table=False)}" for n in live.get("notes") or [])
    return lines


def signature_differences(champion: dict[str, str], challenger: dict[str, str]) -> list[str]:
    """How the challenger's input columns differ from the champion's, one human line per difference."""
    lines: list[str] = []
    for column, kind in champion.items():
        if column not in challenger:
            lines.append(f"missing column `{column}`")
        elif challenger[column] != kind:
            lines.append(f"column `{column}`: {kind} -> {challenger[column]}")
    lines.extend(f"extra column `{column}`" for column in challenger if column not in champion)
    return lines


# --- the rules ------------------------------------------------------------------------------------------------


def _fit_check(metric: str, challenger: Evaluation) -> list[Check]:
    """A check only when the gate's metric does not fit the challenger's task (e.g. roc_auc on 3 classes)."""
    found = registry.find(metric)
    if found is not None and found.fits(challenger.task):
        return []
    fitting = ", ".join(m.name for m in registry.metrics_for(challenger.task))
    what = "is not a metric" if found is None else f"does not fit a {challenger.task} model"
    return [Check("metric_fits", False, f"gate metric {metric} {what}; metrics that fit {challenger.task}: {fitting}")]


def _finite_check(gate: Gate, metric: str, challenger: Evaluation) -> Check:
    names = judged_metrics(gate, metric, challenger.task)
    bad = [m for m in names if not math.isfinite(challenger.metric(m))]
    if bad:
        shown = ", ".join(
            f"{m} is {num(challenger.metric(m))}" + (f" ({challenger.notes[m]})" if m in challenger.notes else "")
            for m in bad
        )
        return Check("metrics_finite", False, f"challenger metrics not finite ({shown}): the model cannot be judged")
    return Check("metrics_finite", True, f"all challenger metrics ({', '.join(names)}) are finite")


def _threshold_checks(gate: Gate, metric: str, challenger: Evaluation) -> list[Check]:
    checks = []
    order = judged_metrics(gate, metric, challenger.task)
    for m in sorted(gate.thresholds, key=order.index):
        value, limit, lower = challenger.metric(m), float(gate.thresholds[m]), lower_is_better(m)
        need = "at most" if lower else "at least"
        shown, bound = nums(value, limit)
        if not math.isfinite(value):
            detail, ok = f"{m} is {shown}, so it cannot meet the threshold ({need} {bound})", False
        elif value <= limit if lower else value >= limit:
            detail, ok = f"{m} {shown} {'<=' if lower else '>='} {bound} (threshold)", True
        else:
            detail, ok = f"{m} {shown} {'>' if lower else '<'} {bound} (threshold: {need} {bound})", False
        checks.append(Check(f"threshold:{m}", ok, detail))
    return checks


def _sanity_checks(gate: Gate, challenger: Evaluation) -> list[Check]:
    n, bad = int(challenger.predictions), int(challenger.nan_predictions)
    what = (
        "probability rows hold NaN or infinite values"
        if challenger.is_classifier
        else "predictions are NaN or infinite"
    )
    checks = [
        Check("sanity:nan", False, f"{bad:,} of {n:,} {what}")
        if bad > 0
        else Check("sanity:nan", True, f"no NaN or infinite predictions (of {n:,})")
    ]
    if challenger.is_classifier:
        return checks + _classifier_checks(challenger)
    return checks + _bound_checks(gate, challenger)


def _bound_checks(gate: Gate, challenger: Evaluation) -> list[Check]:
    """A regression's predictions within the spec's bounds (``gate.sanity``)."""
    sanity = gate.sanity
    checks = []
    for name, bound, value, ok, words in (
        ("sanity:min", sanity.min_prediction, challenger.min_prediction, lambda v, b: v >= b, ("lowest", "below")),
        ("sanity:max", sanity.max_prediction, challenger.max_prediction, lambda v, b: v <= b, ("highest", "above")),
    ):
        if bound is None:
            continue
        value = as_float(value)
        which, side = words
        if not math.isfinite(value):
            checks.append(Check(name, False, f"no finite prediction to check against the bound {num(bound)}"))
            continue
        shown, limit = nums(value, bound)
        if ok(value, bound):
            checks.append(Check(name, True, f"{which} prediction {shown} is within the bound {limit}"))
        else:
            checks.append(Check(name, False, f"{which} prediction {shown} is {side} the bound {limit}"))
    return checks


def _classifier_checks(challenger: Evaluation) -> list[Check]:
    """Valid probabilities, predicted classes among the trained ones, and not one class for every row."""
    problem = challenger.proba_problem
    low, high = nums(challenger.proba_min, challenger.proba_max)
    checks = [
        Check("sanity:probabilities", False, f"probabilities are not valid: {problem}")
        if problem
        else Check("sanity:probabilities", True, f"probabilities are finite, in [{low}, {high}], rows sum to 1")
    ]
    trained = {str(c) for c in challenger.classes}
    predicted = {k: as_float(v) for k, v in challenger.predicted_shares.items() if as_float(v) > 0}
    unseen = sorted(set(predicted) - trained)
    if unseen:
        checks.append(
            Check(
                "sanity:classes",
                False,
                f"predicts classes it was not trained on ({', '.join(unseen)}); trained classes: "
                f"{', '.join(sorted(trained)) or 'none'}",
            )
        )
    else:
        checks.append(Check("sanity:classes", True, f"predicts only trained classes ({len(trained)})"))
    only = [k for k, v in predicted.items() if v >= 1.0]
    if only and challenger.predictions > 1:
        checks.append(
            Check(
                "sanity:one_class",
                False,
                f"predicts {only[0]} for every one of the {challenger.predictions:,} holdout rows: it does not tell "
                "the classes apart (too few examples of the others in training, or a decision threshold too far "
                "from the probabilities)",
            )
        )
    else:
        checks.append(Check("sanity:one_class", True, f"predicts {len(predicted)} different classes"))
    return checks


def output_differences(champion: Evaluation, challenger: Evaluation) -> list[str]:
    """How the challenger's output differs from the champion's: its task, or its classes."""
    if champion.task != challenger.task:
        return [f"output: the champion is a {champion.task} model, the challenger a {challenger.task} one"]
    if not challenger.is_classifier or [str(c) for c in champion.classes] == [str(c) for c in challenger.classes]:
        return []
    theirs, ours = [str(c) for c in champion.classes], [str(c) for c in challenger.classes]
    parts = [f"class `{c}` missing" for c in theirs if c not in ours] + [
        f"new class `{c}`" for c in ours if c not in theirs
    ]
    detail = "; ".join(parts) or "the same classes in another order"
    return [f"output classes differ (champion {theirs}, challenger {ours}): {detail}"]


def _signature_check(challenger: Evaluation, champion: Evaluation | None) -> Check:
    """The challenger's inputs (columns and types) and outputs (task, classes) against the champion's."""
    if champion is None:
        return Check("signature", True, "no champion yet, so the input signature was not compared")
    outputs = output_differences(champion, challenger)
    if challenger.signature is None or champion.signature is None:
        if outputs:
            return Check("signature", False, f"{'; '.join(outputs)}; callers of the model would break")
        whose = "challenger's" if challenger.signature is None else "champion's"
        return Check("signature", True, f"the {whose} input signature is unknown, so it was not compared")
    inputs = signature_differences(champion.signature, challenger.signature)
    if not inputs and not outputs:
        return Check("signature", True, f"input signature matches the champion's ({len(challenger.signature)} columns)")
    shown = "; ".join(inputs[:5]) + (f" (and {len(inputs) - 5} more)" if len(inputs) > 5 else "")
    parts = ([f"input signature differs from the champion's: {shown}"] if inputs else []) + outputs
    return Check("signature", False, f"{'; '.join(parts)}; callers of the model would break")


def _improvement_check(gate: Gate, m: str, challenger: Evaluation, champion: Evaluation | None) -> Check:
    need = gate.min_improvement
    if champion is None:
        return Check(
            "improvement",
            True,
            "no champion yet, so no comparison: the first model is judged on thresholds and sanity alone",
        )
    value, before = challenger.metric(m), champion.metric(m)
    if not math.isfinite(before):
        return Check(
            "improvement",
            False,
            f"the champion could not be scored on this holdout ({m} is {num(before)}), so no improvement can be "
            f"measured; {_OVERRIDE}",
        )
    if not math.isfinite(value):
        return Check(
            "improvement",
            False,
            f"challenger {m} is {num(value)}, so no improvement over the champion's {num(before)} can be measured",
        )
    if before == 0:
        return Check(
            "improvement",
            False,
            f"champion {m} is 0, so a relative improvement is undefined (challenger {num(value)}); {_OVERRIDE}",
        )
    change = _relative_better(value, before, lower_is_better(m)) or 0.0  # defined: both finite, champion non-zero
    now, then = nums(value, before)
    head = f"{m} {now} vs champion {then}"
    if change <= 0:
        return Check("improvement", False, f"{head}: {_change(change)}, no improvement (at least {pct(need)} needed)")
    if change < need and not math.isclose(change, need, rel_tol=_REL_EPS, abs_tol=1e-12):
        return Check("improvement", False, f"{head}: improvement {pct(change)} is below the {pct(need)} needed")
    return Check("improvement", True, f"{head}: improvement {pct(change)} (at least {pct(need)} needed)")


def _slice_checks(gate: Gate, m: str, challenger: Evaluation, champion: Evaluation) -> list[Check]:
    tolerance, lower = gate.slice_tolerance, lower_is_better(m)
    checks = []
    for key in sorted(champion.slices):
        name = f"slice:{key}"
        theirs = champion.slices[key]
        ours = challenger.slices.get(key)
        if ours is None:
            checks.append(
                Check(name, False, f"slice {key}: slice missing from challenger's evaluation (the champion has it)")
            )
            continue
        counts = [r for r in (as_float(ours.get("rows")), as_float(theirs.get("rows"))) if math.isfinite(r)]
        rows = min(counts) if counts else math.nan
        if math.isfinite(rows) and rows < MIN_SLICE_ROWS:
            checks.append(
                Check(name, True, f"slice {key}: only {rows:.0f} rows (fewer than {MIN_SLICE_ROWS}), not compared")
            )
            continue
        value, before = as_float(ours.get(m)), as_float(theirs.get(m))
        if not math.isfinite(before) or before == 0:
            checks.append(Check(name, True, f"slice {key}: champion {m} is {num(before)}, not compared"))
            continue
        if not math.isfinite(value):
            checks.append(Check(name, False, f"slice {key}: challenger {m} is {num(value)} (champion {num(before)})"))
            continue
        worse = -(_relative_better(value, before, lower) or 0.0)
        now, then = nums(value, before)
        within = worse <= tolerance or math.isclose(worse, tolerance, rel_tol=_REL_EPS, abs_tol=1e-12)
        detail = f"slice {key}: {m} {now} vs champion {then}, {_change(-worse)} (tolerance {pct(tolerance)})"
        checks.append(Check(name, within, detail))
    return checks


def _relative_better(value: float, before: float, lower_is_better: bool) -> float | None:
    """How much better ``value`` is than ``before``, relative to it (negative: worse); None if undefined."""
    if not (math.isfinite(value) and math.isfinite(before)) or before == 0:
        return None
    return (before - value) / abs(before) if lower_is_better else (value - before) / abs(before)


def _change(better: float | None) -> str:
    if better is None:
        return _NONE
    if better == 0:
        return "no change"
    return f"{pct(better)} {'better' if better > 0 else 'worse'}"


def _cell(text: str, *, table: bool = True) -> str:
    flat = " ".join(str(text).split())
    return flat.replace("|", "\\|") if table else flat


def _row(*cells: str) -> str:
    return "| " + " | ".join(_cell(c) for c in cells) + " |"
