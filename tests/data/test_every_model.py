"""Every model spec in include/models loads, and so do its suites: a model is one YAML file plus its suites."""

from __future__ import annotations

from pathlib import Path

import pytest

from airloop.adapters.expectations import load_suites
from airloop.core.spec import load_spec

ROOT = Path(__file__).resolve().parents[2]
SPECS = sorted((ROOT / "include" / "models").glob("*.yaml"))


def test_there_is_more_than_one_model():
    assert len(SPECS) >= 2


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_spec_and_suites_load(path):
    spec = load_spec(path)
    suites = load_suites(spec, ROOT / "expectations")
    types = {e["type"] for s in suites for e in s.raw["expectations"]}
    assert "expect_table_row_count_to_be_between" in types, f"{spec.name}: a suite needs a row-count floor"
    assert "expect_column_values_to_not_be_null" in types, f"{spec.name}: a suite needs not-null checks"
