"""Numbers as airloop shows and stores them: one format for a metric in the verdict, the view and the logs.

Pure and light (safe at DAG parse time): no numpy import; numpy numbers are ``numbers.Real`` and pass through.
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any


def as_float(value: Any) -> float:
    """A number as a float; NaN for None, strings and anything else that is not a real number."""
    if isinstance(value, bool) or not isinstance(value, Real):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        return math.nan


def json_number(value: Any) -> int | float | None:
    """A number JSON can hold: ints stay ints (also numpy's), NaN and infinities become None."""
    if isinstance(value, Integral) and not isinstance(value, bool):
        return int(value)
    number = as_float(value)
    return number if math.isfinite(number) else None


def number_in(value: Any) -> float:
    """The inverse of :func:`json_number`: None becomes NaN, ints stay ints."""
    if isinstance(value, Integral) and not isinstance(value, bool):
        return int(value)  # an int is a float here (row counts), and round-trips as an int
    return as_float(value)


def num(value: float, digits: int = 3) -> str:
    """Three significant digits (more when asked); whole numbers with thousands separators from 1000 up
    (``1,235``); NaN and infinities by name. The one format of a metric in the verdict, the view and the logs."""
    value = as_float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    text = f"{value:,.{digits}g}"
    return f"{value:,.0f}" if "e+" in text else text


def shown(value: Any) -> str:
    """:func:`num` for a page: a dash when there is no value (None) instead of NaN."""
    return "–" if value is None else num(value)


def nums(*values: float) -> tuple[str, ...]:
    """The values with as many digits as it takes for different numbers to look different (at most 8)."""
    numbers = [as_float(v) for v in values]
    finite = {v for v in numbers if math.isfinite(v)}
    digits = 3
    while digits < 8 and len({num(v, digits) for v in finite}) < len(finite):
        digits += 1
    return tuple(num(v, digits) for v in numbers)


def pct(fraction: float) -> str:
    """A fraction as a percent with one decimal (``0.1`` -> ``10 %``, ``0.048`` -> ``4.8 %``)."""
    percent = abs(fraction) * 100
    if 0 < percent < 0.05:
        return "< 0.1 %"
    text = f"{percent:.1f}"
    return f"{text.removesuffix('.0')} %"
