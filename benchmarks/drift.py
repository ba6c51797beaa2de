"""The monitor's drift check on current frames of 10k, 100k, 1M and 10M rows: the sample cap keeps it bounded.

Targets (DESIGN.md "Speed targets"): "Drift check at 10M current rows ≤ 1.2x its cost at 100k (sample cap); no false
alarm on same-distribution windows." The subject is the drift check as ``airloop.stages.monitor.runner.monitor``
does it, from the full current frame in memory to the ``DriftResult``: ``sample`` both sides to
``monitoring.sample_cap`` (seeded with ``training.seed``), ``clean`` both, predict both with the champion (on the
capped sample only), then ``monitoring.drift(spec, Frames(...))`` (Evidently's ``DataDriftPreset`` + the
predictions' ``ValueDrift``). Each phase is timed on its own (``sample``, ``clean``, ``predict``, ``drift``). What
``monitor`` does around it (reading the lake, loading the champion through MLflow, the HTML report, the warehouse)
is not in the subject.

The baseline is the same check at 100k rows, measured in the same run and interleaved with the other sizes
(the order rotates every repetition): at 100k the cap (50,000 in the bikes spec) already applies, so 10M/100k
shows what the extra 9.9M rows still cost. ``sample`` draws with numpy's ``Generator``, which draws only the rows
it needs, so sampling 10M rows costs about 20 ms. Beside it, informative: the same check without the cap
(``sample_cap`` set above the size) at 100k and 1M, to show what the cap saves.

The data: ``include/data/bike_sharing/hour.csv`` as ``airloop.adapters.datasets.dataset_frame`` reads it (``ts`` from
``dteday`` and ``hr``, in UTC), without its sensor-fault rows (``hum == 0`` on 2011-03-10, which validation
quarantines), reduced to the bikes spec's features, its target and ``ts``, in compact dtypes (integers in the
smallest integer type that holds them, floats as float32: 34 bytes a row, 340 MB at 10M rows instead of 1.1 GB in
int64/float64; the capped sample is what the model and Evidently see, and the dtypes are the same at every size).
The reference: its 2011 rows. The current frames: rows resampled with replacement from the whole data (seed 0),
built once per size. The model: the spec's pipeline fitted once on the 2011 rows with ``max_iter`` 20
(``airloop.stages.train.steps.fit``), used in-process (MLflow's load is not part of the check).

No false alarm: in the same run, ``pairs`` same-distribution comparisons of each kind go through the same check
with the bikes spec's monitoring settings, and the ones that say "drifted" are counted (target 0):
``halves_of_2011`` (two disjoint random halves of the 2011 rows, current against reference) and
``halves_of_a_window`` (a random ``window_days`` window of 2011, as the monitor judges one, split into two
disjoint random halves: a few hundred rows a side, where sampling noise is largest).

One child process (``python -m benchmarks.drift --child timing``) does everything: Evidently's import (7-9 s) and
one warm-up check come before any timing, and the 10M frame's memory goes with the process.
"""

from __future__ import annotations

import argparse
import gc
import resource
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.common import PROJECT_DIR, child_env, child_exit, emit, fmt_s, ratio, run_child, summary, target

if TYPE_CHECKING:
    import pandas as pd

    from airloop.core.spec import ModelSpec
    from airloop.stages.monitor.runner import DriftResult

DEMO_CSV = PROJECT_DIR / "include" / "data" / "bike_sharing" / "hour.csv"
MODEL = "bikes"
SEED = 0
MAX_ITER = 20
SIZES: tuple[int, ...] = (10_000, 100_000, 1_000_000, 10_000_000)
BASELINE_ROWS = 100_000
#: Sizes also measured without the cap (10M uncapped would take minutes of Evidently).
UNCAPPED_SIZES: tuple[int, ...] = (100_000, 1_000_000)
#: Repetitions of the uncapped variants (1M rows through Evidently: several seconds each).
UNCAPPED_REPEAT = 3
PAIRS = 10
TARGET_RATIO = 1.2, "DESIGN.md: drift check at 10M current rows ≤ 1.2x its cost at 100k (sample cap)"
TARGET_FALSE_ALARMS = 0, "DESIGN.md: no false alarm on same-distribution windows"
PHASES = ("sample_s", "clean_s", "predict_s", "drift_s")


