"""The demo's story is planned from the model's spec: its schedule, training window and monitoring window."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from airloop.core.spec import ModelSpec, get_spec
from airloop.ops import cli
from airloop.ops.demo import (
    MAX_WINDOWS,
    DemoFailed,
    labels_arrived_by,
    labels_reruns,
    performance_text,
    plan_story,
)

MODELS = Path(__file__).resolve().parents[2] / "include" / "models"
NOW = datetime(2030, 1, 1, tzinfo=UTC)


def _day(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_the_bikes_story_is_the_one_the_demo_always_told():
    """2011 (twelve four-week intervals, to 2011-12-03) trains the first champion; 2012 is judged window by window."""
    spec = get_spec("bikes", MODELS)
    plan = plan_story(spec, until=NOW)
    assert (plan.intervals, plan.first_intervals, plan.first_end) == (26, 12, _day("2011-12-03"))
    assert plan.windows == tuple(_day("2011-12-31") + i * timedelta(days=28) for i in range(MAX_WINDOWS))
    assert (plan.score_start, plan.score_end) == (date(2011, 1, 1), date(2012, 12, 2))
    # Labels arrive four weeks after their interval (labels.after): those of the first champion's data before it
    # is trained; by the end of the data (the last interval ends 2012-12-29) those of the intervals that ended by
    # 2012-12-01: every judged window's, after it was judged.
    assert spec.label_latency == timedelta(days=28)
    assert (plan.labels_first, plan.labels_last) == (_day("2011-12-03"), _day("2012-12-01"))


def test_the_birds_story_trains_on_three_years_and_judges_quarter_windows_ending_on_months():
    spec = get_spec("birds", MODELS)
    plan = plan_story(spec, until=NOW)
    assert (plan.intervals, plan.first_intervals, plan.first_end) == (106, 35, _day("1992-12-01"))
    assert plan.windows == tuple(
        _day(d) for d in ("1993-04-01", "1993-07-01", "1993-10-01", "1994-01-01", "1994-05-01", "1994-08-01")
    )
    gaps = [(b - a).days for a, b in zip((plan.first_end, *plan.windows), plan.windows, strict=False)]
    assert all(spec.monitoring.window_days <= gap < spec.monitoring.window_days + 31 for gap in gaps), gaps
    assert (plan.score_start, plan.score_end) == (date(1990, 1, 1), date(1998, 10, 2))
    assert plan.labels_first is None and plan.labels_last is None  # its labels come with its rows
    # the first champion's training part (before its holdout) spans 23 months: more than min_rows on this data
    holdout_start = plan.first_end - timedelta(days=spec.training.holdout_days)
    assert holdout_start > _day("1991-11-01")


def _spec(schedule: dict, window_days: int, monitor_days: int) -> ModelSpec:
    return ModelSpec.model_validate(
        {
            "name": "planned",
            "description": "a model made up by a test",
            "owner": "tests",
            "source": {"table": "events", "time_column": "ts"},
            "schedule": schedule,
            "features": [{"name": "x", "kind": "numeric"}],
            "target": {"name": "y"},
            "training": {"window_days": window_days, "holdout_days": 1, "min_rows": 1},
            "monitoring": {"window_days": monitor_days},
        }
    )


def test_a_short_schedule_still_leaves_data_after_the_first_champion_and_stops_at_its_end():
    spec = _spec({"every": "7d", "start": "2020-01-01", "end": "2020-02-26"}, window_days=365, monitor_days=14)
    plan = plan_story(spec, until=NOW)
    assert plan.intervals == 9 and plan.first_intervals == 8  # the window is longer than the data: all but one
    assert plan.windows == ()  # a 14-day window does not fit in the last 7 days: no window is judged
    spec = _spec({"every": "7d", "start": "2020-01-01", "end": "2020-04-01"}, window_days=30, monitor_days=14)
    plan = plan_story(spec, until=NOW)
    assert (plan.first_intervals, plan.first_end) == (4, _day("2020-01-29"))
    assert plan.windows[0] == _day("2020-02-12") and plan.windows[-1] <= _day("2020-04-08")
    assert len(plan.windows) == 5  # 02-12, 02-26, 03-11, 03-25, 04-08: every two weeks to the end


def test_a_training_window_shorter_than_an_interval_still_trains_on_one():
    plan = plan_story(_spec({"every": "30d", "start": "2020-01-01"}, window_days=7, monitor_days=30), until=NOW)
    assert (plan.first_intervals, plan.first_end) == (1, _day("2020-01-31"))


def test_a_schedule_of_one_interval_cannot_tell_a_story():
    spec = _spec({"every": "30d", "start": "2020-01-01", "end": "2020-01-01"}, window_days=30, monitor_days=30)
    with pytest.raises(DemoFailed, match="planned's schedule holds 1 interval"):
        plan_story(spec, until=NOW)


@pytest.mark.parametrize(
    ("row", "text"),
    [
        (
            {"performance": {"metric": "roc_auc", "value": 0.75, "degradation": 0.0625}},
            "roc_auc 0.75 (6.2% worse than at training)",
        ),
        (
            {"performance": {"metric": "mae", "value": 40.0, "degradation": -0.1}},
            "mae 40 (10.0% better than at training)",
        ),
        (
            {"performance": {"metric": "roc_auc", "value": None, "degradation": None}},
            "no labels yet",
        ),
        (
            {"performance": {"metric": "log_loss", "value": 0.4, "degradation": None, "unjudged": "NaN"}},
            "log_loss 0.4 (not judged: NaN)",
        ),
        ({"performance": None, "mae": 52.0, "degradation": 0.25}, "MAE 52 (+25% vs training)"),
        ({"performance": None, "mae": None}, "no labels yet"),
    ],
)
def test_a_windows_performance_is_shown_in_its_tasks_metric(row, text):
    assert performance_text(row) == text


def test_the_demo_takes_a_model_and_keeps_its_default():
    parser = cli.build_parser()
    assert parser.parse_args(["demo"]).model is None  # _cmd_demo then tells the default story (bikes)
    args = parser.parse_args(["demo", "--model", "birds", "--exit"])
    assert (args.model, args.exit) == ("birds", True)


def test_an_unknown_demo_model_is_named_with_the_known_ones(capsys):
    assert cli.main(["demo", "--model", "nosuch"]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "No model spec" in err and "nosuch.yaml" in err and "bikes" in err and "birds" in err


def test_stage_times_give_each_stage_until_the_next_and_the_total():
    from airloop.ops.demo import stage_times

    starts = [(1, "Seeding", 100.0), (2, "Starting " + "x" * 80, 103.5), (3, "Waiting", 110.0)]
    lines = stage_times(starts, end=112.25)
    assert lines[0] == "[1]    3.5 s  Seeding"
    assert lines[1].startswith("[2]    6.5 s  Starting xxx") and lines[1].endswith("…") and len(lines[1]) < 80
    assert lines[2] == "[3]    2.2 s  Waiting"
    assert lines[3] == "      12.2 s  in all"
    assert stage_times([], end=1.0) == []


def _labelled(after: str | None, max_lag: str | None = None) -> ModelSpec:
    spec = _spec({"every": "7d", "start": "2020-01-01", "end": "2020-06-01"}, window_days=28, monitor_days=14)
    labels = {"source": {"table": "late_labels"}, "after": after, "max_lag": max_lag}
    return ModelSpec.model_validate({**spec.model_dump(exclude_none=True), "labels": labels})


def test_labels_arrive_after_their_latency_from_the_first_champions_data_on():
    spec = _labelled("14d")
    plan = plan_story(spec, until=NOW)
    assert plan.labels_first == plan.first_end == _day("2020-01-22")
    # the last interval ends 2020-06-03; labels due 14 days after their interval: intervals ending by 05-20 are in
    assert plan.labels_last == _day("2020-05-20")
    assert labels_arrived_by(spec, plan.first_end, _day("2020-02-01"), NOW) == plan.first_end  # never before
    assert labels_arrived_by(_labelled(None), plan.first_end, _day("2020-03-04"), NOW) == _day("2020-03-04")


def test_the_labels_runs_run_again_are_few_and_cover_every_interval_whose_labels_came_late():
    from airloop.stages.labels.steps import revisits

    for spec in (_labelled("7d"), _labelled("7d", max_lag="1d"), _labelled("7d", max_lag="20d")):
        after, until = _day("2020-01-29"), _day("2020-04-22")
        runs = labels_reruns(spec, after, until)
        covered = {i for run in runs for i in (run, *revisits(spec, run))}
        wanted = {i for i in covered | set(runs) if after < i.end <= until}
        assert {i.end for i in wanted} == {after + timedelta(days=7 * k) for k in range(1, 13)}
        assert runs[0].end == until and runs == sorted(runs, reverse=True)
        assert len(runs) < 12 or spec.label_max_lag < timedelta(days=7)  # each run reads the ones before it too


@pytest.mark.parametrize(
    ("row", "text"),
    [
        ({"champion_version": "1"}, "estimated: not yet"),  # a row of a monitor that does not estimate
        (
            {
                "champion_version": "2",
                "estimated_performance": {
                    "2": {"reason": "not estimated: a regressor's performance is not estimated without labels (DLE)"}
                },
            },
            "not estimated: a regressor's performance is not estimated without labels",
        ),
        (
            {
                "champion_version": "3",
                "performance_metric": "roc_auc",
                "estimated_performance": {"3": {"performance": {"scores": {"accuracy": 0.8, "roc_auc": 0.75}}}},
            },
            "estimated roc_auc 0.75",
        ),
        ({"champion_version": "4", "estimated_performance": {}}, "not estimated"),
    ],
)
def test_a_windows_estimate_is_shown_or_why_not(row, text):
    from airloop.ops.demo import estimated_text

    assert estimated_text(row) == text
