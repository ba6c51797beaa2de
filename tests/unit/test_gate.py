from __future__ import annotations

import json
import math
from typing import Any

import pytest

from airloop.core.contracts import Evaluation
from airloop.core.spec import Gate
from airloop.stages.promote.rules import Verdict, evaluate_gate, signature_differences

NAN = math.nan
SIGNATURE = {"hr": "long", "temp": "double", "hum": "double"}
NIGHT = "hour_band=night"


def _gate(**overrides: Any) -> Gate:
    """The bikes gate (include/models/bikes.yaml), with overrides."""
    values: dict[str, Any] = {
        "mode": "enabled",
        "metric": "rmse",
        "thresholds": {"rmse": 90, "r2": 0.75},
        "min_improvement": 0.01,
        "slice_tolerance": 0.10,
        "sanity": {"min_prediction": 0, "max_prediction": 2000},
    }
    return Gate(**{**values, **overrides})


def _ev(
    rmse: float = 60.0,
    mae: float = 40.0,
    r2: float = 0.85,
    *,
    night: float = 20.0,
    night_rows: int = 300,
    slices: dict[str, dict[str, float]] | None = None,
    nan: int = 0,
    low: float = 0.0,
    high: float = 900.0,
    signature: dict[str, str] | None = SIGNATURE,
    version: str = "v4",
) -> Evaluation:
    """An evaluation on 1,000 rows with one slice, ``hour_band=night``, unless ``slices`` is given."""
    if slices is None:
        slices = {NIGHT: {"rmse": night, "mae": night * 0.7, "r2": 0.6, "rows": night_rows}}
    return Evaluation(
        metrics={"rmse": rmse, "mae": mae, "r2": r2},
        slices=slices,
        predictions=1000,
        nan_predictions=nan,
        min_prediction=low,
        max_prediction=high,
        signature=signature,
        version=version,
    )


def _champion(**kwargs: Any) -> Evaluation:
    return _ev(**{"version": "v3", **kwargs})


def _case(
    case_id: str,
    gate: dict[str, Any],
    challenger: Evaluation,
    champion: Evaluation | None,
    passed: bool,
    promote: bool,
    check: str,
    check_passed: bool,
    reason: str | None = None,
) -> Any:
    return pytest.param(_gate(**gate), challenger, champion, passed, promote, check, check_passed, reason, id=case_id)


SLICE = f"slice:{NIGHT}"
DRY = {"mode": "dry_run"}
R2_NIGHT = {NIGHT: {"rmse": 20.0, "r2": 0.8, "rows": 300}}

