"""Expectations in plain words (airloop.core.rules): every type the shipped suites use, and the fallback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airloop.core.rules import rule_text, same_rule, share_text

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("kind", "kwargs", "words"),
    [
        (
            "expect_column_values_to_be_between",
            {"column": "temp", "min_value": 0, "max_value": 1, "mostly": 0.95},
            "temp is between 0 and 1 (at least 95% of rows)",
        ),
        (
            "expect_column_values_to_be_between",
            {"column": "hum", "min_value": 0, "max_value": 1, "strict_min": True},
            "hum is greater than 0 and at most 1",
        ),
        ("expect_column_values_to_be_between", {"column": "height", "min_value": 0}, "height is at least 0"),
        (
            "expect_column_values_to_be_between",
            {"column": "x", "max_value": 5.0, "strict_max": True},
            "x is less than 5",
        ),
        (
            "expect_column_values_to_be_in_set",
            {"column": "season", "value_set": [1, 2, 3, 4]},
            "season is one of 1, 2, 3 or 4",
        ),
        (
            "expect_column_values_to_be_in_set",
            {"column": "sky", "value_set": ["No Cloud"], "mostly": 0.805},
            "sky is one of 'No Cloud' (at least 80.5% of rows)",
        ),
        ("expect_column_values_to_not_be_null", {"column": "cnt"}, "cnt is not missing"),
        (
            "expect_column_values_to_not_be_null",
            {"column": "sky", "mostly": 0.6},
            "sky is not missing (at least 60% of rows)",
        ),
        (
            "expect_column_values_to_be_in_type_list",
            {"column": "temp", "type_list": ["float64", "float32"]},
            "temp has type float64 or float32",
        ),
        ("expect_column_values_to_be_unique", {"column": "ts"}, "ts has no repeated value"),
        (
            "expect_compound_columns_to_be_unique",
            {"column_list": ["a", "b"]},
            "each combination of a and b appears once",
        ),
        (
            "expect_column_values_to_match_regex",
            {"column": "opid", "regex": "^[A-Z]{2}$"},
            "opid matches the pattern ^[A-Z]{2}$",
        ),
        (
            "expect_table_row_count_to_be_between",
            {"min_value": 600, "max_value": 672},
            "the batch's row count is between 600 and 672",
        ),
        (
            "expect_table_columns_to_match_set",
            {"column_set": ["ts", "cnt"], "exact_match": False},
            "the batch has the columns ts and cnt (other columns allowed)",
        ),
        (
            "expect_table_columns_to_match_set",
            {"column_set": ["ts", "cnt"]},
            "the batch has exactly the columns ts and cnt",
        ),
        # Any other type: its name and arguments, nothing hidden but how GX reports.
        (
            "expect_column_kl_divergence_to_be_less_than",
            {"column": "temp", "threshold": 0.1, "result_format": "BOOLEAN_ONLY"},
            "expect_column_kl_divergence_to_be_less_than: column='temp', threshold=0.1",
        ),
        (
            "expect_column_proportion_of_unique_values_to_be_between",
            {"column": "x", "min_value": 0.5, "mostly": 0.9},
            "expect_column_proportion_of_unique_values_to_be_between: column='x', min_value=0.5 (at least 90% of rows)",
        ),
    ],
)
def test_plain_words(kind, kwargs, words):
    assert rule_text(kind, kwargs) == words


def test_long_sets_are_cut_with_a_count():
    text = rule_text("expect_column_values_to_be_in_set", {"column": "c", "value_set": list(range(20))})
    assert text.endswith("11 and 8 more") and "12" not in text


def test_every_shipped_expectation_has_a_sentence():
    """The demo suites (and the starter suites) never fall back to the type name."""
    for path in sorted(ROOT.glob("expectations/*/*.json")):
        for exp in json.loads(path.read_text())["expectations"]:
            text = rule_text(exp["type"], exp["kwargs"])
            assert not text.startswith("expect_"), (path.name, text)
            column = exp["kwargs"].get("column")
            assert column is None or text.startswith(column), text


def test_share_text():
    assert [share_text(s) for s in (0.95, 0.5, 0.955, 1.0, 0.0328)] == ["95%", "50%", "95.5%", "100%", "3.28%"]


def test_a_failure_is_matched_to_its_rule():
    stored = {
        "suite": "v",
        "expectation": "expect_column_values_to_be_between",
        "kwargs": {"column": "hum", "min_value": 0, "max_value": 1, "strict_min": True},
    }
    kwargs = {"column": "hum", "min_value": 0, "max_value": 1, "strict_min": True}
    assert same_rule("v", "expect_column_values_to_be_between", kwargs, stored)
    assert not same_rule("other", "expect_column_values_to_be_between", kwargs, stored)
    assert not same_rule("v", "expect_column_values_to_be_in_set", kwargs, stored)
    assert not same_rule("v", "expect_column_values_to_be_between", {**kwargs, "column": "temp"}, stored)
    assert not same_rule("v", "expect_column_values_to_be_between", {**kwargs, "max_value": 2}, stored)


def test_a_failure_is_matched_whatever_number_type_gx_echoes():
    """GX stores ``min_value: 0`` of the suite as ``0.0`` in its result (seen in real validation results)."""
    stored = {
        "suite": "v",
        "expectation": "expect_column_values_to_be_in_set",
        "kwargs": {"column": "c", "value_set": [0.0, 1.0], "min_value": 0.0},
    }
    assert same_rule(
        "v", "expect_column_values_to_be_in_set", {"column": "c", "value_set": [0, 1], "min_value": 0}, stored
    )
    assert not same_rule("v", "expect_column_values_to_be_in_set", {"column": "c", "value_set": [0, 2]}, stored)
