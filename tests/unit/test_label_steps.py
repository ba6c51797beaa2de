"""The labels step's pure parts: the label source's defaults, the checks, the revisions and the join."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
import yaml

from airloop.core.spec import ModelSpec
from airloop.stages.labels import steps

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
T0 = pd.Timestamp("2012-01-01T00:00:00Z")


def _spec(labels: dict | None = None, **target) -> ModelSpec:
    raw = yaml.safe_load((ROOT / "include" / "models" / "bikes.yaml").read_text())
    raw.pop("labels", None)  # bikes' own (a label table the demo fills): these tests give theirs or the default
    if labels is not None:
        raw["labels"] = labels
    raw["target"].update(target)
    return ModelSpec.model_validate(raw)


def _frame(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["id", "ts", "y"]).assign(ts=lambda f: pd.to_datetime(f["ts"], utc=True))


def _where(**given) -> steps.Binding:
    fields = {"connection": "c", "table": "t", "query": None, "time_column": "ts", "keys": ["id"], "column": "y"}
    return steps.Binding(**(fields | given), separate=True)


def test_the_label_source_defaults_to_the_sources_fields_and_the_target():
    own = steps.binding(_spec())
    assert (own.connection, own.table, own.time_column, own.keys, own.column, own.separate) == (
        "airloop_source",
        "bike_rentals",
        "ts",
        ["ts"],
        "cnt",
        False,
    )
    given = steps.binding(_spec({"after": "2d", "source": {"table": "late_counts", "column": "count"}}))
    assert (given.connection, given.table, given.time_column, given.keys, given.column, given.separate) == (
        "airloop_source",
        "late_counts",
        "ts",
        ["ts"],
        "count",
        True,
    )
    other = steps.binding(
        _spec({"source": {"connection": "labels_db", "query": "SELECT * FROM l WHERE t >= :start AND t < :end",
                          "time_column": "t", "keys": ["rid"]}})
    )  # fmt: skip
    assert (other.connection, other.table, other.time_column, other.keys, other.column) == (
        "labels_db",
        None,
        "t",
        ["rid"],
        "cnt",
    )


@pytest.mark.parametrize(
    ("value", "task", "text"),
    [
        (3, "regression", "3.0"),
        (3.25, "regression", "3.25"),
        ("7", "regression", "7.0"),
        (float("nan"), "regression", None),
        (float("inf"), "regression", None),
        ("lots", "regression", None),
        (True, "regression", None),
        (1, "classification", "1"),
        (1.0, "classification", "1"),
        (True, "classification", "True"),
        ("diverted", "classification", "diverted"),
        ("  ", "classification", None),
        ([1], "classification", None),
    ],
)
def test_label_text_is_canonical_per_task(value, task, text):
    assert steps.label_text(value, task) == text


def test_checks_count_missing_collapse_duplicates_and_refuse_conflicts_and_wrong_types():
    frame = _frame(
        [
            (1, "2012-01-01 00:00", 10),
            (2, "2012-01-01 01:00", None),  # not arrived
            (3, "2012-01-01 02:00", 5),
            (3, "2012-01-01 02:00", 5),  # exact duplicate: collapsed
            (4, "2012-01-01 03:00", 6),
            (4, "2012-01-01 03:00", 7),  # conflicting: refused
            (5, "2012-01-01 04:00", "many"),  # wrong type: refused
            (None, "2012-01-01 05:00", 8),  # no key: refused
        ]
    )
    checked = steps.check_labels(frame, _where(), "regression")
    assert checked.read == 8 and checked.not_arrived == 1 and checked.collapsed == 1
    assert checked.conflicting == ["4"] and checked.wrong_type == ["5"] and checked.unkeyed == ["row 7"]
    assert checked.refused == 3
    accepted = checked.accepted
    assert accepted["row_key"].tolist() == ["1", "3"] and accepted["label"].tolist() == ["10.0", "5.0"]
    assert accepted["ts"].tolist() == [T0, T0 + pd.Timedelta(hours=2)]


def test_a_missing_column_is_named_with_the_columns_there_are():
    frame = _frame([(1, "2012-01-01", 1)]).rename(columns={"y": "label"})
    with pytest.raises(steps.LabelSourceProblem, match=r"no column\(s\) \['y'\].*\['id', 'label', 'ts'\]"):
        steps.check_labels(frame, _where(), "regression")


def test_keys_are_the_canonical_keys_predictions_carry():
    frame = _frame([(7, "2012-01-01 00:00", "a")]).assign(id=[7.0])
    checked = steps.check_labels(frame, _where(keys=["ts", "id"]), "classification")
    assert checked.accepted["row_key"].tolist() == ['["2012-01-01T00:00:00Z",7]']


def _accepted(rows: list[tuple[str, str]]) -> pd.DataFrame:
    return pd.DataFrame({"row_key": [k for k, _ in rows], "ts": [T0] * len(rows), "label": [v for _, v in rows]})


def test_revisions_write_new_and_changed_labels_only():
    stored = {
        "a": {"row_key": "a", "label": "1.0", "revision": 1, "arrived_at": NOW - timedelta(days=1)},
        "b": {"row_key": "b", "label": "2.0", "revision": 2, "arrived_at": NOW - timedelta(days=1)},
    }
    revised = steps.revise(
        stored, _accepted([("a", "1.0"), ("b", "2.5"), ("c", "3.0")]), model="m", partition="p", now=NOW,
        dag_run_id="r",
    )  # fmt: skip
    assert revised.new == ["c"] and revised.corrected == ["b"]
    assert [(r["row_key"], r["label"], r["revision"]) for r in revised.rows] == [("b", "2.5", 3), ("c", "3.0", 1)]
    assert all(r["arrived_at"] == NOW and r["dag_run_id"] == "r" and r["model"] == "m" for r in revised.rows)
    assert revised.current["a"] is stored["a"] and revised.current["b"]["revision"] == 3

    again = steps.revise(revised.current, _accepted([("a", "1.0"), ("b", "2.5")]), model="m", partition="p",
                         now=NOW, dag_run_id="r2")  # fmt: skip
    assert again.rows == [] and again.new == [] and again.corrected == []


def _served(keys: list[str], version: str = "3") -> pd.DataFrame:
    return pd.DataFrame(
        {
            "row_key": keys,
            "ts": [T0] * len(keys),
            "model_version": [version] * len(keys),
            "prediction": [float(i) for i in range(len(keys))],
            "predicted_class": [None] * len(keys),
            "probability": [None] * len(keys),
            "probabilities": [None] * len(keys),
        }
    )


def test_the_join_inserts_updates_on_corrections_and_then_writes_nothing():
    current = {k: {"label": f"{i}.5", "revision": 1, "arrived_at": NOW} for i, k in enumerate(["a", "b", "z"])}
    served = _served(["a", "b", "c"])
    first = steps.join(served, current, {}, model="m", partition="p", now=NOW)
    assert [(r["row_key"], r["prediction"], r["label"], r["model_version"]) for r in first.inserts] == [
        ("a", 0.0, "0.5", "3"),
        ("b", 1.0, "1.5", "3"),
    ]
    assert first.updates == [] and first.by_version == {"3": 2}
    assert first.unpredicted == ["z"] and first.unlabelled == ["c"]
    assert first.inserts[0]["ts"] == T0.to_pydatetime() and first.inserts[0]["predicted_class"] is None

    stored = {r["row_key"]: r for r in first.inserts}
    assert steps.join(served, current, stored, model="m", partition="p", now=NOW).inserts == []
    assert steps.join(served, current, stored, model="m", partition="p", now=NOW).updates == []

    corrected = {**current, "b": {"label": "9.0", "revision": 2, "arrived_at": NOW + timedelta(hours=1)}}
    later = steps.join(served, corrected, stored, model="m", partition="p", now=NOW + timedelta(hours=1))
    (update,) = later.updates
    assert (update["row_key"], update["label"], update["label_revision"], update["prediction"]) == ("b", "9.0", 2, 1.0)
    assert update["model_version"] == "3" and later.inserts == []


def test_labels_lag_only_when_missing_past_max_lag():
    spec = _spec({"after": "2d", "max_lag": "1d"})
    end = datetime(2012, 1, 29, tzinfo=UTC)
    assert steps.due_at(spec, end) == end + timedelta(days=2)
    assert steps.lagging(spec, end, end + timedelta(days=3), missing=5) is None  # exactly max_lag past due
    assert steps.lagging(spec, end, end + timedelta(days=4), missing=5) == timedelta(days=2)
    assert steps.lagging(spec, end, end + timedelta(days=4), missing=0) is None


def test_the_labels_stage_limits_include_the_wait_for_labels():
    spec = _spec({"after": "2d"})
    limits = spec.stage_timeouts("labels")
    assert limits.run == timedelta(days=2, hours=2) and limits.task == timedelta(minutes=30)
    assert timedelta(days=2) < limits.deadline < limits.run
    assert _spec().stage_timeouts("labels").run == timedelta(hours=2)
    with pytest.raises(ValueError, match=r"timeouts.labels.run \(1d\) must be longer than labels.after \(2d\)"):
        raw = yaml.safe_load((ROOT / "include" / "models" / "bikes.yaml").read_text())
        ModelSpec.model_validate({**raw, "labels": {"after": "2d"}, "timeouts": {"labels": {"run": "1d",
                                  "deadline": "12h"}}})  # fmt: skip


def test_a_run_reads_again_the_intervals_within_max_lag_and_one_interval_before_it():
    from airloop.core.intervals import Interval

    spec = _spec({"after": "2d", "max_lag": "30d"})  # bikes: 28-day intervals from 2011-01-01
    day = datetime(2011, 1, 1, tzinfo=UTC)
    third = Interval(day + timedelta(days=56), day + timedelta(days=84))
    assert steps.revisits(spec, third) == [
        Interval(day, day + timedelta(days=28)),  # ended 56 days before: within 30d + 28d
        Interval(day + timedelta(days=28), day + timedelta(days=56)),
    ]
    assert steps.revisits(_spec({"max_lag": "1d"}), third) == [Interval(day + timedelta(days=28), third.start)]
    first = Interval(day, day + timedelta(days=28))
    assert steps.revisits(spec, first) == []
    # In data time: the earlier interval's labels are late by the distance between the two intervals' ends.
    assert steps.data_lag(spec, Interval(day, day + timedelta(days=28)), third, missing=3) == timedelta(days=56)
    assert steps.data_lag(spec, Interval(day + timedelta(days=28), third.start), third, missing=3) is None


def test_summary_lines_count_every_key_but_name_only_the_first():
    keys = [f"k{i:02d}" for i in range(25)]
    assert steps.named(keys[: steps.SAMPLE], 25) == f"25 (first: {', '.join(keys[:10])}, ...)"
    assert steps.named(["a", "b"]) == "2 (first: a, b)"
    assert steps.named([]) == "0"