# fmt: off
CASES = [
    # id, gate overrides, challenger, champion,
    #     passed, promote, a check, whether it passed, text in one of the reasons (optional)
    _case("no-champion-passes-on-thresholds", {}, _ev(), None,
          True, True, "improvement", True),
    _case("no-champion-over-threshold", {}, _ev(rmse=95), None,
          False, False, "threshold:rmse", False, "rmse 95 > 90"),
    _case("no-champion-under-r2-threshold", {}, _ev(r2=0.7), None,
          False, False, "threshold:r2", False, "r2 0.7 < 0.75"),
    _case("tie-refused", {}, _ev(rmse=60), _champion(rmse=60),
          False, False, "improvement", False, "no improvement"),
    _case("tie-refused-without-min-improvement", {"min_improvement": 0}, _ev(rmse=60), _champion(rmse=60),
          False, False, "improvement", False, "no improvement"),
    _case("worse-refused", {}, _ev(rmse=63), _champion(rmse=60),
          False, False, "improvement", False, "5 % worse"),
    _case("better-promoted", {}, _ev(rmse=57), _champion(rmse=60),
          True, True, "improvement", True),
    _case("exactly-min-improvement", {}, _ev(rmse=59.4), _champion(rmse=60),
          True, True, "improvement", True),
    _case("better-below-min-improvement", {}, _ev(rmse=59.7), _champion(rmse=60),
          False, False, "improvement", False, "improvement 0.5 % is below the 1 % needed"),
    _case("nan-challenger-metric", {}, _ev(mae=NAN), _champion(),
          False, False, "metrics_finite", False, "mae is NaN"),
    _case("nan-challenger-fails-threshold", {}, _ev(rmse=NAN), None,
          False, False, "threshold:rmse", False, "cannot meet the threshold"),
    _case("nan-champion-metric", {}, _ev(rmse=57), _champion(rmse=NAN),
          False, False, "improvement", False, "explicit override through the promote DAG"),
    _case("zero-champion-metric", {}, _ev(rmse=57), _champion(rmse=0.0),
          False, False, "improvement", False, "relative improvement is undefined"),
    _case("slice-regression-refused", {}, _ev(rmse=57, night=25), _champion(rmse=60),
          False, False, SLICE, False, f"slice {NIGHT}: rmse 25 vs champion 20, 25 % worse (tolerance 10 %)"),
    _case("slice-within-tolerance", {}, _ev(rmse=57, night=21), _champion(rmse=60),
          True, True, SLICE, True),
    _case("slice-exactly-at-tolerance", {}, _ev(rmse=57, night=22), _champion(rmse=60),
          True, True, SLICE, True),
    _case("small-slice-skipped", {}, _ev(rmse=57, night=40, night_rows=12), _champion(rmse=60, night_rows=12),
          True, True, SLICE, True),
    _case("nan-challenger-slice", {}, _ev(rmse=57, night=NAN), _champion(rmse=60),
          False, False, SLICE, False, "challenger rmse is NaN"),
    _case("nan-champion-slice-not-compared", {}, _ev(rmse=57, night=30), _champion(rmse=60, night=NAN),
          True, True, SLICE, True),
    _case("slice-missing-from-challenger", {}, _ev(rmse=57, slices={}), _champion(rmse=60),
          False, False, SLICE, False, "missing from challenger"),
    _case("dry-run-passes-but-stays", DRY, _ev(rmse=57), _champion(rmse=60),
          True, False, "improvement", True, "dry run: would promote"),
    _case("dry-run-refused", DRY, _ev(rmse=63), _champion(rmse=60),
          False, False, "improvement", False, "dry run: nothing moves"),
    _case("signature-missing-column", {}, _ev(rmse=57, signature={"hr": "long", "temp": "double"}), _champion(rmse=60),
          False, False, "signature", False, "missing column `hum`"),
    _case("signature-type-change", {}, _ev(rmse=57, signature={**SIGNATURE, "temp": "long"}), _champion(rmse=60),
          False, False, "signature", False, "column `temp`: double -> long"),
    _case("signature-unknown-not-compared", {}, _ev(rmse=57, signature=None), _champion(rmse=60),
          True, True, "signature", True),
    _case("nan-predictions", {}, _ev(nan=3), None,
          False, False, "sanity:nan", False, "3 of 1,000 predictions are NaN"),
    _case("negative-predictions", {}, _ev(low=-2.5), None,
          False, False, "sanity:min", False, "-2.5 is below the bound 0"),
    _case("too-large-predictions", {}, _ev(high=2500), None,
          False, False, "sanity:max", False, "2,500 is above the bound 2,000"),
    _case("no-bounds-negative-ok", {"sanity": {}}, _ev(low=-2.5), None,
          True, True, "sanity:nan", True),
    _case("r2-higher-is-better", {"metric": "r2"}, _ev(r2=0.90), _champion(r2=0.85),
          True, True, "improvement", True),
    _case("r2-lower-refused", {"metric": "r2"}, _ev(r2=0.80), _champion(r2=0.85),
          False, False, "improvement", False, "5.9 % worse"),
    _case("r2-slice-lower-refused", {"metric": "r2"}, _ev(r2=0.90), _champion(r2=0.85, slices=R2_NIGHT),
          False, False, SLICE, False, "slice hour_band=night: r2 0.6 vs champion 0.8, 25 % worse"),
]
# fmt: on


@pytest.mark.parametrize(
    ("gate", "challenger", "champion", "passed", "promote", "check", "check_passed", "reason"), CASES
)
def test_gate_rules(gate, challenger, champion, passed, promote, check, check_passed, reason):
    verdict = evaluate_gate(gate, challenger, champion)
    assert (verdict.passed, verdict.promote) == (passed, promote), verdict.reasons
    found = verdict.check(check)
    assert found is not None, [c.name for c in verdict.checks]
    assert found.passed is check_passed, found.detail
    assert verdict.passed == all(c.passed for c in verdict.checks)
    if reason is not None:
        assert any(reason in r for r in verdict.reasons), verdict.reasons
    if passed and gate.mode == "enabled":
        assert verdict.reasons == []


def test_tie_reason_names_the_improvement_rule():
    verdict = evaluate_gate(_gate(), _ev(rmse=60), _champion(rmse=60))
    assert verdict.failed == [verdict.check("improvement")]
    assert "improvement" in verdict.reasons[0]


