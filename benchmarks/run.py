"""Run every benchmark (``make bench``): print ratios against in-run baselines and write ``benchmarks/results/``.

``python -m benchmarks.run [--only parse_time|validation|failing|training|scoring|drift] [--repeat N] [--rows N]
[--strict] [--smoke]``

``--smoke`` (``make bench-smoke``, run by CI) runs every benchmark once on small sizes, so a broken benchmark fails
the build; its figures mean nothing and go to a scratch folder, never over the results of a full run.

Each benchmark writes ``benchmarks/results/<name>.json``; the run also writes ``latest.json`` with all of them,
the machine and the total runtime (see ``benchmarks/results/README.md``). Benchmark processes get throw-away
``AIRFLOW_HOME`` and ``AIRLOOP_HOME`` folders, this checkout as ``AIRLOOP_PROJECT_DIR`` and telemetry off.
The exit status is non-zero when a benchmark could not run (or, with ``--strict``, when a target is missed).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks import drift, failing, loop, parse_time, scoring, training, validation
from benchmarks.common import (
    PROJECT_DIR,
    RESULTS_DIR,
    TELEMETRY_OFF,
    machine_info,
    now_iso,
    scratch_dir,
    write_json,
)

BENCHMARKS: dict[str, Callable[[Path, argparse.Namespace], dict[str, Any]]] = {
    "parse_time": lambda scratch, args: parse_time.run(
        scratch, repeat=args.repeat, **({"regimes": ("cached", "forked")} if args.smoke else {})
    ),
    "validation": lambda scratch, args: validation.run(scratch, rows=args.rows or 1_000_000, repeat=args.repeat),
    # At most 5 runs of each batch: a failing call on 1M rows (with its Data Docs) takes seconds, tens when busy.
    "failing": lambda scratch, args: failing.run(scratch, rows=args.rows or 1_000_000, repeat=min(args.repeat, 5)),
    "training": lambda scratch, args: training.run(scratch, repeat=args.repeat),
    "scoring": lambda scratch, args: scoring.run(
        scratch,
        repeat=args.repeat,
        rows=[args.rows] if args.rows else scoring.SIZES,
        max_iter=args.max_iter,
        model=args.model,
        databases=args.database or scoring.DATABASES,
    ),
    # The smoke run starts the runtime once (with preload) and backfills 3 intervals of each DAG.
    "loop": lambda scratch, args: loop.run(scratch, **({"intervals": 3, "preload": (True,)} if args.smoke else {})),
    "drift": lambda scratch, args: drift.run(
        scratch, repeat=args.repeat, **({"sizes": SMOKE_DRIFT_SIZES, "pairs": 2} if args.smoke else {})
    ),
}

#: ``--smoke``: rows of the validation, failing and scoring batches, and the drift sizes (its baseline is 100k).
SMOKE_ROWS = 20_000
SMOKE_DRIFT_SIZES = (10_000,)


def targets_of(result: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    """Every target in a benchmark result (a dict with ``met`` and ``limit``), with its path in the result."""
    if isinstance(result, dict):
        if "met" in result and "limit" in result:
            return [(path, result)]
        return [hit for key, value in result.items() for hit in targets_of(value, f"{path}/{key}" if path else key)]
    if isinstance(result, list):
        return [hit for i, value in enumerate(result) for hit in targets_of(value, f"{path}[{i}]")]
    return []


def verdict_lines(results: dict[str, Any]) -> list[str]:
    """One line per target of every benchmark run: MET or MISSED, where it is in the results, limit and source."""
    lines = []
    for name, result in results.items():
        for path, t in targets_of(result):
            value = f" ({t['value']:.3g})" if isinstance(t.get("value"), int | float) else ""
            lines.append(
                f"  {'MET   ' if t['met'] else 'MISSED'} {name}/{path}{value}: limit {t['limit']} ({t['source']})"
            )
    return lines


def missed_targets(name: str, result: dict[str, Any]) -> list[str]:
    """The targets a benchmark result misses, as readable lines."""
    missed: list[str] = []
    if name == "parse_time":
        for regime, data in result["regimes"].items():
            for file, entry in data["files"].items():
                for kind, targets in entry["targets"].items():
                    value = entry[f"ratio_{kind}"]["of_medians"]
                    missed += [
                        f"parse_time [{regime}] {file} {kind}: {value:.2f}x > {t['limit']}x ({t['source']})"
                        for t in targets
                        if not t["met"]
                    ]
    elif name == "validation" and not result["target"]["met"]:
        t = result["target"]
        missed.append(f"validation: {result['ratio']['of_medians']:.1f}x > {t['limit']}x ({t['source']})")
    elif name == "training":
        share, t = result["overhead_share"]["in_task"]["median"], result["targets"]["overhead_share"]
        if not t["met"]:
            missed.append(f"training overhead share (in the task): {share:.0%} > {t['limit']:.0%} ({t['source']})")
        seconds, t = result["log_model_s"]["median"], result["targets"]["log_model_s"]
        if not t["met"]:
            missed.append(f"training log_model: {seconds:.3f} s > {t['limit']} s ({t['source']})")
    elif name == "scoring":
        for database, found in result["databases"].items():
            for size, data in found.get("sizes", {}).items():
                t = data["targets"]["throughput"]
                if not t["met"]:
                    value = data["throughput_ratio"]["of_medians"]
                    missed.append(
                        f"scoring {database} {int(size):,} rows: {value:.2f}x the rows/s of predict < {t['limit']}x "
                        f"({t['source']})"
                    )
                t = data["targets"]["memory"]
                if not t["met"]:
                    peak = data["memory_mb"]["subject_process_peak"]["max"]
                    missed.append(
                        f"scoring {database} {int(size):,} rows: peak memory {peak:.0f} MB > {t['limit']:.0f} MB "
                        f"({t['source']})"
                    )
    elif name == "failing":
        for t in result["targets"].values():
            if not t["met"]:
                missed.append(f"failing {t['what']}: {t['value']:.2f}x > {t['limit']}x ({t['source']})")
    elif name == "loop" and not result["targets"]["catch_up"]["met"]:
        t = result["targets"]["catch_up"]
        missed.append(
            f"loop catch-up: {t['value']:.2f}x the no-op DAG's runs per minute < {t['limit']}x ({t['source']})"
        )
    elif name == "drift":
        for key, t in result["targets"].items():
            if not t["met"]:
                value = f"{t['value']:.2f}x" if key == "ratio" else f"{t['value']}"
                missed.append(f"drift {t['what']}: {value} > {t['limit']} ({t['source']})")
    return missed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="airloop benchmarks: ratios against baselines measured in-run")
    parser.add_argument("--only", choices=sorted(BENCHMARKS), action="append", help="run only these (repeatable)")
    parser.add_argument("--repeat", type=int, default=7, help="timed repetitions of each subject (default 7)")
    parser.add_argument(
        "--rows",
        type=int,
        help="rows of the validation batches (default 1M) and of the scoring partition (default: 1M and 10M)",
    )
    parser.add_argument("--max-iter", type=int, help="scoring: max_iter of the scored model (default: the spec's)")
    parser.add_argument(
        "--model",
        choices=sorted(scoring.DATA),
        default=scoring.MODEL,
        help="scoring: the model scored (bikes, a regression, against predict; birds, a classifier, against "
        "predict_proba; default bikes)",
    )
    parser.add_argument(
        "--database",
        choices=scoring.DATABASES,
        action="append",
        help="scoring: the warehouses scored into (repeatable; default sqlite and postgres)",
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="run each benchmark once on small sizes (CI: a broken benchmark fails); results to a scratch folder",
    )
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.smoke:
        args.repeat, args.rows = 1, args.rows or SMOKE_ROWS
    os.environ.update(TELEMETRY_OFF)

    started = time.perf_counter()
    timestamp = now_iso()
    machine = machine_info()
    print(
        f"airloop benchmarks, {timestamp}: {machine['usable_cores']} cores, Python {machine['python']}, "
        + ", ".join(f"{k} {v}" for k, v in machine["versions"].items() if v)
    )
    results: dict[str, Any] = {}
    errors: dict[str, str] = {}
    missed: list[str] = []
    with scratch_dir() as scratch:
        results_dir = scratch / "results" if args.smoke else RESULTS_DIR
        for name in args.only or list(BENCHMARKS):
            bench_started = time.perf_counter()
            try:
                result = BENCHMARKS[name](scratch, args)
            except Exception:
                errors[name] = traceback.format_exc()
                print(f"\n== {name} FAILED\n{errors[name]}", file=sys.stderr)
                continue
            result["runtime_s"] = time.perf_counter() - bench_started
            result["timestamp"] = timestamp
            result["machine"] = machine
            results[name] = result
            missed += missed_targets(name, result)
            path = write_json(results_dir / f"{name}.json", result)
            print(f"  ({result['runtime_s']:.0f} s) → {path.name}")
        total = time.perf_counter() - started
        machine["load_average_1_5_15_at_end"] = machine_info()["load_average_1_5_15"]
        latest = {
            "timestamp": timestamp,
            "total_runtime_s": total,
            "machine": machine,
            "benchmarks": results,
            "missed_targets": missed,
            "errors": errors,
        }
        write_json(results_dir / "latest.json", latest)
    where = "smoke run: results not kept" if args.smoke else f"results in {RESULTS_DIR.relative_to(PROJECT_DIR)}/"
    print(f"\ntotal {total:.0f} s; {where}")
    print("targets (MET or MISSED; ratios against baselines measured in this run):")
    print("\n".join(verdict_lines(results)) or "  none measured")
    if missed:
        print("targets missed:\n  " + "\n  ".join(missed))
    if errors:
        print(f"benchmarks that could not run: {', '.join(errors)}", file=sys.stderr)
        return 1
    return 1 if args.strict and missed else 0


if __name__ == "__main__":
    sys.exit(main())
