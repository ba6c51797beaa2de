"""The airloop command line, run in-process through its entry point (real SQLite source, real GX)."""

from __future__ import annotations

import json
import shutil

import pytest

from airloop.ops.cli import main


def test_seed_twice_is_safe(seeded_source, capsys):
    assert main(["seed"]) == 0
    assert main(["seed"]) == 0
    assert "Seeded 17379 rows" in capsys.readouterr().out


def test_suites_check_without_data(capsys):
    assert main(["suites", "check", "bikes"]) == 0
    out = capsys.readouterr().out
    assert "OK   schema.json: suite 'bikes_schema'" in out and "OK   values.json" in out


def test_suites_check_dry_run_pass(seeded_source, capsys, home):
    before = sorted(p for p in home.rglob("*") if "lake" in p.parts or "reports" in p.parts)
    assert main(["suites", "check", "bikes", "--on", "2011-02-10"]) == 0
    out = capsys.readouterr().out
    assert (
        "Dry run on interval [2011-01-29T00:00:00+00:00, 2011-02-26T00:00:00+00:00) "
        "(partition 2011-01-29T000000Z, 650 rows): would PASS"
    ) in out
    after = sorted(p for p in home.rglob("*") if "lake" in p.parts or "reports" in p.parts)
    assert after == before, "a dry run must not write partitions or reports"


def test_suites_check_dry_run_fail_names_the_rule(seeded_source, capsys):
    assert main(["suites", "check", "bikes", "--on", "2011-03-10"]) == 1
    out = capsys.readouterr().out
    assert "would FAIL" in out and "column='hum'" in out and "22 of 657 rows fail" in out


def test_suites_check_broken_suite_fails(tmp_path, monkeypatch, capsys):
    from tests.conftest import ROOT

    shutil.copytree(ROOT / "expectations", tmp_path / "expectations")
    (tmp_path / "expectations" / "bikes" / "values.json").write_text("{ not json")
    monkeypatch.setenv("AIRLOOP_EXPECTATIONS_DIR", str(tmp_path / "expectations"))
    assert main(["suites", "check", "bikes"]) == 1
    err = capsys.readouterr().err
    assert "values.json: not valid JSON at line 1" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["suites", "check", "nope"], "No model spec"),
        (["suites", "check", "bikes", "--on", "2030-01-01"], "outside the schedule of bikes"),
    ],
)
def test_usage_errors_are_one_clear_line(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_a_bad_on_value_is_refused_naming_both_forms(capsys):
    assert main(["suites", "check", "bikes", "--on", "10/03/2011"]) == 2
    err = capsys.readouterr().err
    assert "'10/03/2011'" in err and "YYYY-MM-DD" in err and "partition key" in err


def test_status_json_without_servers(seeded_source, capsys):
    assert main(["status", "--json"]) == 0
    state = json.loads(capsys.readouterr().out)
    assert all(not c["running"] for c in state["components"].values())
    bikes = state["models"]["bikes"]
    assert bikes["expected"] == 26
    assert set(bikes) >= {"validated", "quarantined", "missing"}
    assert len(bikes["missing"]) + len(bikes["validated"]) + len(bikes["quarantined"]) == 26


def test_up_shows_generated_passwords_only_once(home, monkeypatch, capsys):
    from airloop.ops import cli, runtime

    (home / "run").mkdir(parents=True, exist_ok=True)
    (home / "run" / "passwords_shown").unlink(missing_ok=True)
    creds = {"admin": "pw-admin-1234", "steward": "pw-steward-5678"}
    monkeypatch.setattr(runtime, "read_credentials", lambda: dict(creds))
    status = {
        "urls": {"airflow": "http://127.0.0.1:8080", "mlflow": "http://127.0.0.1:5000"},
        "credentials_file": "/somewhere/passwords.json",
        "users": [{"name": "admin", "role": "admin"}, {"name": "steward", "role": "viewer"}],
    }
    cli._print_up(status)
    first = capsys.readouterr().out
    assert "pw-admin-1234" in first and "(viewer)" in first and "/plugin/airloop" in first
    cli._print_up(status)
    again = capsys.readouterr().out
    assert "pw-admin-1234" not in again and "pw-steward-5678" not in again
    assert "steward (viewer)" in again and "/somewhere/passwords.json" in again
    assert "pw-admin" not in (home / "run" / "passwords_shown").read_text()  # a digest, never a password
    creds["admin"] = "pw-admin-rotated"  # new passwords are shown once more
    cli._print_up(status)
    assert "pw-admin-rotated" in capsys.readouterr().out


def test_suites_check_on_a_partition_key_says_each_rule(seeded_source, capsys):
    """The command the steward page shows: the exact interval by its partition key, pass or fail per rule."""
    assert main(["suites", "check", "bikes", "--on", "2011-02-26T000000Z"]) == 1
    out = capsys.readouterr().out
    assert "partition 2011-02-26T000000Z, 657 rows): would FAIL" in out
    assert "    FAIL  hum is greater than 0 and at most 1: 22 of 657 rows unexpected (3.35%)" in out
    assert "    pass  season is one of 1, 2, 3 or 4" in out
    assert "    pass  the batch's row count is between 600 and 672" in out


def test_suites_check_one_suite_file(seeded_source, capsys, tmp_path):
    """--suite dry-runs only that file (a draft anywhere): the schema suite alone lets the fault through."""
    from tests.conftest import ROOT

    draft = tmp_path / "draft.json"
    draft.write_text((ROOT / "expectations" / "bikes" / "schema.json").read_text())
    assert main(["suites", "check", "bikes", "--suite", str(draft), "--on", "2011-02-26T000000Z"]) == 0
    out = capsys.readouterr().out
    assert "OK   draft.json: suite 'bikes_schema'" in out and "values.json" not in out and "would PASS" in out
    assert "hum is greater than 0" not in out


def test_suites_check_bad_suite_files_are_named(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(
        '{"name": "x", "expectations": [{"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "nope"}}]}'
    )
    missing = tmp_path / "missing.json"
    assert (
        main(["suites", "check", "bikes", "--suite", str(bad), "--suite", str(missing), "--on", "2011-02-26T000000Z"])
        == 1
    )
    err = capsys.readouterr().err
    assert "FAIL: the given suite files do not load" in err
    assert (
        f"{bad}: expectation #1 (expect_column_values_to_not_be_null): column 'nope' is not a column of model bikes"
        in err
    )
    assert f"{missing}: no such suite file" in err


@pytest.mark.parametrize(
    ("on", "message"),
    [
        (
            "2011-02-27T000000Z",
            "no interval of bikes's schedule has partition key '2011-02-27T000000Z' "
            "(nearest: 2011-02-26T000000Z, 2011-03-26T000000Z)",
        ),
        ("2030-01-01T000000Z", "no interval of bikes's schedule has partition key '2030-01-01T000000Z'"),
        ("2011-02-30", "'2011-02-30' is neither a date (YYYY-MM-DD) nor a partition key"),
        ("last week", "'last week' is neither a date"),
    ],
)
def test_suites_check_unknown_interval_is_named(on, message, capsys):
    assert main(["suites", "check", "bikes", "--on", on]) == 2
    assert message in capsys.readouterr().err