def label(rows: int) -> str:
    """10k, 100k, 1M, 10M."""
    if rows >= 1_000_000 and rows % 1_000_000 == 0:
        return f"{rows // 1_000_000}M"
    if rows >= 1_000 and rows % 1_000 == 0:
        return f"{rows // 1_000}k"
    return f"{rows:,}"


# --- the data ------------------------------------------------------------------------------------------------------


def _spec(sample_cap: int | None = None) -> ModelSpec:
    """The bikes spec; with ``sample_cap``, a copy with that cap (the spec file is not touched)."""
    from airloop.core.spec import get_spec

    spec = get_spec(MODEL)
    if sample_cap is None:
        return spec
    return spec.model_copy(update={"monitoring": spec.monitoring.model_copy(update={"sample_cap": sample_cap})})


def load_base(spec: ModelSpec) -> pd.DataFrame:
    """The real data: the spec's features, target and time column (UTC), compact dtypes, no sensor-fault rows."""
    import pandas as pd

    from airloop.adapters.datasets import dataset_frame

    real = dataset_frame(DEMO_CSV.parent)
    real = real[real["hum"] > 0]  # hum == 0 all day on 2011-03-10: a sensor fault validation quarantines
    time_col = spec.source.time_column
    frame = real[[*spec.feature_names, spec.target.name, time_col]].reset_index(drop=True)
    frame[time_col] = frame[time_col].dt.tz_localize("UTC")
    for column in frame.columns:
        if pd.api.types.is_integer_dtype(frame[column]):
            frame[column] = pd.to_numeric(frame[column], downcast="integer")
        elif pd.api.types.is_float_dtype(frame[column]):
            frame[column] = frame[column].astype("float32")
    return frame


def build_current(base: pd.DataFrame, rows: int, seed: int = SEED) -> pd.DataFrame:
    """``rows`` rows resampled with replacement from ``base`` (a fresh frame with a RangeIndex)."""
    import numpy as np
    import pandas as pd

    picks = np.random.default_rng(seed).integers(0, len(base), rows)
    frame = base.take(picks)
    frame.index = pd.RangeIndex(rows)  # in place: reset_index would copy 340 MB at 10M rows
    return frame


# --- the subject ---------------------------------------------------------------------------------------------------


def drift_check(
    spec: ModelSpec, current: pd.DataFrame, reference: pd.DataFrame, model: Any
) -> tuple[DriftResult, dict[str, float], dict[str, int]]:
    """The monitor's steps from the full frames in memory to the ``DriftResult``; the phases' seconds; the rows."""
    from airloop.stages.monitor import runner as monitoring
    from airloop.stages.monitor.runner import PREDICTION, Frames

    m, seed, features = spec.monitoring, spec.training.seed, spec.feature_names
    t0 = time.perf_counter()
    cur = monitoring.sample(current, m.sample_cap, seed)
    ref = monitoring.sample(reference, m.sample_cap, seed)
    t1 = time.perf_counter()
    cur, cur_notes = monitoring.clean(cur, features, "the current window", m.min_rows)
    ref, ref_notes = monitoring.clean(ref, features, "the reference", m.min_rows)
    t2 = time.perf_counter()
    cur[PREDICTION] = model.predict(cur[features])
    ref[PREDICTION] = model.predict(ref[features])
    t3 = time.perf_counter()
    result, _snapshot = monitoring.drift(spec, Frames(reference=ref, current=cur, notes=cur_notes + ref_notes))
    t4 = time.perf_counter()
    phases = {"sample_s": t1 - t0, "clean_s": t2 - t1, "predict_s": t3 - t2, "drift_s": t4 - t3, "total_s": t4 - t0}
    return result, phases, {"current": len(cur), "reference": len(ref)}


