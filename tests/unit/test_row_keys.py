"""Row keys (airloop.stages.ingest.keys): the ingest check that quarantines a batch, and the canonical key text."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from airloop.stages.ingest.keys import advice, key_problems, row_keys

HOURS = pd.to_datetime(["2011-01-01 00:00", "2011-01-01 01:00", "2011-01-01 02:00"], utc=True)


@pytest.mark.parametrize(
    ("frame", "keys", "expected"),
    [
        (pd.DataFrame({"ts": HOURS, "x": [1, 2, 3]}), ["ts"], []),
        (pd.DataFrame({"ts": HOURS[[0, 0, 0]], "record_id": [7, 8, 9]}), ["record_id"], []),
        (pd.DataFrame({"ts": HOURS[[0, 0, 1]], "site": ["a", "b", "a"]}), ["ts", "site"], []),
        (pd.DataFrame({"ts": HOURS, "x": [1, 2, 3]}), ["record_id"], [("missing", 3, [])]),
        (
            pd.DataFrame({"ts": [HOURS[0], pd.NaT, HOURS[2]], "x": [1, 2, 3]}),
            ["ts"],
            [("null", 1, ["row 1: null"])],
        ),
        (
            pd.DataFrame({"ts": HOURS[[0, 1, 0]], "x": [1, 2, 3]}),
            ["ts"],
            [("duplicate", 2, ["2011-01-01T00:00:00Z x2"])],
        ),
        (
            pd.DataFrame({"ts": HOURS[[0, 0, 0]], "record_id": [7.0, np.nan, 7.0]}),
            ["record_id"],
            [("null", 1, ["row 1: null"]), ("duplicate", 2, ["7 x2"])],
        ),
        (
            pd.DataFrame({"ts": HOURS[[0, 0, 1]], "site": ["a", None, "a"]}),
            ["ts", "site"],
            [("null", 1, ['row 1: ["2011-01-01T00:00:00Z", null]'])],
        ),
    ],
    ids=[
        "unique-times",
        "many-rows-per-time-with-a-record-id",
        "two-key-columns",
        "missing-column",
        "null-time",
        "duplicate-times",
        "null-and-duplicate-ids",
        "null-in-second-key",
    ],
)
def test_key_problems(frame, keys, expected):
    found = key_problems(frame, keys)
    assert [(p.kind, p.rows, p.examples) for p in found] == expected
    for problem in found:
        assert problem.describe().startswith(f"row keys {keys}: ")


def test_a_missing_key_column_names_it_and_the_columns_there_are():
    (problem,) = key_problems(pd.DataFrame({"ts": HOURS}), ["ts", "record_id"])
    assert problem.detail == "column(s) ['record_id'] are not in the batch (its columns: ['ts'])"


def test_examples_are_capped_but_counts_are_not():
    frame = pd.DataFrame({"id": list(range(30)) * 2})
    (problem,) = key_problems(frame, ["id"], sample=5)
    assert problem.rows == 60 and len(problem.examples) == 5 and problem.capped
    assert problem.examples[0] == "0 x2" and "30 key values repeated" in problem.detail
    assert problem.describe().endswith("(first 5 shown)")


def test_advice_says_what_to_do_for_each_kind():
    text = advice("m", ["ts"], {"missing", "null", "duplicate"})
    assert "`source.keys` in the model spec m.yaml" in text and "fix them at the source" in text
    assert "such as a record id" in text
    assert advice("m", ["ts"], {"null"}) == "rows without a key cannot be scored or joined back: fix them at the source"


def test_row_keys_are_canonical_text():
    naive = pd.DataFrame({"ts": pd.to_datetime(["2011-01-01 05:00", "2011-01-01 05:00:00.25"], format="ISO8601")})
    aware = pd.DataFrame({"ts": naive["ts"].dt.tz_localize("Europe/Lisbon").dt.tz_convert("America/New_York")})
    assert row_keys(naive, ["ts"]) == ["2011-01-01T05:00:00Z", "2011-01-01T05:00:00.250000Z"]
    assert row_keys(aware, ["ts"]) == row_keys(naive, ["ts"])  # Lisbon is UTC in January: same instants
    us = pd.DataFrame({"ts": naive["ts"].astype("datetime64[us]")})
    assert row_keys(us, ["ts"]) == row_keys(naive, ["ts"])  # whatever the resolution
    assert row_keys(pd.DataFrame({"id": [7, 8]}), ["id"]) == ["7", "8"]
    assert row_keys(pd.DataFrame({"id": [7.0, 8.5]}), ["id"]) == ["7", "8.5"]  # a whole float is its digits
    assert row_keys(pd.DataFrame({"id": ["a,b", "c"]}), ["id"]) == ["a,b", "c"]
    two = pd.DataFrame({"ts": naive["ts"], "site": ['a"b', "c"], "n": [1, 2]})
    keys = row_keys(two, ["ts", "site", "n"])
    assert keys[0] == '["2011-01-01T05:00:00Z","a\\"b",1]'
    assert [json.loads(k) for k in keys][1] == ["2011-01-01T05:00:00.250000Z", "c", 2]
    assert row_keys(two.iloc[1:], ["ts", "site", "n"]) == keys[1:]  # a row's key does not depend on its chunk
