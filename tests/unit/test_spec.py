from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from airloop.core.spec import SpecError, get_spec, load_spec, load_specs, spec_digest

MODELS = Path(__file__).resolve().parents[2] / "include" / "models"


def _write(tmp_path: Path, name: str, data: dict | str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


@pytest.fixture
def raw() -> dict:
    return yaml.safe_load((MODELS / "bikes.yaml").read_text())


def test_bikes_spec_loads_with_its_declared_values():
    spec = get_spec("bikes", MODELS)
    assert spec.schedule.interval == timedelta(days=28)
    assert spec.target.name == "cnt"
    assert "casual" not in spec.feature_names and "registered" not in spec.feature_names
    assert {"casual", "registered"} <= spec.known_columns
    assert spec.dag_id("ingest") == "bikes_ingest"


def test_unknown_field_names_file_field_and_fix(tmp_path, raw):
    raw["schedule"]["evrey"] = "1d"
    path = _write(tmp_path, "bikes", raw)
    with pytest.raises(SpecError) as err:
        load_spec(path)
    message = str(err.value)
    assert str(path) in message
    assert "schedule.evrey" in message
    assert "allowed here:" in message and "every" in message


def test_missing_field_says_add_it(tmp_path, raw):
    del raw["target"]
    with pytest.raises(SpecError, match=r"field `target`.*Fix: add `target`"):
        load_spec(_write(tmp_path, "bikes", raw))


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda r: r["schedule"].update(every="weekly"), "`every` must be a number and a unit"),
        (lambda r: r["schedule"].update(cron="0 0 * * *"), "give `every` or `cron`, not both"),
        (lambda r: r["schedule"].update(end="2010-01-01"), "is before `start`"),
        (lambda r: r["source"].update(query="select 1"), "exactly one of `table` or `query`"),
        (lambda r: (r["source"].pop("table"), r["source"].update(query="select * from t")), ":start and :end"),
        (lambda r: r["features"].append({"name": "cnt", "kind": "numeric"}), "cannot be features"),
        (lambda r: r["features"].append({"name": "hr", "kind": "numeric"}), "features listed twice"),
        (lambda r: r["features"][0].update(kind="text"), "features.0.kind"),
        (lambda r: r.update(name="Bikes!"), "lower-case"),
        (lambda r: r["monitoring"].update(exclude=["mnth", "rain"]), r"not features: \['rain'\]"),
        (lambda r: r["monitoring"].update(exclude=[f["name"] for f in r["features"]]), "leaves no feature"),
        (lambda r: r["monitoring"].update(reference="last_year"), "monitoring.reference"),
        (lambda r: r["features"].append({"name": "_prediction", "kind": "numeric"}), "reserved for the monitor"),
        (lambda r: r["monitoring"].update(hysteresis={"n": 4, "m": 3}), r"cannot exceed `m`"),
    ],
)
def test_invalid_values_are_named(tmp_path, raw, change, expected):
    change(raw)
    with pytest.raises(SpecError, match=expected):
        load_spec(_write(tmp_path, "bikes", raw))


def test_name_must_match_file(tmp_path, raw):
    with pytest.raises(SpecError, match=r"rename the file to bikes\.yaml"):
        load_spec(_write(tmp_path, "other", raw))


def test_yaml_syntax_error_is_reported(tmp_path):
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(_write(tmp_path, "bikes", "name: [unclosed"))


def test_load_specs_reports_every_bad_file(tmp_path, raw):
    _write(tmp_path, "bikes", raw)
    _write(tmp_path, "a", {"name": "a"})
    _write(tmp_path, "b", "- a list")
    with pytest.raises(SpecError) as err:
        load_specs(tmp_path)
    assert "a.yaml" in str(err.value) and "b.yaml" in str(err.value)


def test_second_model_is_one_more_file(tmp_path, raw):
    _write(tmp_path, "bikes", raw)
    _write(tmp_path, "bikes_daily", {**raw, "name": "bikes_daily", "schedule": {**raw["schedule"], "every": "1d"}})
    assert [s.name for s in load_specs(tmp_path)] == ["bikes", "bikes_daily"]


def test_unknown_model_lists_known_ones():
    with pytest.raises(SpecError, match="Known models: bikes"):
        get_spec("nope", MODELS)


def test_digest_is_stable_and_sensitive(tmp_path, raw):
    a = load_spec(_write(tmp_path, "bikes", raw))
    assert spec_digest(a) == spec_digest(load_spec(MODELS / "bikes.yaml"))
    raw["owner"] = "someone-else"
    assert spec_digest(load_spec(_write(tmp_path, "bikes", raw))) != spec_digest(a)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"gate": {"metric": "rmse"}}, "gate.metric `rmse` does not fit a classification model"),
        ({"gate": {"thresholds": {"r2": 0.5}}}, "gate.thresholds `r2` does not fit a classification model"),
        ({"monitoring": {"performance_metric": "mae"}}, "`mae` does not fit a classification model"),
    ],
)
def test_a_classifier_with_a_regression_metric_is_refused_naming_it_and_those_that_fit(tmp_path, change, named):
    """The message names the field, the metric and the metrics that fit, without repeating the whole spec."""
    raw = yaml.safe_load((Path(__file__).resolve().parents[2] / "include" / "models" / "birds.yaml").read_text())
    for section, values in change.items():
        raw[section].update(values)
    path = tmp_path / "birds.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    text = str(caught.value)
    assert named in text and "roc_auc" in text and "log_loss" in text and str(path) in text
    assert "record_id" not in text and len(text) < 1000, text  # not the spec repeated back
