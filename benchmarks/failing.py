"""Validation of a failing 1M-row batch (10 % bad rows) against a passing one: time, peak memory, result size.

Target (issue "Hardening", bounded failure results): a failing batch validates in ≤ 3x the time and ≤ 3x the peak
memory of a passing batch of the same size, and its stored result does not grow with the number of bad rows.

The subject is what the ingest's validate step does with a batch, minus the lake's I/O: ``validate`` (the cheap
``BOOLEAN_ONLY`` pass; on failure a bounded ``SUMMARY`` pass over the failed expectations only, and the Data Docs
site built once from every suite's result), the row-key checks (``with_key_checks``) and the stored result
serialised as JSON. Both batches are the vendored bike-sharing data resampled as in ``benchmarks/validation.py``
(same suites, row-count maximum lifted); the failing one has 10 % of its rows broken, in equal shares: ``hr`` out of
range (30), an unseen ``weathersit`` (9), ``temp`` infinite, ``hum`` missing and ``ts`` repeating another row's (a
duplicate key, which fails the suite's uniqueness rule and the key check). Every bad row must be counted by some
failure; the benchmark checks it. A third batch, with a single bad value (``hr`` 30 in the middle row), is timed
with them: the cheapest failure, whose cost is all fixed (the second pass, the Data Docs site).

Child processes (``python -m benchmarks.failing --child timing|memory-pass|memory-fail``): ``timing`` times both
batches interleaved (``repeat`` times each, after a warm-up call of each on 10k rows), records the result sizes and
validates the batch with only 0.1 % bad rows once to compare them; each ``memory-*`` child measures one call's peak
memory above the process's RSS just before it.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.common import (
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

BAD_SHARE = 0.10
FEW_BAD_SHARE = 0.001
KEYS = ["ts"]
LIMIT = 3.0
SOURCE = "issue 14 (Hardening), item 6: a failing batch (10 % bad rows) within 3x a passing one in time and memory"
#: The kinds of bad row, each a share of the bad rows: (column, what is done to it).
KINDS = ("hr", "weathersit", "temp", "hum", "ts")


def poison(batch: pd.DataFrame, share: float) -> tuple[pd.DataFrame, dict[str, int]]:
    """A copy of ``batch`` with ``share`` of its rows broken, in equal parts per kind; the bad rows per kind."""
    import numpy as np

    bad = batch.copy()
    picks = np.random.default_rng(1).choice(len(batch), int(len(batch) * share), replace=False)
    counts = {}
    for kind, rows in zip(KINDS, np.array_split(picks, len(KINDS)), strict=True):
        counts[kind] = len(rows)
        if kind == "hr":
            bad.loc[rows, "hr"] = 30
        elif kind == "weathersit":
            bad.loc[rows, "weathersit"] = 9
        elif kind == "temp":
            bad.loc[rows, "temp"] = np.inf
        elif kind == "hum":
            bad.loc[rows, "hum"] = np.nan
        else:  # each picked row takes the ts of the row before it (itself unpicked or not: both repeat the key)
            bad.loc[rows, "ts"] = batch["ts"].to_numpy()[rows - 1 if rows.min() > 0 else rows + 1]
    return bad, counts


def one_bad(batch: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``batch`` with one bad value: ``hr`` 30 in its middle row."""
    bad = batch.copy()
    bad.loc[bad.index[len(bad) // 2], "hr"] = 30
    return bad


def validate_step(df: pd.DataFrame, suites: list[SuiteFile], docs: Path | None) -> tuple[Any, bytes]:
    """The ingest's validate step without the lake: the outcome with key checks, and the stored result's bytes."""
    from airloop.adapters.expectations import DocsTarget, validate
    from airloop.core.spec import get_spec
    from airloop.stages.ingest.runner import with_key_checks

    target_docs = DocsTarget(docs, "bench", datetime(2011, 1, 1, tzinfo=UTC)) if docs else None
    outcome = with_key_checks(validate(df, suites, keys=KEYS, docs=target_docs), df, get_spec("bikes"))
    report = outcome.report(model="bikes", partition="bench")
    return outcome, (json.dumps(report, indent=2, sort_keys=True, default=str) + "\n").encode()


def _docs_bytes(folder: Path) -> int:
    """The Data Docs site's pages (GX's static assets are the same for every site)."""
    return sum(p.stat().st_size for p in folder.rglob("*.html") if "static" not in p.parts)


def _counted(outcome: Any, counts: Mapping[str, int]) -> dict[str, int]:
    """For each kind of bad row, the largest count of a failure that names its column (must be ≥ the bad rows)."""
    found = {}
    for kind in counts:
        names = [f.unexpected_count or 0 for f in outcome.failures if f.kwargs.get("column") == kind]
        if kind == "ts":
            names += [f.unexpected_count or 0 for f in outcome.failures if f.kwargs.get("keys") == KEYS]
        found[kind] = max(names, default=0)
    return found


def _batches(rows: int) -> tuple[list[SuiteFile], str, pd.DataFrame, pd.DataFrame, dict[str, int]]:
    from benchmarks.validation import benchmark_suites, build_batch

    suites, note = benchmark_suites()
    passing = build_batch(rows)
    failing, counts = poison(passing, BAD_SHARE)
    return suites, note, passing, failing, counts


def _warm_up(suites: list[SuiteFile], batches: Sequence[pd.DataFrame], scratch: Path) -> None:
    """One call per batch on 10k rows: the GX context, lazily imported metric and Data Docs code."""
    for i, batch in enumerate(batches):
        validate_step(batch.iloc[:10_000].reset_index(drop=True), suites, scratch / f"warm-{i}")
    gc.collect()


def child_timing(rows: int, repeat: int, scratch: Path) -> dict[str, Any]:
    """Both batches in one process, interleaved (the order reverses each repetition), so a change in the machine's
    load hits both alike; then the sizes of the results, and the same at 0.1 % bad rows once."""
    suites, note, passing, failing, counts = _batches(rows)
    _warm_up(suites, (passing, failing), scratch)
    single = one_bad(passing)
    times: dict[str, list[float]] = {"pass": [], "fail": [], "one_bad": []}
    out: dict[str, Any] = {"rows": rows, "suites_note": note, "bad_rows": counts}
    for i in range(repeat):
        order = [("pass", passing), ("fail", failing), ("one_bad", single)]
        for which, batch in order if i % 2 == 0 else order[::-1]:
            docs = scratch / f"docs-{which}-{i}"
            start = time.perf_counter()
            outcome, report = validate_step(batch, suites, docs)
            times[which].append(time.perf_counter() - start)
            if i == 0:
                out[which] = {
                    "success": outcome.success,
                    "failed_expectations": len(outcome.failures),
                    "result_bytes": len(report),
                    "docs_html_bytes": _docs_bytes(docs) if docs.exists() else 0,
                    "failures": [f.describe()[:300] for f in outcome.failures],
                    "counted": _counted(outcome, counts) if which == "fail" else {},
                }
            shutil.rmtree(docs, ignore_errors=True)
            del outcome, report
            gc.collect()
    out["seconds"] = times
    del failing, single
    few, few_counts = poison(passing, FEW_BAD_SHARE)
    outcome, report = validate_step(few, suites, scratch / "docs-few")
    out["few_bad"] = {
        "share": FEW_BAD_SHARE,
        "bad_rows": few_counts,
        "result_bytes": len(report),
        "docs_html_bytes": _docs_bytes(scratch / "docs-few"),
        "counted": _counted(outcome, few_counts),
    }
    return out


def child_memory(which: str, rows: int, scratch: Path) -> dict[str, Any]:
    """The peak memory of one call on one batch, above the process's RSS just before the call."""
    suites, _note, passing, failing, _counts = _batches(rows)
    batch = passing if which == "pass" else failing
    del passing, failing
    _warm_up(suites, (batch,), scratch)
    reset = reset_peak_rss()
    rss_before_kb = proc_status_kb("VmRSS")
    validate_step(batch, suites, scratch / f"docs-{which}")
    hwm_kb = proc_status_kb("VmHWM")
    maxrss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out: dict[str, Any] = {"which": which, "frame_mb": batch.memory_usage(deep=True).sum() / 2**20}
    if reset and hwm_kb is not None and rss_before_kb is not None:
        out["peak_above_before_mb"] = (hwm_kb - rss_before_kb) / 1024
        out["method"] = "VmHWM after resetting it via /proc/self/clear_refs, minus VmRSS before the call"
    else:
        out["peak_above_before_mb"] = (maxrss_kb - (rss_before_kb or 0)) / 1024
        out["method"] = "ru_maxrss minus VmRSS before the call (peak mark not resettable)"
    return out


def _child(mode: str, env: Mapping[str, str], rows: int, repeat: int, scratch: Path) -> dict[str, Any]:
    args = [sys.executable, "-m", "benchmarks.failing", "--child", mode, "--rows", str(rows)]
    return run_child([*args, "--repeat", str(repeat), "--scratch", str(scratch)], env, timeout=1800)


def run(scratch: Path, *, rows: int = 1_000_000, repeat: int = 3) -> dict[str, Any]:
    """The timing child, then one memory child per batch; print a summary and return the results."""
    env = child_env(scratch)
    timing = _child("timing", env, rows, repeat, scratch / "timing")
    memory = {
        which: _child(f"memory-{which}", env, rows, repeat, scratch / f"memory-{which}") for which in ("pass", "fail")
    }
    passing, failing = timing["pass"], timing["fail"]
    if passing["success"] is not True or failing["success"] is not False:
        raise AssertionError(f"verdicts: passing batch {passing['success']}, failing batch {failing['success']}")
    uncounted = {k: (n, failing["counted"][k]) for k, n in timing["bad_rows"].items() if failing["counted"][k] < n}
    if uncounted:
        raise AssertionError(f"bad rows not counted by any failure (kind: injected, counted): {uncounted}")
    time_ratio = ratio(timing["seconds"]["fail"], timing["seconds"]["pass"])
    one_ratio = ratio(timing["seconds"]["one_bad"], timing["seconds"]["pass"])
    if timing["one_bad"]["success"] is not False:
        raise AssertionError("the batch with one bad value passed")
    memory_ratio = memory["fail"]["peak_above_before_mb"] / max(memory["pass"]["peak_above_before_mb"], 1e-9)
    size_ratio = failing["result_bytes"] / timing["few_bad"]["result_bytes"]
    results: dict[str, Any] = {
        "benchmark": "failing",
        "method": {
            "rows": rows,
            "repeat": repeat,
            "subject": "validate (+ Data Docs on failure) + with_key_checks + the stored result as JSON, as the "
            "ingest's validate step does, without the lake",
            "batches": "benchmarks.validation.build_batch (bikes data resampled, seed 0); the failing one with "
            f"{BAD_SHARE:.0%} bad rows in equal shares of {', '.join(KINDS)}",
            "interleaved": "passing and failing alternate in one process; the order reverses each repetition; one "
            "untimed warm-up call of each on 10k rows first",
            "suites": timing["suites_note"],
            "memory": "each batch in its own process after a warm-up on 10k rows: " + memory["pass"]["method"],
        },
        "pass_s": summary(timing["seconds"]["pass"]),
        "fail_s": summary(timing["seconds"]["fail"]),
        "one_bad_s": summary(timing["seconds"]["one_bad"]),
        "time_ratio": time_ratio,
        "time_ratio_one_bad": one_ratio,
        "peak_memory_mb": {k: v["peak_above_before_mb"] for k, v in memory.items()},
        "memory_ratio": memory_ratio,
        "frame_mb": {k: v["frame_mb"] for k, v in memory.items()},
        "result_bytes": {
            "pass": passing["result_bytes"],
            f"fail_{BAD_SHARE:g}": failing["result_bytes"],
            f"fail_{FEW_BAD_SHARE:g}": timing["few_bad"]["result_bytes"],
        },
        "docs_html_bytes": {
            f"fail_{BAD_SHARE:g}": failing["docs_html_bytes"],
            f"fail_{FEW_BAD_SHARE:g}": timing["few_bad"]["docs_html_bytes"],
        },
        "result_size_ratio_100x_bad_rows": size_ratio,
        "bad_rows": timing["bad_rows"],
        "counted": failing["counted"],
        "failures": failing["failures"],
        "targets": {
            "time": {
                **target(time_ratio["of_medians"], LIMIT, SOURCE),
                "value": time_ratio["of_medians"],
                "what": "time, failing / passing",
            },
            "time_one_bad": {
                **target(one_ratio["of_medians"], LIMIT, SOURCE),
                "value": one_ratio["of_medians"],
                "what": "time, one bad value / passing",
            },
            "memory": {
                **target(memory_ratio, LIMIT, SOURCE),
                "value": memory_ratio,
                "what": "peak memory, failing / passing",
            },
            "result_size": {
                **target(size_ratio, 1.5, "result size does not grow with bad rows (100x the bad rows ≤ 1.5x)"),
                "value": size_ratio,
                "what": f"stored result bytes, {BAD_SHARE:.0%} / {FEW_BAD_SHARE:.1%} bad rows",
            },
        },
    }
    print_summary(results)
    return results


def print_summary(results: Mapping[str, Any]) -> None:
    m = results["method"]
    print(
        f"\n== failing: a {m['rows']:,}-row batch with {BAD_SHARE:.0%} bad rows vs a passing one ({m['repeat']} runs)"
    )
    t = results["targets"]
    r = results["time_ratio"]
    print(
        f"  time: failing {fmt_s(results['fail_s']['median'])}, passing {fmt_s(results['pass_s']['median'])} "
        f"→ {r['of_medians']:.2f}x (paired {r['paired_median']:.2f}x, of minima {r['of_mins']:.2f}x; "
        f"≤{LIMIT:.0f}x {'met' if t['time']['met'] else 'MISSED'})"
    )
    r = results["time_ratio_one_bad"]
    print(
        f"  one bad value: {fmt_s(results['one_bad_s']['median'])} → {r['of_medians']:.2f}x the passing batch "
        f"(paired {r['paired_median']:.2f}x; ≤{LIMIT:.0f}x {'met' if t['time_one_bad']['met'] else 'MISSED'})"
    )
    mem = results["peak_memory_mb"]
    print(
        f"  peak memory above the process before the call: failing {mem['fail']:.0f} MB, passing {mem['pass']:.0f} MB "
        f"→ {results['memory_ratio']:.2f}x (≤{LIMIT:.0f}x {'met' if t['memory']['met'] else 'MISSED'}; "
        f"frame {results['frame_mb']['pass']:.0f} MB)"
    )
    size = results["result_bytes"]
    docs = results["docs_html_bytes"]
    print(
        "  stored result: "
        + ", ".join(f"{k} {v / 1024:.0f} KiB" for k, v in size.items())
        + "; Data Docs pages: "
        + ", ".join(f"{k} {v / 1024:.0f} KiB" for k, v in docs.items())
        + f" ({results['result_size_ratio_100x_bad_rows']:.2f}x for 100x the bad rows; "
        + f"≤{t['result_size']['limit']}x {'met' if t['result_size']['met'] else 'MISSED'})"
    )
    print(f"  bad rows injected {results['bad_rows']}, counted by failures {results['counted']}")


def main(argv: Sequence[str] | None = None) -> int:
    """Child entry point (the orchestrating side is :func:`run`, called by ``benchmarks.run``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--child", required=True, choices=("timing", "memory-pass", "memory-fail"))
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--scratch", type=Path, required=True)
    args = parser.parse_args(argv)
    args.scratch.mkdir(parents=True, exist_ok=True)
    if args.child == "timing":
        emit(child_timing(args.rows, args.repeat, args.scratch))
    else:
        emit(child_memory(args.child.removeprefix("memory-"), args.rows, args.scratch))
    return 0


if __name__ == "__main__":
    child_exit(main())