def _verdict(result: DriftResult) -> dict[str, Any]:
    return {
        "drifted": result.drifted,
        "share": result.share,
        "drifted_columns": list(result.drifted_columns),
        "scores": {c.column: round(c.score, 4) for c in result.columns},
        "prediction_score": round(result.prediction.score, 4),
        "prediction_drifted": result.prediction.drifted,
    }


# --- the child process ---------------------------------------------------------------------------------------------


def _false_alarms(spec: ModelSpec, reference: pd.DataFrame, model: Any, pairs: int) -> dict[str, Any]:
    """Same-distribution pairs through the same check with the spec's settings; how many say "drifted"."""
    import numpy as np
    import pandas as pd

    time_col = spec.source.time_column
    window = pd.Timedelta(days=spec.monitoring.window_days)
    times = reference[time_col]
    first, last = times.min().normalize(), times.max().normalize() + pd.Timedelta(days=1)
    kinds: dict[str, list[dict[str, Any]]] = {"halves_of_2011": [], "halves_of_a_window": []}
    for i in range(pairs):
        rng = np.random.default_rng(1000 + i)
        for kind in kinds:
            rows = reference
            what: dict[str, Any] = {}
            if kind == "halves_of_a_window":
                start = first + pd.Timedelta(days=int(rng.integers(0, (last - window - first).days + 1)))
                rows = reference[(times >= start) & (times < start + window)]
                what = {"window_start": f"{start:%Y-%m-%d}", "window_days": spec.monitoring.window_days}
            order = rng.permutation(len(rows))
            half = len(rows) // 2
            current = rows.iloc[np.sort(order[:half])].reset_index(drop=True)
            ref = rows.iloc[np.sort(order[half:])].reset_index(drop=True)
            result, phases, sampled = drift_check(spec, current, ref, model)
            kinds[kind].append({**what, "rows": sampled, "seconds": phases["total_s"], **_verdict(result)})
    out: dict[str, Any] = {}
    for kind, checks in kinds.items():
        columns = checks[0]["scores"]
        out[kind] = {
            "pairs": len(checks),
            "drifted": sum(c["drifted"] for c in checks),
            "max_scores": {col: max(c["scores"][col] for c in checks) for col in columns},
            "max_prediction_score": max(c["prediction_score"] for c in checks),
            "checks": checks,
        }
    out["drifted_total"] = sum(v["drifted"] for v in out.values())
    out["threshold"] = spec.monitoring.column_threshold
    out["drift_share"] = spec.monitoring.drift_share
    return out


