"""Onboarding a model as a user would: ``airloop model new`` and ``airloop model check`` on real SQLite sources loaded
from the vendored CSVs (FAA bird strikes, bike sharing), real GX, real scikit-learn. Everything is written under
tmp_path (``AIRLOOP_MODELS_DIR``, ``AIRLOOP_EXPECTATIONS_DIR``), never into the repository."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa

from airloop.adapters.csv_load import load_csv
from airloop.adapters.expectations import load_suites, validate
from airloop.core.intervals import expected_intervals
from airloop.core.spec import load_spec
from airloop.ops.cli import main
from tests.conftest import ROOT

BIRDS = ROOT / "include" / "data" / "faa_birdstrikes" / "birds.csv"
BIKES = ROOT / "include" / "data" / "bike_sharing" / "hour.csv"
#: A binary label derived in the query: did the strike have an effect on the flight (`effect` is then leakage).
BIRDS_QUERY = (
    "SELECT *, CASE WHEN effect IS NULL THEN 0 ELSE 1 END AS had_effect FROM strikes "
    "WHERE date >= :start AND date < :end"
)
BIRDS_OPTIONS: dict[str, str | list[str]] = {
    "--query": BIRDS_QUERY,
    "--time-column": "date",
    "--target": "had_effect",
    "--task": "classification",
    "--keys": ["record_id"],
    "--leakage": "effect",
    "--cron": "0 0 1 * *",
    "--connection": "onboard_source",
}


def birds_argv(changes: dict[str, str | list[str] | None] | None = None) -> list[str]:
    """``airloop model new strikes`` with the birds options, changed (None: left out)."""
    argv = ["model", "new", "strikes"]
    for option, value in {**BIRDS_OPTIONS, **(changes or {})}.items():
        if value is not None:
            argv += [option, *([value] if isinstance(value, str) else value)]
    return argv


BIRDS_NEW = birds_argv()


@pytest.fixture(scope="module")
def birds_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bird strikes loaded once (table `strikes`); each test works on its own copy."""
    path = tmp_path_factory.mktemp("birds") / "source.db"
    engine = sa.create_engine(f"sqlite:///{path}")
    load_csv(engine, BIRDS, "strikes", time_column="date", time_format="%m/%d/%Y %H:%M:%S")
    engine.dispose()
    return path


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Models and suites folders in tmp_path, and a connection `onboard_source` to tmp_path/source.db."""
    for setting, folder in (("AIRLOOP_MODELS_DIR", "models"), ("AIRLOOP_EXPECTATIONS_DIR", "expectations")):
        (tmp_path / folder).mkdir()
        monkeypatch.setenv(setting, str(tmp_path / folder))
    monkeypatch.setenv(
        "AIRFLOW_CONN_ONBOARD_SOURCE", json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "source.db")})
    )
    return tmp_path


@pytest.fixture
def birds(workspace: Path, birds_db: Path) -> Path:
    shutil.copy(birds_db, workspace / "source.db")
    return workspace


@pytest.fixture(scope="module")
def birds_model(tmp_path_factory: pytest.TempPathFactory, birds_db: Path) -> Path:
    """`model new` run once on the bird strikes; tests copy the result."""
    folder = tmp_path_factory.mktemp("birds_model")
    with pytest.MonkeyPatch.context() as mp:
        for setting, name in (("AIRLOOP_MODELS_DIR", "models"), ("AIRLOOP_EXPECTATIONS_DIR", "expectations")):
            (folder / name).mkdir()
            mp.setenv(setting, str(folder / name))
        mp.setenv("AIRFLOW_CONN_ONBOARD_SOURCE", json.dumps({"conn_type": "sqlite", "host": str(birds_db)}))
        assert main(BIRDS_NEW) == 0
    return folder


@pytest.fixture
def birds_onboarded(birds: Path, birds_model: Path) -> Path:
    for name in ("models", "expectations"):
        shutil.rmtree(birds / name)
        shutil.copytree(birds_model / name, birds / name)
    return birds


def _frame(path: Path, query: str = "SELECT * FROM strikes"):
    import pandas as pd

    engine = sa.create_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            return pd.read_sql(sa.text(query), conn)
    finally:
        engine.dispose()


def test_model_new_birds_writes_a_spec_that_loads_and_suites_that_pass(birds_onboarded: Path, capsys):
    spec = load_spec(birds_onboarded / "models" / "strikes.yaml")
    text = (birds_onboarded / "models" / "strikes.yaml").read_text()
    assert spec.target.task == "classification" and spec.target.name == "had_effect"
    assert spec.keys == ["record_id"] and spec.source.query == BIRDS_QUERY
    assert spec.schedule.cron == "0 0 1 * *" and str(spec.schedule.start) == "1990-01-01"
    assert str(spec.schedule.end) == "1999-09-01", "historical data: the schedule ends at the last complete month"
    assert spec.leakage_columns == ["effect"]
    assert spec.target.class_weight == "balanced", "10 % of strikes had an effect: under the 20 % minority share"
    assert "Classes seen: 0 89.8%, 1 10.2%." in text
    assert spec.gate_metric == "log_loss" and "docs/model-spec.md" in text
    features = {f.name: f.kind for f in spec.features}
    assert features["phase_of_flt"] == "categorical" and features["height"] == "numeric"
    for left_out in ("remarks", "record_id", "date", "effect", "had_effect", "species"):
        assert left_out not in features
    assert "#   - remarks: free text" in text and "#   - species: 241 distinct values" in text

    suites = load_suites(spec, birds_onboarded / "expectations")
    assert sorted(s.path.name for s in suites) == ["schema.json", "values.json"]
    types = {e["type"] for s in suites for e in s.raw["expectations"]}
    assert {"expect_table_row_count_to_be_between", "expect_column_values_to_be_unique"} <= types
    frame = _frame(birds_onboarded / "source.db", BIRDS_QUERY.split(" WHERE")[0])
    import pandas as pd

    frame["date"] = pd.to_datetime(frame["date"], utc=True)
    intervals = list(expected_intervals(spec, until=frame["date"].max()))
    assert len(intervals) == 117
    checked = 0
    for interval in intervals:
        batch = frame[(frame["date"] >= interval.start) & (frame["date"] < interval.end)].reset_index(drop=True)
        if batch.empty:
            continue
        outcome = validate(batch, suites, keys=["date"])
        assert outcome.success, (interval, [f.describe() for f in outcome.failures])
        checked += 1
    assert checked >= 110


def test_model_new_refuses_to_overwrite_unless_forced(birds_onboarded: Path, capsys):
    spec_path = birds_onboarded / "models" / "strikes.yaml"
    spec_path.write_text(spec_path.read_text().replace("owner: unassigned", "owner: birds-team"))
    extra = birds_onboarded / "expectations" / "strikes" / "extra.json"
    extra.write_text('{"name": "extra", "expectations": [{"type": "expect_column_to_exist", '
                     '"kwargs": {"column": "date"}}]}')  # fmt: skip
    capsys.readouterr()
    assert main(BIRDS_NEW) == 2
    err = capsys.readouterr().err
    assert "strikes.yaml and" in err and "already exist" in err and "--force" in err
    assert "owner: birds-team" in spec_path.read_text(), "a refusal must leave the edited spec alone"

    assert main([*BIRDS_NEW, "--force"]) == 0
    out = capsys.readouterr().out
    assert "owner: unassigned" in spec_path.read_text()
    assert "Kept" in out and "extra.json" in out and extra.exists()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"--target": "outcome"}, "--target 'outcome': no such column in the source; its columns are record_id,"),
        ({"--keys": ["record_id", "tail"]}, "--keys 'tail': no such column"),
        ({"--time-column": "when"}, "--time-column 'when' is not a column of the --query"),
        ({"--keys": ["date"]}, "the key ['date'] does not identify a row"),
        ({"--task": "regression", "--target": "sky"}, "--target 'sky' is not numeric (categorical)"),
        ({"--cron": None, "--every": "3x"}, "`every` must be a number and a unit"),
        ({"--query": "SELECT * FROM strikes"}, "--query must select"),
    ],
)
def test_model_new_names_a_bad_argument(birds: Path, changes: dict, message: str, capsys):
    assert main(birds_argv(changes)) == 2
    assert message in capsys.readouterr().err
    assert not list((birds / "models").iterdir()), "nothing is written when an argument is refused"


def test_model_new_refuses_a_target_with_one_class(birds: Path, capsys):
    query = "SELECT *, 'strike' AS kind FROM strikes WHERE date >= :start AND date < :end"
    assert main(birds_argv({"--query": query, "--target": "kind"})) == 2
    assert "--target 'kind' has one class ('strike')" in capsys.readouterr().err


def test_model_check_passes_on_the_generated_model_and_writes_nothing(birds_onboarded: Path, home: Path, capsys):
    before = sorted(p for p in home.rglob("*") if {"lake", "reports", "mlruns"} & set(p.parts))
    assert main(["model", "check", "strikes"]) == 0
    out = capsys.readouterr().out
    assert "OK   spec" in out and "OK   suite schema.json" in out
    assert "Dry run on interval [1999-09-01T00:00:00+00:00, 1999-10-01T00:00:00+00:00)" in out
    assert "5 rows extracted" in out and "OK   the suites pass" in out
    assert "SKIP the fit: the interval's 5 labelled rows hold one class only" in out
    assert out.rstrip().endswith("model check strikes: PASS")
    assert main(["model", "check", "strikes", "--on", "1995-06-10"]) == 0
    out = capsys.readouterr().out
    assert "[1995-06-01T00:00:00+00:00, 1995-07-01T00:00:00+00:00)" in out
    assert "OK   HistGradientBoostingClassifier fits on" in out
    after = sorted(p for p in home.rglob("*") if {"lake", "reports", "mlruns"} & set(p.parts))
    assert after == before


def test_model_check_fails_on_an_impossible_suite(birds_onboarded: Path, capsys):
    path = birds_onboarded / "expectations" / "strikes" / "values.json"
    suite = json.loads(path.read_text())
    for e in suite["expectations"]:
        if e["kwargs"].get("column") == "speed":
            e["kwargs"].update(min_value=1000, max_value=2000)
    path.write_text(json.dumps(suite))
    assert main(["model", "check", "strikes", "--on", "1995-06-10"]) == 1
    err = capsys.readouterr().err
    assert "the batch would be quarantined: strikes_values: expect_column_values_to_be_between(column='speed'" in err
    assert "model check strikes: FAIL (1 problem(s))" in err


def test_model_check_fails_when_a_column_is_dropped_from_the_source(birds_onboarded: Path, capsys):
    engine = sa.create_engine(f"sqlite:///{birds_onboarded / 'source.db'}")
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE strikes DROP COLUMN height")
    engine.dispose()
    assert main(["model", "check", "strikes", "--on", "1995-06-10"]) == 1
    err = capsys.readouterr().err
    assert "the source gives no column(s) ['height']" in err
    assert "expect_table_columns_to_match_set" in err, "the suites name the missing column too"


def test_model_check_names_a_spec_that_does_not_load(birds_onboarded: Path, capsys):
    path = birds_onboarded / "models" / "strikes.yaml"
    path.write_text(path.read_text().replace("task: classification", "task: clasification"))
    assert main(["model", "check", "strikes"]) == 1
    err = capsys.readouterr().err
    assert "the spec does not load" in err and "target.task" in err


def test_model_new_and_check_on_the_bike_rentals(workspace: Path, capsys):
    """A regression on the second data set, loaded from its CSV, with a compound key (day and hour); the schedule
    is suggested from the data."""
    engine = sa.create_engine(f"sqlite:///{workspace / 'source.db'}")
    load_csv(engine, BIKES, "rentals", time_column="dteday")
    engine.dispose()
    argv = [
        "model", "new", "rentals", "--table", "rentals", "--time-column", "dteday", "--target", "cnt",
        "--task", "regression", "--keys", "dteday", "hr", "--leakage", "casual", "--leakage", "registered",
        "--connection", "onboard_source",
    ]  # fmt: skip
    assert main(argv) == 0
    spec = load_spec(workspace / "models" / "rentals.yaml")
    text = (workspace / "models" / "rentals.yaml").read_text()
    assert spec.schedule.every == "28d" and "rows per 28-day interval" in text
    assert spec.target.task == "regression" and spec.gate_metric == "rmse"
    assert {"temp", "season"} <= set(spec.feature_names)
    assert "#   - hr: a key (--keys): it identifies a row; make it a feature if it also carries signal" in text
    assert not {"hr", "instant", "cnt", "casual", "registered", "dteday"} & set(spec.feature_names)
    assert "#   - instant: id-like: 17379 distinct integers in 17379 rows" in text
    assert "{name: season, kind: numeric}   # 4 integer values: kind categorical if they are codes" in text
    schema = json.loads((workspace / "expectations" / "rentals" / "schema.json").read_text())
    compound = [e for e in schema["expectations"] if e["type"] == "expect_compound_columns_to_be_unique"]
    assert [e["kwargs"]["column_list"] for e in compound] == [["dteday", "hr"]]
    assert main(["model", "check", "rentals"]) == 0
    out = capsys.readouterr().out
    assert "HistGradientBoostingRegressor fits on" in out and "model check rentals: PASS" in out


def test_model_check_skips_the_fit_when_the_interval_holds_one_class(birds_onboarded: Path, capsys):
    engine = sa.create_engine(f"sqlite:///{birds_onboarded / 'source.db'}")
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE strikes SET effect = NULL WHERE date >= '1995-06-01' AND date < '1995-07-01'")
    engine.dispose()
    assert main(["model", "check", "strikes", "--on", "1995-06-10"]) == 0
    out = capsys.readouterr().out
    assert "SKIP the fit: the interval's" in out and "one class only" in out
