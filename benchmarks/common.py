"""Shared pieces of the benchmarks: the environment of benchmark processes, statistics, machine facts, results.

Every benchmark compares a subject with a baseline measured in the same run, interleaved and repeated, and
reports medians and their ratio: the machines this runs on are shared and noisy, so absolute seconds are not
comparable between runs, ratios are.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

#: The project checkout (the folder holding ``dags/``, ``expectations/`` and ``include/``), from this file's place.
PROJECT_DIR = Path(__file__).resolve().parents[1]
RESULTS_DIR = PROJECT_DIR / "benchmarks" / "results"

#: A child process prints its result as one line starting with this marker (Airflow and GX log to stdout too).
RESULT_MARKER = "AIRLOOP_BENCH_RESULT "

#: Telemetry off in every benchmark process (the Makefile exports the same).
TELEMETRY_OFF = {
    "GX_ANALYTICS_ENABLED": "False",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
}

#: Distributions whose versions are recorded with every result.
VERSIONED = ("apache-airflow", "apache-airflow-task-sdk", "great-expectations", "pandas", "numpy", "airloop")


def bench_env(scratch: Path) -> dict[str, str]:
    """The environment variables of benchmark processes: throw-away homes under ``scratch``, this checkout.

    Nothing reads or writes the developer's own ``./.airloop`` or ``~/airflow``.
    """
    return {
        **TELEMETRY_OFF,
        "AIRFLOW_HOME": str(scratch / "airflow"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_DIR / "dags"),
        "AIRLOOP_HOME": str(scratch / "airloop"),
        "AIRLOOP_PROJECT_DIR": str(PROJECT_DIR),
    }


@contextmanager
def scratch_dir(prefix: str = "airloop-bench-") -> Iterator[Path]:
    """A temporary folder, deleted afterwards."""
    with tempfile.TemporaryDirectory(prefix=prefix) as name:
        yield Path(name)


def child_env(scratch: Path) -> dict[str, str]:
    """The full environment of a child process: ours plus :func:`bench_env`."""
    return {**os.environ, **bench_env(scratch)}


def run_child(args: Sequence[str], env: Mapping[str, str], *, timeout: float = 600) -> dict[str, Any]:
    """Run a child process from the project folder and return the JSON it printed after :data:`RESULT_MARKER`.

    Raises ``RuntimeError`` with the child's output when it fails or prints no result.
    """
    proc = subprocess.run(
        list(args), cwd=PROJECT_DIR, env=dict(env), capture_output=True, text=True, timeout=timeout, check=False
    )
    return parse_child_output(proc)


def parse_child_output(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The result line of a finished child process (see :func:`run_child`)."""
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_MARKER) and proc.returncode == 0:
            result: dict[str, Any] = json.loads(line[len(RESULT_MARKER) :])
            return result
    tail = "\n".join((proc.stdout + "\n" + proc.stderr).strip().splitlines()[-40:])
    raise RuntimeError(f"benchmark child {proc.args!r} exited {proc.returncode} without a result:\n{tail}")


def emit(result: Mapping[str, Any]) -> None:
    """Print a child's result for :func:`parse_child_output`."""
    print(RESULT_MARKER + json.dumps(result, default=str), flush=True)


def summary(samples: Sequence[float]) -> dict[str, Any]:
    """Median, spread and the samples themselves (seconds or bytes)."""
    return {
        "median": statistics.median(samples),
        "min": min(samples),
        "max": max(samples),
        "n": len(samples),
        "samples": [round(s, 6) for s in samples],
    }


def ratio(subject: Sequence[float], baseline: Sequence[float]) -> dict[str, float]:
    """Subject/baseline three ways; ``of_medians`` is the headline figure.

    * ``of_medians``: median over median.
    * ``paired_median``: the median of the per-repetition ratios. The samples are paired by repetition (they were
      interleaved), so this cancels slow drifts of the machine's load.
    * ``of_mins``: best over best. Other processes only ever add time, so on a busy machine the minimum is the
      closest to the intrinsic cost.
    """
    paired = [s / b for s, b in zip(subject, baseline, strict=True) if b > 0]
    return {
        "of_medians": statistics.median(subject) / statistics.median(baseline),
        "paired_median": statistics.median(paired) if paired else float("nan"),
        "of_mins": min(subject) / min(baseline),
    }


def target(value: float, limit: float, source: str) -> dict[str, Any]:
    """A target and whether the measured ratio meets it."""
    return {"limit": limit, "source": source, "met": value <= limit}


def _meminfo_total_mb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    """The checked-out commit (read-only ``git rev-parse``), or None outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=PROJECT_DIR, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on: cores, memory, Python, library versions, load at the time."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    try:
        load = list(os.getloadavg())
    except OSError:
        load = None
    return {
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "memory_total_mb": _meminfo_total_mb(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "versions": {dist: _version(dist) for dist in VERSIONED},
        "load_average_1_5_15": load,
        "git_commit": _git_commit(),
    }


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def write_json(path: Path, data: Mapping[str, Any]) -> Path:
    """Write ``data`` as indented JSON, atomically (a half-written result file is never left behind)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def fmt_s(seconds: float) -> str:
    """Seconds for humans: ms below one second."""
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def proc_status_kb(field: str) -> int | None:
    """A ``/proc/self/status`` field in kB (``VmRSS``, ``VmHWM``), or None where there is no such file."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux ≥ 4.0: ``5`` into ``/proc/self/clear_refs``)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def child_exit(code: int) -> None:
    """End a benchmark child process without the interpreter's teardown (heavy libraries, big frames): nothing
    is left to clean up, and the teardown is not part of any measurement."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
