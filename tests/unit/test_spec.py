from __future__ import annotations

import re
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


def test_timeouts_are_read_as_written_and_default_per_stage():
    from airloop.core.spec import DEFAULT_TIMEOUTS

    spec = get_spec("bikes", MODELS)
    train = spec.stage_timeouts("train")
    assert (train.task, train.run, train.deadline) == (timedelta(hours=1), timedelta(hours=3), timedelta(hours=2))
    assert spec.stage_timeouts("score").task == timedelta(minutes=30)
    assert spec.stage_timeouts("score").run == DEFAULT_TIMEOUTS["score"][1]
    ingest = spec.stage_timeouts("ingest")
    assert (ingest.task, ingest.run, ingest.deadline) == DEFAULT_TIMEOUTS["ingest"]


def test_a_required_approval_lengthens_the_default_run_and_deadline_of_train_and_promote(tmp_path, raw):
    raw.pop("timeouts")
    raw["gate"]["approval"] = {"required": True, "timeout_hours": 24}
    spec = load_spec(_write(tmp_path, "bikes", raw))
    for stage in ("train", "promote"):
        limits = spec.stage_timeouts(stage)
        assert limits.run > limits.deadline > timedelta(hours=24), stage
    assert spec.stage_timeouts("score").run < timedelta(hours=24)


def test_a_run_limit_alone_pulls_in_the_other_limits(tmp_path, raw):
    raw["timeouts"] = {"ingest": {"run": "20m"}}
    limits = load_spec(_write(tmp_path, "bikes", raw)).stage_timeouts("ingest")
    assert limits.run == timedelta(minutes=20)
    assert limits.task == timedelta(minutes=20) and limits.deadline == timedelta(minutes=15)


@pytest.mark.parametrize(
    ("timeouts", "expected"),
    [
        ({"train": {"task": "30 minutes"}}, r"field `timeouts\.train\.task`: .*written like `30m`, `2h` or `1d`"),
        ({"train": {"task": 30}}, r"field `timeouts\.train\.task`: .*got 30"),
        ({"score": {"run": "0m"}}, r"field `timeouts\.score\.run`: .*between 1m and 31d, not 0s"),
        ({"score": {"run": "90d"}}, r"field `timeouts\.score\.run`: .*between 1m and 31d, not 90d"),
        ({"trian": {"task": "1h"}}, r"field `timeouts\.trian`.*allowed here: .*train"),
        ({"train": {"tsak": "1h"}}, r"field `timeouts\.train\.tsak`.*allowed here: deadline, run, task"),
        ({"train": {"task": "4h", "run": "3h"}}, r"timeouts\.train\.task \(4h\) is longer than timeouts\.train\.run"),
        ({"train": {"run": "3h", "deadline": "3h"}}, r"timeouts\.train\.deadline \(3h\) must be shorter"),
    ],
    ids=[
        "words",
        "bare-number",
        "zero",
        "too-long",
        "unknown-stage",
        "unknown-limit",
        "task-over-run",
        "late-deadline",
    ],
)
def test_bad_timeouts_are_refused_naming_the_field(tmp_path, raw, timeouts, expected):
    raw["timeouts"] = timeouts
    path = _write(tmp_path, "bikes", raw)
    with pytest.raises(SpecError, match=expected) as err:
        load_spec(path)
    assert str(path) in str(err.value)


def test_a_run_limit_shorter_than_the_approval_wait_is_refused(tmp_path, raw):
    raw["gate"]["approval"] = {"required": True, "timeout_hours": 24}
    raw["timeouts"] = {"promote": {"run": "2h", "deadline": "1h"}}
    with pytest.raises(SpecError, match=r"timeouts\.promote\.run \(2h\) must be longer than gate\.approval"):
        load_spec(_write(tmp_path, "bikes", raw))


@pytest.mark.parametrize(
    ("overridable", "expected"),
    [
        (["max_iter", "learning_rate"], r"maps each estimator parameter .* `\{max_iter: \{min: \.\.\., max: \.\.\.\}"),
        ({"max_iter": {"min": 10}}, r"training\.overridable\.max_iter.*give both `min` and `max`"),
        ({"max_iter": {"min": 500, "max": 10}}, r"`min` \(500\) is above `max` \(10\)"),
        ({"max_iter": {"min": 1, "max": 10, "choices": [5]}}, "not both"),
        ({"max_iter": {"min": 1, "max": 50}}, r"estimator\.params\.max_iter \(100\) is outside its overridable range"),
        ({"max_iter": {"min": 1, "max": 500, "step": 1}}, r"training\.overridable\.max_iter\.step"),
    ],
    ids=["bare-list", "no-max", "inverted", "range-and-choices", "spec-value-outside", "unknown-key"],
)
def test_overridable_parameters_need_a_valid_range(tmp_path, raw, overridable, expected):
    raw["training"]["overridable"] = overridable
    with pytest.raises(SpecError, match=expected):
        load_spec(_write(tmp_path, "bikes", raw))