def test_bounds_that_are_none_add_no_check():
    verdict = evaluate_gate(_gate(sanity={"max_prediction": 2000}), _ev(), None)
    names = [c.name for c in verdict.checks]
    assert "sanity:min" not in names and "sanity:max" in names and "sanity:nan" in names


def test_slices_only_in_the_challenger_are_not_checked():
    extra = {NIGHT: {"rmse": 20.0, "rows": 300}, "season=4": {"rmse": 99.0, "rows": 300}}
    verdict = evaluate_gate(_gate(), _ev(rmse=57, slices=extra), _champion(rmse=60))
    assert verdict.promote
    assert verdict.check("slice:season=4") is None


def test_dry_run_reasons_always_say_nothing_moves():
    passed = evaluate_gate(_gate(mode="dry_run"), _ev(), None)
    refused = evaluate_gate(_gate(mode="dry_run"), _ev(rmse=95), None)
    assert passed.reasons == ["dry run: would promote", "dry run: nothing moves"]
    assert refused.reasons[-1] == "dry run: nothing moves" and "dry run: would promote" not in refused.reasons


@pytest.mark.parametrize(
    ("champion", "challenger", "expected"),
    [
        pytest.param(SIGNATURE, dict(SIGNATURE), [], id="same"),
        pytest.param(SIGNATURE, {"hr": "long", "temp": "double"}, ["missing column `hum`"], id="missing"),
        pytest.param(SIGNATURE, {**SIGNATURE, "x": "long"}, ["extra column `x`"], id="extra"),
        pytest.param(
            SIGNATURE,
            {"hr": "double", "temp": "double", "y": "string"},
            ["column `hr`: long -> double", "missing column `hum`", "extra column `y`"],
            id="all-kinds",
        ),
    ],
)
def test_signature_differences(champion, challenger, expected):
    assert signature_differences(champion, challenger) == expected


def _odd_verdict() -> Verdict:
    """A verdict full of odd numbers: NaN metrics on both sides, an infinite bound, a refused slice."""
    challenger = _ev(rmse=NAN, night=25, low=NAN, high=math.inf, nan=1000)
    return evaluate_gate(_gate(), challenger, _champion(r2=NAN, rmse=60))


def test_verdict_to_dict_is_strict_json():
    verdict = _odd_verdict()
    data = json.loads(json.dumps(verdict.to_dict(), allow_nan=False))
    assert data["passed"] is False and data["promote"] is False
    assert data["mode"] == "enabled" and data["metric"] == "rmse"
    assert data["challenger"]["metrics"]["rmse"] is None
    assert data["champion"]["version"] == "v3"
    assert {c["name"] for c in data["checks"]} >= {"metrics_finite", "improvement", f"slice:{NIGHT}"}
    assert data["gate"]["thresholds"] == {"rmse": 90.0, "r2": 0.75}
    no_champion = evaluate_gate(_gate(), _ev(), None).to_dict()
    assert no_champion["champion"] is None and json.dumps(no_champion, allow_nan=False)


@pytest.mark.parametrize(
    "evaluation",
    [
        pytest.param(_ev(), id="finite"),
        pytest.param(_ev(rmse=NAN, night=NAN, low=NAN, high=NAN, signature=None), id="nan-and-unknown-signature"),
    ],
)
def test_evaluation_round_trips(evaluation):
    data = evaluation.to_dict()
    json.dumps(data, allow_nan=False)
    back = Evaluation.from_dict(json.loads(json.dumps(data)))
    assert back.to_dict() == data
    assert math.isnan(back.min_prediction) == math.isnan(evaluation.min_prediction)
    if not math.isnan(evaluation.metrics["rmse"]):
        assert back == evaluation
    else:
        assert math.isnan(back.metrics["rmse"]) and math.isnan(back.slices[NIGHT]["rmse"])


def test_to_dict_turns_numpy_numbers_into_plain_ones():
    np = pytest.importorskip("numpy")
    evaluation = _ev(slices={NIGHT: {"rmse": np.float64(20.0), "rows": np.int64(300)}})
    data = evaluation.to_dict()
    assert json.dumps(data, allow_nan=False)
    assert type(data["slices"][NIGHT]["rows"]) is int


def test_markdown_has_the_table_and_the_failing_slice():
    verdict = evaluate_gate(_gate(), _ev(rmse=57, night=25), _champion(rmse=60))
    text = verdict.markdown()
    assert "| metric | champion | challenger | change | limit |" in text
    for metric in ("| rmse |", "| mae |", "| r2 |"):
        assert metric in text
    assert f"rmse @ {NIGHT} (300 rows)" in text
    assert f"- slice {NIGHT}: rmse 25 vs champion 20, 25 % worse (tolerance 10 %)" in text


