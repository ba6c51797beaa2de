"""Validation of a passing 1M-row batch with the bikes suites, against the same checks in vectorised pandas.

Target (DESIGN.md "Speed targets"): a passing batch validates in ≤ 10x the time of the same checks written as
vectorised pandas. The subject is airloop's real code path (``load_suites`` + ``validate``: one GX pass in
``BOOLEAN_ONLY`` format over every suite, detailed results only on failure, without GX's whole-frame fingerprint
and copies: see ``_lean_gx`` in ``airloop/adapters/expectations.py``). The baseline, :func:`pandas_checks`, is the
same 49 expectations written by hand; the benchmark asserts that both give the same verdict on a passing batch
and on failing batches (one per kind of rule), so the baseline cannot win by checking less.

The batch: the vendored bike-sharing data without its sensor-fault rows (``hum == 0`` on 2011-03-10), resampled
with replacement to ``rows`` rows, with a unique hourly UTC ``ts``. At that size the steward's row-count rule
(120..168 rows, a weekly interval) would fail, so the benchmark loads the suites and sets that one expectation's
``max_value`` to ``None`` in the loaded dict (the files are not touched); the output says so.

Three child processes (``python -m benchmarks.validation --child MODE``):

* ``timing``: agreement checks, then ``repeat`` interleaved timings of both, then the failure path once
  (a 1M batch with one bad ``hum``: GX re-validates the failed expectations in ``SUMMARY`` format), then one profiled
  GX pass to show where its time goes;
* ``memory-gx`` and ``memory-pandas``: the peak memory of one call on the 1M batch, each in its own process.
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import dataclasses
import gc
import pstats
import resource
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.common import (
    PROJECT_DIR,
    child_env,
    child_exit,
    emit,
    fmt_s,
    proc_status_kb,
    ratio,
    reset_peak_rss,
    run_child,
    summary,
    target,
)

if TYPE_CHECKING:
    import pandas as pd

    from airloop.adapters.expectations import SuiteFile

DEMO_CSV = PROJECT_DIR / "include" / "data" / "bike_sharing" / "hour.csv"
EXPECTATIONS_DIR = PROJECT_DIR / "expectations"
MODEL = "bikes"
ROW_COUNT_TYPE = "expect_table_row_count_to_be_between"
FIXED_COST_ROWS = 1_000
TARGET = (10.0, "DESIGN.md: validation of a passing batch ≤ 10x the same checks in vectorised pandas")

# --- the baseline: the bikes suites (expectations/bikes/*.json) written by hand as vectorised pandas -------------

# The columns the suites type-check (expect_column_values_to_be_in_type_list, one expectation per column).
INT_COLUMNS = (
    "season",
    "yr",
    "mnth",
    "hr",
    "holiday",
    "weekday",
    "workingday",
    "weathersit",
    "casual",
    "registered",
    "cnt",
)
FLOAT_COLUMNS = ("temp", "atemp", "hum", "windspeed")
INT_TYPES = frozenset({"int64", "int32", "Int64"})
FLOAT_TYPES = frozenset({"float64", "float32"})
ROW_COUNT_MIN = 120  # expect_table_row_count_to_be_between(min_value=120, max_value=168 → None for the benchmark)
REQUIRED_COLUMNS = frozenset({"ts", "instant", "dteday", *INT_COLUMNS, *FLOAT_COLUMNS})  # ..._match_set, not exact
UNIQUE = "ts"  # expect_column_values_to_be_unique
NOT_NULL = ("ts", *INT_COLUMNS, *FLOAT_COLUMNS)  # expect_column_values_to_not_be_null, one per column
VALUE_SETS: dict[str, tuple[int, ...]] = {  # values.json: expect_column_values_to_be_in_set
    "season": (1, 2, 3, 4),
    "yr": (0, 1),
    "holiday": (0, 1),
    "workingday": (0, 1),
    "weathersit": (1, 2, 3, 4),
}
RANGES: dict[str, tuple[float, float, bool]] = {  # values.json: expect_column_values_to_be_between (min, max, strict)
    "mnth": (1, 12, False),
    "hr": (0, 23, False),
    "weekday": (0, 6, False),
    "temp": (0, 1, False),
    "atemp": (0, 1, False),
    "hum": (0, 1, True),
    "windspeed": (0, 1, False),
    "cnt": (0, 2000, False),
    "casual": (0, 2000, False),
    "registered": (0, 2000, False),
}
#: One per expectation in the suites: row count, column set, uniqueness, then the per-column rules.
BASELINE_CHECKS = 3 + len(NOT_NULL) + len(INT_COLUMNS) + len(FLOAT_COLUMNS) + len(VALUE_SETS) + len(RANGES)


def pandas_checks(df: pd.DataFrame) -> bool:
    """The bikes suites as vectorised pandas: True when the batch passes every rule.

    Same semantics as GX for these expectations: per-row rules ignore missing values (a range rule on an
    all-null column passes), the column set may have extra columns, dtype rules compare the dtype's name.
    """
    import pandas as pd

    if len(df) < ROW_COUNT_MIN:
        return False
    if not REQUIRED_COLUMNS.issubset(df.columns):
        return False
    unique = df[UNIQUE]
    if not (unique.dropna() if unique.hasnans else unique).is_unique:
        return False
    if any(df[c].hasnans for c in NOT_NULL):
        return False
    if any(df[c].dtype.name not in INT_TYPES for c in INT_COLUMNS):
        return False
    if any(df[c].dtype.name not in FLOAT_TYPES for c in FLOAT_COLUMNS):
        return False
    for column, allowed in VALUE_SETS.items():
        values = df[column]
        if not (values.isin(allowed) | values.isna()).all():
            return False
    for column, (low, high, strict_min) in RANGES.items():
        lowest, highest = df[column].min(), df[column].max()  # both skip missing values
        if pd.isna(lowest):
            continue  # all missing: GX passes a range rule on an all-null column
        if (lowest <= low) if strict_min else (lowest < low):
            return False
        if highest > high:
            return False
    return True


# --- the batch and the suites ------------------------------------------------------------------------------------


def build_batch(rows: int, seed: int = 0) -> pd.DataFrame:
    """``rows`` rows resampled from the real data (sensor-fault rows dropped), with a unique hourly UTC ``ts``."""
    import numpy as np
    import pandas as pd

    from airloop.adapters.datasets import dataset_frame

    real = dataset_frame(DEMO_CSV.parent)
    real = real[real["hum"] > 0]  # hum == 0 all day on 2011-03-10: a sensor fault the suite rejects
    picks = np.random.default_rng(seed).integers(0, len(real), rows)
    batch = real.iloc[picks].reset_index(drop=True)
    batch["ts"] = pd.date_range("2011-01-01", periods=rows, freq="h", tz="UTC")
    return batch


def benchmark_suites() -> tuple[list[SuiteFile], str]:
    """The bikes suites as airloop loads them, with the row-count maximum lifted; and a note saying so."""
    from airloop.adapters.expectations import load_suites, suite_digest
    from airloop.core.spec import get_spec

    suites = load_suites(get_spec(MODEL), EXPECTATIONS_DIR)
    patched: list[SuiteFile] = []
    changed: list[str] = []
    for suite in suites:
        raw = copy.deepcopy(suite.raw)
        for exp in raw["expectations"]:
            if exp["type"] == ROW_COUNT_TYPE and exp["kwargs"].get("max_value") is not None:
                changed.append(f"{suite.name}: {ROW_COUNT_TYPE} max_value {exp['kwargs']['max_value']} → None")
                exp["kwargs"]["max_value"] = None
        patched.append(dataclasses.replace(suite, raw=raw, digest=suite_digest(raw)))
    if len(changed) != 1:
        raise RuntimeError(f"expected exactly one row-count maximum to lift in the {MODEL} suites, found {changed}")
    count = sum(s.expectation_count for s in patched)
    if count != BASELINE_CHECKS:
        raise RuntimeError(
            f"the {MODEL} suites have {count} expectations but the pandas baseline has {BASELINE_CHECKS}: "
            "update pandas_checks() in benchmarks/validation.py to match expectations/bikes/"
        )
    note = (
        f"suites loaded from {EXPECTATIONS_DIR.relative_to(PROJECT_DIR)}/{MODEL} by "
        "airloop.adapters.expectations.load_suites; "
        f"for the benchmark only, in the loaded dict: {changed[0]} (a 1M-row batch would fail the weekly maximum)"
    )
    return patched, note


def gx_validate(df: pd.DataFrame, suites: list[SuiteFile]) -> bool:
    """The subject: airloop's real validation call."""
    from airloop.adapters.expectations import validate

    return validate(df, suites, keys=["ts"]).success