def child_timing(sizes: Sequence[int], repeat: int, pairs: int, uncapped_repeat: int) -> dict[str, Any]:
    """Build the frames, fit the model, import and warm up Evidently; then the interleaved timings; then pairs."""
    from airloop.stages.train import steps as training

    spec = _spec()
    cap = spec.monitoring.sample_cap
    started = time.perf_counter()
    base = load_base(spec)
    reference = base[base["yr"] == 0].reset_index(drop=True)
    currents = {rows: build_current(base, rows) for rows in sizes}
    build_s = time.perf_counter() - started

    started = time.perf_counter()
    model = training.fit(spec, reference, {"max_iter": MAX_ITER}).pipeline
    fit_s = time.perf_counter() - started

    started = time.perf_counter()
    import evidently  # noqa: F401
    from evidently.metrics import ValueDrift  # noqa: F401
    from evidently.presets import DataDriftPreset  # noqa: F401

    import_s = time.perf_counter() - started
    warm = currents[BASELINE_ROWS] if BASELINE_ROWS in currents else currents[min(sizes)]
    _result, warmup, _rows = drift_check(spec, warm, reference, model)

    # (name, rows, spec): the subject at every size, then the informative uncapped variants.
    variants: list[tuple[str, int, ModelSpec]] = [(f"capped/{n}", n, spec) for n in sizes]
    variants += [(f"uncapped/{n}", n, _spec(10 * n)) for n in UNCAPPED_SIZES if n in sizes and n > cap]
    times: dict[str, dict[str, list[float]]] = {name: {} for name, *_ in variants}
    verdicts: dict[str, list[dict[str, Any]]] = {name: [] for name, *_ in variants}
    sampled: dict[str, dict[str, int]] = {}
    for rep in range(repeat):
        shift = rep % len(variants)
        for name, rows, variant_spec in variants[shift:] + variants[:shift]:
            if name.startswith("uncapped/") and rep >= uncapped_repeat:
                continue
            gc.collect()
            result, phases, sampled[name] = drift_check(variant_spec, currents[rows], reference, model)
            for key, seconds in phases.items():
                times[name].setdefault(key, []).append(seconds)
            verdicts[name].append(_verdict(result))

    alarms = _false_alarms(spec, reference, model, pairs)
    return {
        "sizes": list(sizes),
        "sample_cap": cap,
        "seed": spec.training.seed,
        "base_rows": len(base),
        "reference_rows": len(reference),
        "dtypes": {c: str(t) for c, t in base.dtypes.items()},
        "frame_mb": {str(n): f.memory_usage(deep=False).sum() / 2**20 for n, f in currents.items()},
        "build_s": build_s,
        "fit_s": fit_s,
        "evidently_import_s": import_s,
        "warmup": {"rows": len(warm), **warmup},
        "times": times,
        "sampled_rows": sampled,
        "verdicts": {
            name: {**v[-1], "same_every_repetition": all(x == v[0] for x in v)} for name, v in verdicts.items()
        },
        "false_alarms": alarms,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


# --- the orchestrating side ----------------------------------------------------------------------------------------


def _child(env: Mapping[str, str], sizes: Sequence[int], repeat: int, pairs: int, uncapped: int) -> dict[str, Any]:
    args = ["--sizes", ",".join(map(str, sizes)), "--repeat", str(repeat), "--pairs", str(pairs)]
    args += ["--uncapped-repeat", str(uncapped)]
    return run_child([sys.executable, "-m", "benchmarks.drift", "--child", "timing", *args], env, timeout=1800)


def run(scratch: Path, repeat: int = 7, sizes: Sequence[int] = SIZES, pairs: int = PAIRS) -> dict[str, Any]:
    """The timing child; print a summary and return the results."""
    sizes = sorted({*sizes, BASELINE_ROWS})
    env = {**child_env(scratch / "drift"), "PYTHONPYCACHEPREFIX": str(scratch / "pycache")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    uncapped_repeat = min(repeat, UNCAPPED_REPEAT)
    raw = _child(env, sizes, repeat, pairs, uncapped_repeat)
    times, cap = raw["times"], raw["sample_cap"]
    base = times[f"capped/{BASELINE_ROWS}"]["total_s"]

    def entry(name: str, against: list[float]) -> dict[str, Any]:
        """One variant; its ratio to ``against`` paired by repetition (a variant run in fewer repetitions ran
        in the first ones)."""
        t = times[name]
        return {
            "repeat": len(t["total_s"]),
            "rows_to_evidently": raw["sampled_rows"][name],
            "total_s": summary(t["total_s"]),
            "phases_s": {phase: summary(t[phase]) for phase in PHASES},
            "ratio_to_100k": ratio(t["total_s"], against[: len(t["total_s"])]),
            "verdict": raw["verdicts"][name],
        }

    by_size = {str(n): entry(f"capped/{n}", base) for n in sizes}
    ratios = {
        f"{label(n)}/{label(BASELINE_ROWS)}": by_size[str(n)]["ratio_to_100k"] for n in sizes if n != BASELINE_ROWS
    }
    uncapped = {}
    for name in times:
        kind, _, rows = name.partition("/")
        if kind == "uncapped":
            subject = times[name]["total_s"]
            capped = times[f"capped/{rows}"]["total_s"][: len(subject)]
            uncapped[rows] = {**entry(name, base), "ratio_to_capped": ratio(subject, capped)}
    largest = max(sizes)
    headline = ratios.get(f"{label(largest)}/{label(BASELINE_ROWS)}")
    alarms = raw["false_alarms"]
    n_pairs = sum(v["pairs"] for v in alarms.values() if isinstance(v, dict))
    targets = {}
    if headline is not None:
        targets["ratio"] = {
            **target(headline["of_medians"], *TARGET_RATIO),
            "value": headline["of_medians"],
            "what": f"{label(largest)}/{label(BASELINE_ROWS)}",
        }
    targets["false_alarms"] = {
        **target(alarms["drifted_total"], *TARGET_FALSE_ALARMS),
        "value": alarms["drifted_total"],
        "what": f"same-distribution pairs flagged as drifted, of {n_pairs}",
    }
    results: dict[str, Any] = {
        "benchmark": "drift",
        "method": {
            "repeat": repeat,
            "sizes": sizes,
            "subject": "the drift check as airloop.stages.monitor.runner.monitor does it, from the full current "
            "frame in memory: monitoring.sample (both sides, to spec.monitoring.sample_cap, seed spec.training.seed), "
            "monitoring.clean (both), pipeline.predict (both, on the sample), monitoring.drift(spec, Frames(...)); "
            "bikes spec as is (sample_cap, thresholds, methods, excluded columns)",
            "baseline": f"the same check at {BASELINE_ROWS:,} current rows (already capped to {cap:,})",
            "interleaved": "one process; every variant once per repetition, the order rotating by one each "
            "repetition; gc.collect() before each call; Evidently imported and one warm-up check before timing",
            "data": "hour.csv (dataset_frame, ts in UTC) without hum == 0 rows; the spec's features, target and "
            "ts in compact dtypes (see data.dtypes); reference: its 2011 rows; current: rows resampled with "
            f"replacement from all of it (seed {SEED}), one frame per size, built once",
            "model": f"airloop.stages.train.steps.fit(spec, 2011 rows, {{'max_iter': {MAX_ITER}}}).pipeline, "
            "in-process (no MLflow load)",
            "uncapped": "informative: the same check with sample_cap set to 10x the size (no sampling), in the "
            f"first {uncapped_repeat} repetitions only; ratio_to_capped pairs it with the capped check of those",
            "false_alarms": f"{pairs} pairs of each kind through the same check with the spec's settings: "
            "halves_of_2011 (disjoint random halves of the 2011 rows), halves_of_a_window (a random "
            "window_days window of 2011 split into disjoint random halves); 'drifted' as the monitor judges it",
        },
        "data": {
            "base_rows": raw["base_rows"],
            "reference_rows": raw["reference_rows"],
            "sample_cap": cap,
            "dtypes": raw["dtypes"],
            "frame_mb": raw["frame_mb"],
            "build_s": raw["build_s"],
        },
        "fit_s": raw["fit_s"],
        "evidently_import_s": raw["evidently_import_s"],
        "warmup": raw["warmup"],
        "sizes": by_size,
        "ratios": ratios,
        "uncapped": uncapped,
        "false_alarms": alarms,
        "peak_rss_mb": raw["peak_rss_mb"],
        "targets": targets,
    }
    print_summary(results)
    return results


def _met(t: Mapping[str, Any]) -> str:
    return "met" if t["met"] else "MISSED"


def print_summary(results: Mapping[str, Any]) -> None:
    """The headline numbers."""
    m, d = results["method"], results["data"]
    print(
        f"\n== drift: the monitor's drift check on current frames of {', '.join(label(n) for n in m['sizes'])} rows "
        f"(bikes spec, sample_cap {d['sample_cap']:,}; {m['repeat']} runs interleaved, medians)"
    )
    print(
        f"  reference: the 2011 rows ({d['reference_rows']:,}); model fitted once (max_iter {MAX_ITER}, "
        f"{fmt_s(results['fit_s'])}); untimed: frames built in {fmt_s(d['build_s'])} "
        f"({d['frame_mb'][str(max(m['sizes']))]:.0f} MB at {label(max(m['sizes']))}), Evidently import "
        f"{fmt_s(results['evidently_import_s'])}, warm-up check {fmt_s(results['warmup']['total_s'])}"
    )
    print(
        f"  {'rows':>5}  {'to Evidently':>12}  {'total':>9}  "
        + "  ".join(f"{k.removesuffix('_s'):>9}" for k in PHASES)
        + f"  vs {label(BASELINE_ROWS)}"
    )
    for rows, e in results["sizes"].items():
        p = e["phases_s"]
        print(
            f"  {label(int(rows)):>5}  {e['rows_to_evidently']['current']:>12,}  {fmt_s(e['total_s']['median']):>9}  "
            + "  ".join(f"{fmt_s(p[k]['median']):>9}" for k in PHASES)
            + f"  {e['ratio_to_100k']['of_medians']:.2f}x"
        )
    t = results["targets"]
    for what, r in results["ratios"].items():
        line = f"  {what}: {r['of_medians']:.2f}x (paired {r['paired_median']:.2f}x, of minima {r['of_mins']:.2f}x"
        if "ratio" in t and t["ratio"]["what"] == what:
            line += f"; ≤{t['ratio']['limit']}x {_met(t['ratio'])}"
        print(line + ")")
    sizes = results["sizes"]
    largest, base = str(max(m["sizes"])), str(BASELINE_ROWS)
    if largest != base:
        big, small = sizes[largest]["phases_s"], sizes[base]["phases_s"]
        diff = ", ".join(f"{k.removesuffix('_s')} {big[k]['median'] - small[k]['median']:+.3f} s" for k in PHASES)
        print(f"  {label(int(largest))} minus {label(int(base))} by phase (medians): {diff}")
    if results["uncapped"]:
        text = ", ".join(
            f"{label(int(rows))} {fmt_s(e['total_s']['median'])} ({e['ratio_to_capped']['of_medians']:.1f}x the capped "
            f"check, paired {e['ratio_to_capped']['paired_median']:.1f}x, {e['repeat']} runs; Evidently "
            f"{fmt_s(e['phases_s']['drift_s']['median'])})"
            for rows, e in results["uncapped"].items()
        )
        print(f"  without the cap (informative): {text}")
    fa, tf = results["false_alarms"], t["false_alarms"]
    kinds = [k for k, v in fa.items() if isinstance(v, dict)]
    text = ", ".join(f"{fa[k]['drifted']} of {fa[k]['pairs']} {k}" for k in kinds)
    print(f"  false alarms on same-distribution pairs: {text} (≤{tf['limit']} {_met(tf)})")
    for k in kinds:
        top = sorted(fa[k]["max_scores"].items(), key=lambda kv: -kv[1])[:3]
        print(
            f"    {k}: highest scores {', '.join(f'{c} {s:.3f}' for c, s in top)}, predictions "
            f"{fa[k]['max_prediction_score']:.3f} (column threshold {fa['threshold']}, drift share {fa['drift_share']})"
        )
    print(f"  peak memory of the process: {results['peak_rss_mb']:.0f} MB")


def main(argv: Sequence[str] | None = None) -> int:
    """Child entry point (the orchestrating side is :func:`run`, called by ``benchmarks.run``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--child", required=True, choices=("timing",))
    parser.add_argument("--sizes", required=True, help="comma-separated current frame sizes (rows)")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--pairs", type=int, default=PAIRS)
    parser.add_argument("--uncapped-repeat", type=int, default=UNCAPPED_REPEAT)
    args = parser.parse_args(argv)
    emit(child_timing([int(s) for s in args.sizes.split(",")], args.repeat, args.pairs, args.uncapped_repeat))
    return 0


if __name__ == "__main__":
    child_exit(main())