def test_markdown_of_odd_numbers_does_not_raise():
    text = _odd_verdict().markdown()
    assert "NaN" in text and "Failed checks:" in text


@pytest.mark.parametrize(
    ("gate", "rmse", "champion_rmse", "prefix"),
    [
        pytest.param({}, 57, 60, "PROMOTE v4 over v3: rmse 57 vs 60 (5 % better)", id="promote"),
        pytest.param({}, 57, None, "PROMOTE v4 as the first champion: rmse 57", id="promote-first"),
        pytest.param({}, 63, 60, "REFUSE v4: rmse 63 vs champion 60: 5 % worse", id="refuse"),
        pytest.param(DRY, 57, 60, "DRY RUN, would promote v4 over v3", id="dry-run-pass"),
        pytest.param(DRY, 63, 60, "DRY RUN, would refuse v4", id="dry-run-refuse"),
    ],
)
def test_summary_says_what_happens(gate, rmse, champion_rmse, prefix):
    champion = None if champion_rmse is None else _champion(rmse=champion_rmse)
    summary = evaluate_gate(_gate(**gate), _ev(rmse=rmse), champion).summary()
    assert summary.startswith(prefix), summary
    assert "\n" not in summary


def test_close_numbers_get_enough_digits_to_differ():
    verdict = evaluate_gate(_gate(), _ev(rmse=60.04), _champion(rmse=60.01))
    assert "rmse 60.04 vs champion 60.01" in verdict.check("improvement").detail


# --- classifiers ----------------------------------------------------------------------------------------------

BAND = "band=a"


def _clf(
    roc_auc: float = 0.85,
    log_loss: float = 0.35,
    *,
    task: str = "binary",
    classes: list[Any] | None = None,
    shares: dict[str, float] | None = None,
    problem: str | None = None,
    band: float = 0.80,
    version: str = "v4",
    notes: dict[str, str] | None = None,
) -> Evaluation:
    """A binary classifier's evaluation on 1,000 rows (classes no/yes) with one slice, ``band=a``."""
    classes = ["no", "yes"] if classes is None else classes
    metrics = {"log_loss": log_loss, "accuracy": 0.8, "f1": 0.6, "balanced_accuracy": 0.75, "f1_macro": 0.7}
    if task == "binary":
        metrics["roc_auc"] = roc_auc
    return Evaluation(
        metrics=metrics,
        slices={BAND: {"roc_auc": band, "log_loss": log_loss, "rows": 300}},
        predictions=1000,
        nan_predictions=0,
        signature=SIGNATURE,
        version=version,
        task=task,
        classes=classes,
        predicted_shares=shares if shares is not None else {str(c): 1 / len(classes) for c in classes},
        proba_min=0.01,
        proba_max=0.99,
        proba_problem=problem,
        notes=notes or {},
    )


def _clf_gate(**overrides: Any) -> Gate:
    return Gate(**{"metric": "roc_auc", "min_improvement": 0.01, "slice_tolerance": 0.10, **overrides})


BAND_CHECK = f"slice:{BAND}"
LL = {"metric": "log_loss"}


def _ccase(case_id: str, gate: dict[str, Any], *rest: Any) -> Any:
    """A classifier's case: the gate is :func:`_clf_gate` with overrides."""
    return pytest.param(_clf_gate(**gate), *rest, *([None] * (8 - len(rest) - 1)), id=case_id)


SUMS = "3 of 1000 probability rows do not sum to 1 (row 0 sums to 1.2; rows 0-based)"