# --- failing batches for the agreement check ---------------------------------------------------------------------


def _set(column: str, value: Any) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def mutate(df: pd.DataFrame) -> pd.DataFrame:
        df = df.copy()
        df.loc[df.index[len(df) // 2], column] = value
        return df

    return mutate


def _null_cnt(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    df["cnt"] = df["cnt"].astype("float64")
    df.loc[df.index[3], "cnt"] = float("nan")
    return df


def _duplicate_ts(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    df.loc[df.index[5], "ts"] = df["ts"].iloc[4]
    return df


def _float_hr(df: pd.DataFrame) -> pd.DataFrame:
    return df.assign(hr=df["hr"].astype("float64"))


#: One failing batch per kind of rule (row count, column set, uniqueness, not-null, dtype, value set, range).
FAILING: dict[str, Callable[[pd.DataFrame], pd.DataFrame]] = {
    "hum == 0 (strict minimum)": _set("hum", 0.0),
    "temp 1.5 (range)": _set("temp", 1.5),
    "cnt 2500 (range)": _set("cnt", 2500),
    "season 5 (value set)": _set("season", 5),
    "weathersit 0 (value set)": _set("weathersit", 0),
    "cnt missing (not null, dtype)": _null_cnt,
    "duplicate ts (unique)": _duplicate_ts,
    "hr as float (dtype)": _float_hr,
    "no windspeed column (column set)": lambda df: df.drop(columns=["windspeed"]),
    "100 rows (row count)": lambda df: df.iloc[:100],
}


def check_agreement(small: pd.DataFrame, suites: list[SuiteFile]) -> dict[str, bool]:
    """Assert GX and the baseline agree on a passing batch and on each failing one; return the verdicts."""
    verdicts: dict[str, bool] = {}
    cases: dict[str, Callable[[pd.DataFrame], pd.DataFrame]] = {"passing": lambda df: df, **FAILING}
    for name, make in cases.items():
        df = make(small)
        gx_ok, pandas_ok = gx_validate(df, suites), pandas_checks(df)
        expected = name == "passing"
        if gx_ok != pandas_ok or gx_ok != expected:
            raise AssertionError(
                f"baseline and GX disagree on the {name!r} batch: GX {gx_ok}, pandas {pandas_ok}, expected {expected}"
            )
        verdicts[name] = gx_ok
    return verdicts


# --- child processes ---------------------------------------------------------------------------------------------


def _area(filename: str) -> str:
    """The library a profiled function belongs to: the package under site-packages, C built-ins, or stdlib."""
    path = filename.replace("\\", "/")
    if "pandas/core/util/hashing" in path:
        return "pandas hashing (GX hashes the whole frame for a batch id)"
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1].split("/", 1)[0]
    if filename == "~":
        return "C built-ins (numpy array methods such as copy, isinstance, ...)"
    return "Python stdlib and other (re, json, ...)"


def _profile_buckets(profile: cProfile.Profile, top: int = 8) -> dict[str, Any]:
    """Where a profiled GX pass spends its time: own time grouped by library, the top functions, key subtotals."""
    stats = pstats.Stats(profile)
    raw: dict[tuple[str, int, str], tuple[Any, ...]] = stats.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in raw.values())
    buckets: dict[str, float] = {}
    for (filename, _line, _func), value in raw.items():
        area = _area(filename)
        buckets[area] = buckets.get(area, 0.0) + value[2]
    buckets = dict(sorted(buckets.items(), key=lambda kv: kv[1], reverse=True))
    ranked = sorted(raw.items(), key=lambda kv: kv[1][2], reverse=True)[:top]
    cumulative = {
        "hash_pandas_dataframe": "hash_pandas_dataframe",
        "boolean-mask row selection (DataFrame._getitem_bool_array)": "_getitem_bool_array",
        "get_batch": "get_batch",
    }
    cum: dict[str, float] = {}
    for label, func_name in cumulative.items():
        values = [v[3] for (_f, _l, fn), v in raw.items() if fn == func_name]
        cum[label] = max(values) if values else 0.0
    return {
        "total_s_under_profiler": total,
        "share_hashing_the_frame": cum["hash_pandas_dataframe"] / total if total else 0.0,
        "share_boolean_mask_copies": cum["boolean-mask row selection (DataFrame._getitem_bool_array)"] / total
        if total
        else 0.0,
        "own_time_by_area_s": buckets,
        "cumulative_s": cum,
        "calls_of_hash_pandas_dataframe": sum(v[1] for (_f, _l, fn), v in raw.items() if fn == "hash_pandas_dataframe"),
        "top_own_time": [
            {"function": f"{_area(f)}: {Path(f).name}:{line}({fn})", "own_s": v[2], "calls": v[1]}
            for (f, line, fn), v in ranked
        ],
    }


def child_timing(rows: int, repeat: int, small_rows: int) -> dict[str, Any]:
    """Agreement, interleaved timings, the failure path once, one profiled pass."""
    t0 = time.perf_counter()
    import great_expectations  # noqa: F401  (timed: the import a validating task pays once)

    gx_import_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    batch = build_batch(rows)
    build_s = time.perf_counter() - t0
    suites, note = benchmark_suites()
    agreement = check_agreement(batch.iloc[:small_rows].copy(), suites)

    # warm-up on the full batch (GX context, lazily imported metric code), then interleaved timed runs.
    if not (gx_validate(batch, suites) and pandas_checks(batch)):
        raise AssertionError("the benchmark batch does not pass the suites: fix build_batch()")
    gx_times: list[float] = []
    pandas_times: list[float] = []
    for rep in range(repeat):
        order: Sequence[tuple[Callable[[], bool], list[float]]] = (
            (lambda: gx_validate(batch, suites), gx_times),
            (lambda: pandas_checks(batch), pandas_times),
        )
        for call, times in order if rep % 2 == 0 else reversed(order):
            start = time.perf_counter()
            ok = call()
            times.append(time.perf_counter() - start)
            if not ok:
                raise AssertionError("a passing batch failed during the timed runs")

    # the fixed cost of a call: the same calls on a small slice of the batch.
    small = batch.iloc[:FIXED_COST_ROWS].copy()
    gx_small: list[float] = []
    pandas_small: list[float] = []
    for _ in range(repeat):
        for call, times in (
            (lambda: gx_validate(small, suites), gx_small),
            (lambda: pandas_checks(small), pandas_small),
        ):
            start = time.perf_counter()
            call()
            times.append(time.perf_counter() - start)

    # the failure path, once: one bad hum on the 1M batch.
    from airloop.adapters.expectations import validate

    bad_row = rows // 2
    failing = batch.copy()
    failing.loc[bad_row, "hum"] = 0.0
    start = time.perf_counter()
    outcome = validate(failing, suites, keys=["ts"])
    failure_s = time.perf_counter() - start
    start = time.perf_counter()
    pandas_fail_ok = pandas_checks(failing)
    pandas_failure_s = time.perf_counter() - start
    if outcome.success or pandas_fail_ok:
        raise AssertionError(f"the failing 1M batch passed: GX {outcome.success}, pandas {pandas_fail_ok}")
    import pandas as pd

    named = [pd.Timestamp(i) for f in outcome.failures for i in f.example_ids]
    bad_ts = failing.loc[bad_row, "ts"]
    if bad_ts not in named:
        raise AssertionError(f"the failure report does not name the bad row {bad_ts}: {named}")
    del failing
    gc.collect()

    profile = cProfile.Profile()
    profile.enable()
    gx_validate(batch, suites)
    profile.disable()

    return {
        "rows": rows,
        "suites_note": note,
        "expectations": sum(s.expectation_count for s in suites),
        "gx_import_s": gx_import_s,
        "batch_build_s": build_s,
        "agreement_rows": small_rows,
        "agreement": agreement,
        "gx_s": gx_times,
        "pandas_s": pandas_times,
        "fixed_cost": {"rows": FIXED_COST_ROWS, "gx_s": gx_small, "pandas_s": pandas_small},
        "failure_path": {
            "gx_s": failure_s,
            "pandas_s": pandas_failure_s,
            "failed_expectations": [f.describe() for f in outcome.failures],
            "names_bad_row": bad_ts.isoformat(),
        },
        "gx_profile": _profile_buckets(profile),
    }


def child_memory(which: str, rows: int) -> dict[str, Any]:
    """The peak memory of one call on the 1M batch, above the process's RSS just before the call."""
    batch = build_batch(rows)
    call: Callable[[], bool]
    if which == "gx":
        suites, _note = benchmark_suites()
        warm = batch.iloc[:10_000].copy()
        gx_validate(warm, suites)  # context, lazily imported metric code: not part of the per-batch cost
        del warm

        def call() -> bool:
            return gx_validate(batch, suites)

    elif which == "pandas":
        pandas_checks(batch.iloc[:10_000])

        def call() -> bool:
            return pandas_checks(batch)

    else:
        raise ValueError(f"unknown memory subject {which!r}")
    gc.collect()
    reset = reset_peak_rss()
    rss_before_kb = proc_status_kb("VmRSS")
    maxrss_before_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    ok = call()
    elapsed = time.perf_counter() - start
    hwm_kb = proc_status_kb("VmHWM")
    maxrss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if not ok:
        raise AssertionError(f"the benchmark batch failed {which} validation in the memory run")
    frame_mb = batch.memory_usage(deep=False).sum() / 2**20
    out: dict[str, Any] = {
        "subject": which,
        "seconds": elapsed,
        "frame_mb": frame_mb,
        "rss_before_mb": (rss_before_kb or 0) / 1024,
        "peak_reset": reset,
        "ru_maxrss_before_mb": maxrss_before_kb / 1024,
        "ru_maxrss_after_mb": maxrss_kb / 1024,
        "ru_maxrss_delta_mb": (maxrss_kb - (rss_before_kb or 0)) / 1024,
    }
    if reset and hwm_kb is not None and rss_before_kb is not None:
        out["peak_above_before_mb"] = (hwm_kb - rss_before_kb) / 1024
        out["method"] = "VmHWM after resetting it via /proc/self/clear_refs, minus VmRSS before the call"
    else:
        out["peak_above_before_mb"] = out["ru_maxrss_delta_mb"]
        out["method"] = (
            "ru_maxrss minus VmRSS before the call (peak mark not resettable: an earlier, higher peak would hide it)"
        )
    return out


# --- the orchestrating side ----------------------------------------------------------------------------------------


def _child(mode: str, env: Mapping[str, str], rows: int, repeat: int) -> dict[str, Any]:
    return run_child(
        [sys.executable, "-m", "benchmarks.validation", "--child", mode, "--rows", str(rows), "--repeat", str(repeat)],
        env,
        timeout=900,
    )


def run(scratch: Path, *, rows: int = 1_000_000, repeat: int = 7) -> dict[str, Any]:
    """Run the three child processes; print a summary and return the results."""
    env = {**child_env(scratch), "PYTHONPYCACHEPREFIX": str(scratch / "pycache")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    timing = _child("timing", env, rows, repeat)
    memory = {which: _child(f"memory-{which}", env, rows, repeat) for which in ("pandas", "gx")}
    r = ratio(timing["gx_s"], timing["pandas_s"])
    results: dict[str, Any] = {
        "benchmark": "validation",
        "method": {
            "rows": rows,
            "repeat": repeat,
            "interleaved": "GX and pandas alternate in one process; the order reverses each repetition; one "
            "untimed warm-up call of each first",
            "subject": "airloop.adapters.expectations.validate(df, load_suites(get_spec('bikes'), expectations), "
            "keys=['ts']) (BOOLEAN_ONLY pass per suite)",
            "baseline": "benchmarks.validation.pandas_checks: the same expectations as vectorised pandas",
            "suites": timing["suites_note"],
            "batch": "include/data/bike_sharing/hour.csv without hum == 0 rows, resampled with replacement "
            "(seed 0), ts = hourly UTC range from 2011-01-01 (unique)",
            "agreement": f"asserted on {timing['agreement_rows']} rows: passing and one failing batch per rule kind, "
            "and on the 1M batch passing and with one hum == 0",
            "memory": "each subject in its own process, after a warm-up call on 10k rows: " + memory["gx"]["method"],
        },
        "expectations": timing["expectations"],
        "gx_s": summary(timing["gx_s"]),
        "pandas_s": summary(timing["pandas_s"]),
        "ratio": r,
        "target": target(r["of_medians"], *TARGET),
        "fixed_cost": {
            "rows": timing["fixed_cost"]["rows"],
            "gx_s": summary(timing["fixed_cost"]["gx_s"]),
            "pandas_s": summary(timing["fixed_cost"]["pandas_s"]),
            "gx_share_of_1m_call": statistics.median(timing["fixed_cost"]["gx_s"]) / statistics.median(timing["gx_s"]),
        },
        "peak_memory_mb": {k: v["peak_above_before_mb"] for k, v in memory.items()},
        "memory": memory,
        "failure_path": timing["failure_path"],
        "agreement": timing["agreement"],
        "gx_profile": timing["gx_profile"],
        "gx_import_s": timing["gx_import_s"],
        "batch_build_s": timing["batch_build_s"],
    }
    print_summary(results)
    return results


def print_summary(results: Mapping[str, Any]) -> None:
    """The headline numbers."""
    m = results["method"]
    r = results["ratio"]
    t = results["target"]
    print(f"\n== validation: bikes suites on {m['rows']:,} rows, GX vs vectorised pandas ({m['repeat']} runs, medians)")
    print(f"  note: {m['suites']}")
    print(
        f"  GX (airloop validate, {results['expectations']} expectations): {fmt_s(results['gx_s']['median'])}, "
        f"pandas: {fmt_s(results['pandas_s']['median'])} → {r['of_medians']:.1f}x "
        f"(paired {r['paired_median']:.1f}x, of minima {r['of_mins']:.1f}x; "
        f"≤{t['limit']:.0f}x {'met' if t['met'] else 'MISSED'})"
    )
    mem = results["memory"]
    print(
        "  peak memory above the process before the call: "
        f"GX {mem['gx']['peak_above_before_mb']:.0f} MB, pandas {mem['pandas']['peak_above_before_mb']:.0f} MB "
        f"(frame {mem['gx']['frame_mb']:.0f} MB; {mem['gx']['method']})"
    )
    fc = results["fixed_cost"]
    print(
        f"  fixed cost per call (the same call on {fc['rows']:,} rows): GX {fmt_s(fc['gx_s']['median'])} "
        f"({fc['gx_share_of_1m_call']:.0%} of its 1M-row time), pandas {fmt_s(fc['pandas_s']['median'])}"
    )
    f = results["failure_path"]
    print(
        f"  failure path once (1 bad hum, SUMMARY re-validation of the failed expectations): {fmt_s(f['gx_s'])} "
        f"(pandas verdict {fmt_s(f['pandas_s'])}); names {f['names_bad_row']}"
    )
    p = results["gx_profile"]
    areas = ", ".join(f"{k} {v:.2f} s" for k, v in p["own_time_by_area_s"].items())
    print(f"  GX under cProfile {p['total_s_under_profiler']:.2f} s: {areas}")
    cum = ", ".join(f"{k} {v:.2f} s" for k, v in p["cumulative_s"].items())
    print(f"  GX cumulative: {cum}; hash_pandas_dataframe called {p['calls_of_hash_pandas_dataframe']}x per batch")
    print(
        f"  → {p['share_hashing_the_frame']:.0%} of GX's profiled time fingerprints the whole frame (GX hashes any "
        "pandas batch under 1 GB, once per get_batch, unless airloop turns it off), "
        f"{p['share_boolean_mask_copies']:.0%} copies it through "
        "boolean masks (row filtering per expectation)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Child entry point (the orchestrating side is :func:`run`, called by ``benchmarks.run``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--child", required=True, choices=("timing", "memory-gx", "memory-pandas"))
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--agreement-rows", type=int, default=5_000)
    args = parser.parse_args(argv)
    if args.child == "timing":
        emit(child_timing(args.rows, args.repeat, args.agreement_rows))
    else:
        emit(child_memory(args.child.removeprefix("memory-"), args.rows))
    return 0


if __name__ == "__main__":
    child_exit(main())