def test_overridable_choices_take_only_their_values(tmp_path, raw):
    raw["training"]["overridable"] = {
        "loss": {"choices": ["poisson", "squared_error"]},
        "max_iter": {"min": 1, "max": 9},
    }
    raw["training"]["estimator"]["params"]["max_iter"] = 5
    training = load_spec(_write(tmp_path, "bikes", raw)).training
    assert training.override_problems({"loss": "squared_error", "max_iter": 9}, "bikes.yaml") == []
    (problem,) = training.override_problems({"loss": "absolute_error"}, "bikes.yaml")
    assert problem == (
        "`loss` = 'absolute_error' is not one of the choices: training.overridable in bikes.yaml allows "
        "one of ['poisson', 'squared_error']"
    )


def test_labels_default_to_arriving_with_the_rows(tmp_path, raw):
    raw.pop("labels", None)
    spec = load_spec(_write(tmp_path, "bikes", raw))
    assert spec.labels.after is None and spec.labels.source is None
    assert spec.label_latency == timedelta(0)
    assert spec.label_max_lag == timedelta(days=1)


def test_labels_after_and_a_label_source_are_read(tmp_path, raw):
    raw["labels"] = {
        "after": "2d",
        "source": {"query": "SELECT instant, dteday, cnt FROM late WHERE dteday >= :start AND dteday < :end"},
        "max_lag": "5d",
    }
    spec = load_spec(_write(tmp_path, "bikes", raw))
    assert spec.label_latency == timedelta(days=2)
    assert spec.label_max_lag == timedelta(days=5)
    assert spec.labels.source is not None and spec.labels.source.column is None


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ({"after": "two days"}, "labels.after"),
        ({"source": {"table": "a", "query": "SELECT 1 WHERE :start < :end"}}, "exactly one of `table` or `query`"),
        ({"source": {"query": "SELECT * FROM late"}}, ":start and :end"),
    ],
)
def test_bad_labels_are_refused_naming_the_field(tmp_path, raw, labels, expected):
    raw["labels"] = labels
    with pytest.raises(SpecError, match=re.escape(expected)):
        load_spec(_write(tmp_path, "bikes", raw))


def test_the_old_labels_after_days_is_refused_saying_where_it_moved(tmp_path, raw):
    raw["monitoring"]["labels_after_days"] = 3
    with pytest.raises(SpecError, match=re.escape("labels: {after: 3d}")):
        load_spec(_write(tmp_path, "bikes", raw))


def test_a_spec_is_validated_once_per_process_until_its_text_changes(tmp_path, raw, monkeypatch):
    """The per-process cache of validated specs: the same text gives the same spec without validating again; a
    changed file is read again even when its size and modification time are unchanged (file times are coarse)."""
    import os

    from airloop.core.spec import ModelSpec

    validated: list[str] = []
    original = ModelSpec.model_validate

    def counting(raw: dict) -> ModelSpec:
        validated.append(raw["description"])
        return original(raw)

    monkeypatch.setattr(ModelSpec, "model_validate", staticmethod(counting))
    raw["description"] = "first text"
    path = _write(tmp_path, "bikes", raw)
    first = load_spec(path)
    assert load_spec(path) is first and load_specs(tmp_path) == [first]
    assert validated == ["first text"]

    stat = path.stat()
    raw["description"] = "other text"  # the same length: the file keeps its size
    _write(tmp_path, "bikes", raw)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size and path.stat().st_mtime_ns == stat.st_mtime_ns
    changed = load_spec(path)
    assert changed.description == "other text" and len(validated) == 2

    raw["features"].append({"name": "cnt", "kind": "numeric"})
    _write(tmp_path, "bikes", raw)
    with pytest.raises(SpecError, match="cannot be features"):
        load_spec(path)  # a spec broken since it was cached is an error, never the old spec


def test_left_out_sections_are_their_defaults(tmp_path, raw):
    """A section the file leaves out is the section written empty (``{}``), validated the same way."""
    from airloop.core.spec import Gate, Labels, Monitoring, Scoring, Timeouts, Training, Validation

    for key in ("validation", "training", "gate", "monitoring", "labels", "scoring", "timeouts"):
        raw.pop(key, None)
    spec = load_spec(_write(tmp_path, "bikes", raw))
    assert spec.validation == Validation.model_validate({}) and spec.training == Training.model_validate({})
    assert spec.gate == Gate.model_validate({}) and spec.monitoring == Monitoring.model_validate({})
    assert spec.labels == Labels() and spec.scoring == Scoring() and spec.timeouts == Timeouts()
    assert spec.timeouts.train.task is None and spec.training.estimator.params == {}


def test_reading_the_specs_builds_one_validator(tmp_path):
    """Parse-time cost (issue 16): reading the specs in a fresh process builds the spec's validator only; a section
    left out, or a stage's resolved limits, must not build a validator of their own (each costs about 0.5 ms)."""
    import json
    import subprocess
    import sys

    probe = (
        "import json, pydantic\n"
        "from airloop.core import spec\n"
        f"spec.load_specs(spec.Path({str(MODELS)!r}))\n"
        "models = [v for v in vars(spec).values() if isinstance(v, type) and issubclass(v, pydantic.BaseModel)]\n"
        "print(json.dumps(sorted(m.__name__ for m in models if m.__pydantic_complete__)))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == ["ModelSpec"]