# fmt: off
CLASSIFIER_CASES = [
    _ccase("clf-tie-refused", {}, _clf(0.85), _clf(0.85, version="v3"),
          False, False, "improvement", False, "no improvement"),
    _ccase("clf-roc-auc-higher-is-better", {}, _clf(0.90), _clf(0.85, version="v3"),
          True, True, "improvement", True),
    _ccase("clf-roc-auc-lower-refused", {}, _clf(0.80), _clf(0.85, version="v3"),
          False, False, "improvement", False, "5.9 % worse"),
    _ccase("clf-log-loss-lower-is-better", LL, _clf(log_loss=0.30), _clf(log_loss=0.35, version="v3"),
          True, True, "improvement", True),
    _ccase("clf-log-loss-higher-refused", LL, _clf(log_loss=0.40), _clf(log_loss=0.35, version="v3"),
          False, False, "improvement", False, "14.3 % worse"),
    _ccase("clf-slice-regression", {}, _clf(0.90, band=0.60), _clf(0.85, version="v3"),
          False, False, BAND_CHECK, False, f"slice {BAND}: roc_auc 0.6 vs champion 0.8, 25 % worse"),
    _ccase("clf-roc-auc-threshold-at-least", {"thresholds": {"roc_auc": 0.9}}, _clf(0.85), None,
          False, False, "threshold:roc_auc", False, "roc_auc 0.85 < 0.9 (threshold: at least 0.9)"),
    _ccase("clf-log-loss-threshold-at-most", {"thresholds": {"log_loss": 0.3}}, _clf(log_loss=0.35), None,
          False, False, "threshold:log_loss", False, "log_loss 0.35 > 0.3 (threshold: at most 0.3)"),
    _ccase("clf-one-class-predicted", {}, _clf(shares={"no": 1.0, "yes": 0.0}), None,
          False, False, "sanity:one_class", False, "predicts no for every one of the 1,000 holdout rows"),
    _ccase("clf-unseen-class-predicted", {}, _clf(shares={"no": 0.5, "maybe": 0.5}), None,
          False, False, "sanity:classes", False, "not trained on (maybe)"),
    _ccase("clf-probabilities-do-not-sum-to-one", {}, _clf(problem=SUMS), None,
          False, False, "sanity:probabilities", False, "do not sum to 1"),
    _ccase("clf-classes-differ-from-champion", {}, _clf(0.90), _clf(0.85, classes=["maybe", "no", "yes"], version="v3"),
          False, False, "signature", False, "class `maybe` missing"),
    _ccase("clf-roc-auc-on-multiclass", {}, _clf(task="multiclass", classes=[0, 1, 2]), None,
          False, False, "metric_fits", False, "metrics that fit multiclass: log_loss"),
    _ccase("clf-nan-metric-says-why", {}, _clf(float("nan"), notes={"roc_auc": "only one class ('no') is present"}),
          None, False, False, "metrics_finite", False, "roc_auc is NaN (only one class ('no') is present)"),
    _ccase("clf-first-champion", {}, _clf(), None,
          True, True, "sanity:probabilities", True),
]
# fmt: on


@pytest.mark.parametrize(
    ("gate", "challenger", "champion", "passed", "promote", "check", "check_passed", "reason"), CLASSIFIER_CASES
)
def test_gate_rules_for_classifiers(gate, challenger, champion, passed, promote, check, check_passed, reason):
    test_gate_rules(gate, challenger, champion, passed, promote, check, check_passed, reason)


def test_classifier_gate_metric_defaults_to_log_loss_and_markdown_names_the_task_metrics():
    verdict = evaluate_gate(Gate(), _clf(log_loss=0.30), _clf(log_loss=0.35, version="v3"))
    assert verdict.metric == "log_loss" and verdict.promote
    text = verdict.markdown()
    for row in ("| log_loss |", "| roc_auc |", "| f1 |", "| accuracy |"):
        assert row in text
    assert "| rmse |" not in text and f"log_loss @ {BAND} (300 rows)" in text
    multi = evaluate_gate(Gate(), _clf(task="multiclass", classes=[0, 1, 2]), None).markdown()
    assert "| balanced_accuracy |" in multi and "| roc_auc |" not in multi


def test_the_spec_metric_wins_over_the_default():
    verdict = evaluate_gate(Gate(), _clf(0.90, log_loss=0.40), _clf(0.85, version="v3"), metric="roc_auc")
    assert verdict.metric == "roc_auc" and verdict.promote


def test_classifier_evaluation_round_trips_and_keeps_regression_fields():
    evaluation = _clf(classes=[0, 1], shares={"0": 0.4, "1": 0.6})
    data = json.loads(json.dumps(evaluation.to_dict(), allow_nan=False))
    assert data["task"] == "binary" and data["classes"] == [0, 1] and data["predicted_shares"] == {"0": 0.4, "1": 0.6}
    assert data["min_prediction"] is None and "max_prediction" in data
    assert Evaluation.from_dict(data).to_dict() == data
    regression = _ev().to_dict()
    assert "classes" not in regression and regression["task"] == "regression"
    old = {k: v for k, v in regression.items() if k not in ("task", "notes")}  # stored before classifiers
    assert Evaluation.from_dict(old).task == "regression"
