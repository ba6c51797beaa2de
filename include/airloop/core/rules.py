"""Expectations in plain words, for data stewards: ``temp is between 0 and 1 (at least 95% of rows)``.

A suite file says what it checks in GX terms (``expect_column_values_to_be_between`` with ``kwargs``); the steward's
page in the view and ``airloop suites check`` say it in words. Each expectation type used in the shipped suites and
the starter suites ``airloop model new`` drafts has a sentence here; any other type is shown as its name and
arguments, so nothing is hidden. Pure and light: safe to import anywhere.

Why not GX's own prescriptive renderers (what Data Docs shows)? They give ``$column``-templated content blocks
meant for Data Docs' HTML rather than a sentence, need an expectation object per rule (GX imported), and their
wording changes between GX releases; the sentences here are a few lines each, tested, and the same in the view and
on the command line.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

#: How many values of a set or column list are spelled out before "and N more".
MAX_LISTED = 12


def _value(v: Any) -> str:
    if isinstance(v, str):
        return repr(v)
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def _listed(values: Any, *, quote: bool = True, last: str = "or") -> str:
    items = [(_value(v) if quote else str(v)) for v in (values or [])]
    if not items:
        return "(none)"
    more = len(items) - MAX_LISTED
    items = items[:MAX_LISTED]
    if more > 0:
        return ", ".join(items) + f" and {more} more"
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + f" {last} " + items[-1]


def share_text(share: float) -> str:
    """A share as a percentage: 0.95 -> ``95%``, 0.955 -> ``95.5%``, 0.00012 -> ``0.012%``."""
    pct = share * 100
    if pct == int(pct):
        return f"{int(pct)}%"
    return f"{pct:.3g}%"


def _bounds(kw: Mapping[str, Any], what: str) -> str:
    low, high = kw.get("min_value"), kw.get("max_value")
    strict_low, strict_high = bool(kw.get("strict_min")), bool(kw.get("strict_max"))
    if low is not None and high is not None:
        if not strict_low and not strict_high:
            return f"{what} is between {_value(low)} and {_value(high)}"
        lower = f"greater than {_value(low)}" if strict_low else f"at least {_value(low)}"
        upper = f"less than {_value(high)}" if strict_high else f"at most {_value(high)}"
        return f"{what} is {lower} and {upper}"
    if low is not None:
        return f"{what} is {'greater than' if strict_low else 'at least'} {_value(low)}"
    if high is not None:
        return f"{what} is {'less than' if strict_high else 'at most'} {_value(high)}"
    return f"{what} has no bound (neither min_value nor max_value is set)"


def _columns_match(kw: Mapping[str, Any]) -> str:
    columns = _listed(kw.get("column_set"), quote=False, last="and")
    if kw.get("exact_match") is False:
        return f"the batch has the columns {columns} (other columns allowed)"
    return f"the batch has exactly the columns {columns}"


_SENTENCES: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "expect_column_values_to_be_between": lambda kw: _bounds(kw, str(kw.get("column"))),
    "expect_column_values_to_be_in_set": lambda kw: f"{kw.get('column')} is one of {_listed(kw.get('value_set'))}",
    "expect_column_values_to_not_be_in_set": lambda kw: f"{kw.get('column')} is none of {_listed(kw.get('value_set'))}",
    "expect_column_values_to_not_be_null": lambda kw: f"{kw.get('column')} is not missing",
    "expect_column_values_to_be_null": lambda kw: f"{kw.get('column')} is missing",
    "expect_column_values_to_be_in_type_list": lambda kw: (
        f"{kw.get('column')} has type {_listed(kw.get('type_list'), quote=False)}"
    ),
    "expect_column_values_to_be_of_type": lambda kw: f"{kw.get('column')} has type {kw.get('type_')}",
    "expect_column_values_to_be_unique": lambda kw: f"{kw.get('column')} has no repeated value",
    "expect_compound_columns_to_be_unique": lambda kw: (
        f"each combination of {_listed(kw.get('column_list'), quote=False, last='and')} appears once"
    ),
    "expect_column_values_to_match_regex": lambda kw: f"{kw.get('column')} matches the pattern {kw.get('regex')}",
    "expect_column_values_to_not_match_regex": lambda kw: (
        f"{kw.get('column')} does not match the pattern {kw.get('regex')}"
    ),
    "expect_table_row_count_to_be_between": lambda kw: _bounds(kw, "the batch's row count"),
    "expect_table_row_count_to_equal": lambda kw: f"the batch has exactly {kw.get('value')} rows",
    "expect_table_columns_to_match_set": _columns_match,
    "expect_column_to_exist": lambda kw: f"the batch has a column {kw.get('column')}",
    "expect_column_mean_to_be_between": lambda kw: _bounds(kw, f"the mean of {kw.get('column')}"),
    "expect_column_max_to_be_between": lambda kw: _bounds(kw, f"the largest {kw.get('column')}"),
    "expect_column_min_to_be_between": lambda kw: _bounds(kw, f"the smallest {kw.get('column')}"),
}

#: kwargs that only say how GX reports, not what it checks: left out of the fallback's words.
_REPORTING = frozenset({"result_format", "catch_exceptions", "include_config", "batch_id", "meta", "mostly"})


def rule_text(expectation_type: str, kwargs: Mapping[str, Any] | None) -> str:
    """One expectation in plain words, with its ``mostly`` share when it has one.

    Known types get a sentence (``hum is greater than 0 and at most 1``); any other type is its name and its
    arguments (``expect_column_kl_divergence_to_be_less_than: column='temp', threshold=0.1``).
    """
    kw = dict(kwargs or {})
    sentence = _SENTENCES.get(expectation_type)
    if sentence is not None:
        text = sentence(kw)
    else:
        args = ", ".join(f"{k}={v!r}" for k, v in kw.items() if k not in _REPORTING)
        text = f"{expectation_type}: {args}" if args else expectation_type
    mostly = kw.get("mostly")
    if isinstance(mostly, int | float) and not isinstance(mostly, bool) and mostly < 1:
        text += f" (at least {share_text(float(mostly))} of rows)"
    return text


def _numbers_as_floats(value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, list | tuple):
        return [_numbers_as_floats(v) for v in value]
    if isinstance(value, dict):
        return {k: _numbers_as_floats(v) for k, v in value.items()}
    return value


def _canonical(value: Any) -> str:
    """A kwarg's value for comparison: GX echoes ``0`` from a suite as ``0.0`` in its results."""
    return json.dumps(_numbers_as_floats(value), sort_keys=True, default=str)


def same_rule(suite: str, expectation_type: str, kwargs: Mapping[str, Any], failure: Mapping[str, Any]) -> bool:
    """Whether a stored failure (``validation_results.failures``: suite, expectation, kwargs) is this rule.

    GX echoes a rule's kwargs in its result (with a ``batch_id`` airloop drops, numbers as floats, sometimes defaults
    added), so a failure is this rule when the suite and type agree and every argument both name has the same value.
    """
    if failure.get("expectation") != expectation_type:
        return False
    if failure.get("suite") not in (None, suite):
        return False
    stored = failure.get("kwargs") or {}
    return all(_canonical(stored[k]) == _canonical(v) for k, v in kwargs.items() if k in stored)
