"""Validation of a batch against the data stewards' Great Expectations suites.

Suites are plain GX 1.x suite JSON files in ``expectations/<model>/``, owned by data stewards and only ever
read here (saving a suite through GX would rewrite the steward's file with generated ids).

A passing batch costs one GX pass in ``BOOLEAN_ONLY`` format, which is several times cheaper than the detailed
formats, without the work GX adds beyond the checks (:func:`_lean_gx`). Only when something fails are the failed
expectations evaluated again in ``SUMMARY`` format, which counts every bad row and names a sample of them by the
row keys; each suite's result (the detail of its failures, the verdict of its other expectations) is stored and
a Data Docs site is built from them for the quarantine report.

Failure results are bounded: each failed expectation keeps its exact counts (``unexpected_count``,
``element_count``) but only :data:`FAILURE_SAMPLE` failing values and row keys, so the stored result, the
quarantine note and the Data Docs page of a batch with a million bad rows are about the size of one with a few.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airloop.core.digests import json_digest, short
from airloop.core.errors import ExpectedFailure
from airloop.core.spec import ModelSpec

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

#: kwargs of GX expectations that name columns, checked against the columns a spec knows.
_COLUMN_KWARGS = ("column", "column_A", "column_B")
_COLUMN_LIST_KWARGS = ("column_list", "column_set")
_EXAMPLES = 5
#: How many failing values and row keys each failed expectation keeps in the stored result and Data Docs (GX's
#: ``partial_unexpected_count``); its counts always cover every bad row. Lists GX reports for aggregate rules
#: (an observed set of distinct values, value counts) are cut to the same length in the stored result.
FAILURE_SAMPLE = 20


class SuiteError(ExpectedFailure, ValueError):
    """A suite file that cannot be used; the message names the file, the expectation and the fix."""


@dataclass(frozen=True)
class SuiteFile:
    """One steward-owned suite file, as loaded (never written back)."""

    path: Path
    name: str
    digest: str
    raw: dict[str, Any]

    @property
    def expectation_count(self) -> int:
        return len(self.raw["expectations"])


@dataclass(frozen=True)
class Failure:
    """One failed expectation, with what an on-call engineer needs to act on it."""

    suite: str
    expectation: str
    kwargs: dict[str, Any]
    unexpected_count: int | None = None
    element_count: int | None = None
    examples: list[Any] = field(default_factory=list)
    example_ids: list[Any] = field(default_factory=list)
    observed: Any = None
    error: str | None = None
    notes: str | None = None

    def describe(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items())
        text = f"{self.suite}: {self.expectation}({args})"
        if self.error:
            text += f": could not be evaluated: {self.error}"
        elif self.unexpected_count is not None:
            text += f": {self.unexpected_count} of {self.element_count} rows fail"
            if self.examples:
                text += f"; values {self.examples}"
            if self.example_ids:
                text += f" at {self.example_ids}"
        elif self.observed is not None:
            text += f": observed {self.observed!r}"
        if self.notes:
            text += f" (rule: {self.notes})"
        return text


@dataclass
class Outcome:
    """The verdict on one batch."""

    success: bool
    rows: int
    evaluated: int
    failures: list[Failure]
    suites: list[SuiteFile]
    results: list[dict[str, Any]] = field(default_factory=list)
    docs_index: Path | None = None
    #: Every expectation evaluated, in suite order: ``type``, ``column`` (None when it has none), ``success``.
    checks: list[dict[str, Any]] = field(default_factory=list)

    @property
    def suite_digests(self) -> dict[str, str]:
        return {s.name: s.digest for s in self.suites}

    def report(self, **context: Any) -> dict[str, Any]:
        """The stored validation result: verdict, failures, suite versions and GX's own detailed results."""
        return {
            **context,
            "success": self.success,
            "rows": self.rows,
            "evaluated_expectations": self.evaluated,
            "failed_expectations": len(self.failures),
            "suites": [{"name": s.name, "file": s.path.name, "digest": s.digest} for s in self.suites],
            "failures": [asdict(f) for f in self.failures],
            "gx_results": self.results,
            "checks": self.checks,
        }


def suite_digest(raw: dict[str, Any]) -> str:
    """A short digest of a suite's content (key order and white space do not matter)."""
    return short(json_digest(raw, default=str))


def suite_files(spec: ModelSpec, expectations_dir: Path) -> list[Path]:
    folder = expectations_dir / spec.suite_dir
    if spec.validation.suites:
        return [folder / name for name in spec.validation.suites]
    return sorted(folder.glob("*.json"))


def load_suites(spec: ModelSpec, expectations_dir: Path) -> list[SuiteFile]:
    """Load and check every suite that applies to a model.

    Checks: JSON syntax, the suite shape, known expectation types, columns known to the spec, and that GX
    accepts each expectation's arguments. All problems are reported together.
    """
    files = suite_files(spec, expectations_dir)
    if not files:
        raise SuiteError(
            f"no suites for model {spec.name} in {expectations_dir / spec.suite_dir}: every batch must be "
            "validated. Add a suite JSON file there (see expectations/README.md)."
        )
    problems: list[str] = []
    suites: list[SuiteFile] = []
    for path in files:
        try:
            suites.append(_load_suite(path, spec))
        except SuiteError as exc:
            problems.append(str(exc))
    names = [s.name for s in suites]
    for name in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"suite name {name!r} is used by more than one file: give each suite its own `name`")
    if problems:
        raise SuiteError("\n".join(problems))
    return suites


def load_suite_file(path: Path, spec: ModelSpec) -> SuiteFile:
    """Load and check one suite file for a model (the checks of :func:`load_suites`), wherever it is."""
    return _load_suite(path, spec)


def _load_suite(path: Path, spec: ModelSpec) -> SuiteFile:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SuiteError(f"{path}: cannot be read ({exc.strerror})") from exc
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SuiteError(
            f"{path}: not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}. "
            "Fix the syntax (a JSON linter or `python -m json.tool FILE` shows it)."
        ) from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        raise SuiteError(f'{path}: a suite is a JSON object with a "name" and a list of "expectations"')
    expectations = raw.get("expectations")
    if not isinstance(expectations, list) or not expectations:
        raise SuiteError(f'{path}: "expectations" must be a non-empty list')
    problems = []
    known_types = _known_expectation_types()
    for i, exp in enumerate(expectations):
        where = f"{path}: expectation #{i + 1}"
        if not isinstance(exp, dict) or not isinstance(exp.get("type"), str):
            problems.append(f'{where}: each expectation needs a "type" and "kwargs"')
            continue
        where += f" ({exp['type']})"
        if exp["type"] not in known_types:
            close = sorted(t for t in known_types if exp["type"].split("_")[-1] in t)[:3]
            problems.append(f"{where}: unknown expectation type. Did you mean one of {close or 'the GX gallery'}?")
            continue
        kwargs = exp.get("kwargs", {})
        for key in _COLUMN_KWARGS:
            if key in kwargs and kwargs[key] not in spec.known_columns:
                problems.append(
                    f"{where}: column {kwargs[key]!r} is not a column of model {spec.name}. "
                    f"Known columns: {', '.join(sorted(spec.known_columns))}."
                )
        for key in _COLUMN_LIST_KWARGS:
            unknown = sorted(set(kwargs.get(key) or []) - spec.known_columns)
            if unknown and not (key == "column_set" and kwargs.get("exact_match") is False):
                problems.append(f"{where}: columns {unknown} are not columns of model {spec.name}.")
    if problems:
        raise SuiteError("\n".join(problems))
    try:
        _to_gx_suite(raw)
    except Exception as exc:  # GX raises pydantic and its own errors for bad kwargs
        raise SuiteError(f"{path}: Great Expectations refused the suite: {exc}") from exc
    return SuiteFile(path=path, name=raw["name"], digest=suite_digest(raw), raw=raw)


@lru_cache(maxsize=1)
def _known_expectation_types() -> frozenset[str]:
    from great_expectations.expectations.registry import list_registered_expectation_implementations

    return frozenset(list_registered_expectation_implementations())


def _to_gx_suite(raw: dict[str, Any]) -> Any:
    import great_expectations as gx

    return gx.ExpectationSuite(**{k: v for k, v in raw.items() if k in ("name", "expectations", "meta", "notes")})


def _quiet_gx() -> None:
    """GX logs hundreds of INFO lines per run; on-call reads task logs, so keep only its warnings."""
    logging.getLogger("great_expectations").setLevel(logging.WARNING)


@lru_cache(maxsize=1)
def _context() -> Any:
    """One ephemeral GX context per process: no yml file to race on, nothing written by GX itself."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    _quiet_gx()
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    return ctx


def _batch_definition(ctx: Any) -> Any:
    return (
        ctx.data_sources.add_pandas("airloop")
        .add_dataframe_asset("batch")
        .add_batch_definition_whole_dataframe("whole")
    )


@lru_cache(maxsize=1)
def _shared_batch_definition() -> Any:
    return _batch_definition(_context())


@contextmanager
def _lean_gx() -> Iterator[None]:
    """GX on a pandas batch without two costs that do not check anything (measured in ``benchmarks/validation.py``,
    notes in ``benchmarks/results/README.md``): they made a passing 1M-row batch about 13x the same checks in
    vectorised pandas, and about 3x with both gone. Both are process-wide switches held only for the call (airloop
    validates one batch at a time per process).

    * **The frame's fingerprint.** Each time it fetches the batch (``get_batch``, and again inside each
      ``Batch.validate``) GX's pandas engine hashes the whole frame (``hash_pandas_dataframe``) into the batch
      markers' ``pandas_data_fingerprint``, about a sixth of a passing pass. Nothing of airloop reads it (the stored
      result keeps no GX meta; the partition's own digest names the data), GX does not either, and GX already skips
      it for frames of 1 GB and more (``HASH_THRESHOLD``). GX offers no setting for it, so it is turned off here by
      setting that module constant to 0 for the duration of the call (a GX internal:
      ``tests/unit/test_validation_speed.py`` fails when a GX version stops reading it, or stops fingerprinting
      without it).
    * **Whole-frame copies.** Each per-row (column map) rule drops the column's missing values with
      ``df[df[column].notnull()]``, which copies every column of the batch, even when nothing is missing (pandas'
      boolean selection takes a deep ``copy()`` when the mask is all true): about 40 % of a pass, once per such rule.
      Under pandas' Copy-on-Write mode (a public pandas option, the default from pandas 3) that copy is lazy and
      shares the data, and rows really dropped are taken from the frame as before. GX never writes into the
      selections, so the values checked are the same.
    * **Whole-frame takes.** When the column has missing values that selection is a real copy of every column; a
      column metric is handed its column alone instead (:func:`_column_only`).
    """
    import pandas as pd
    from great_expectations.execution_engine import pandas_execution_engine as engine

    saved = getattr(engine, "HASH_THRESHOLD", None)
    if saved is not None:
        engine.HASH_THRESHOLD = 0
    compute_domain = engine.PandasExecutionEngine.get_compute_domain
    engine.PandasExecutionEngine.get_compute_domain = _column_only(compute_domain)  # type: ignore[method-assign]
    try:
        with pd.option_context("mode.copy_on_write", True):
            yield
    finally:
        engine.PandasExecutionEngine.get_compute_domain = compute_domain  # type: ignore[method-assign]
        if saved is not None:
            engine.HASH_THRESHOLD = saved


def _column_only(compute_domain: Any) -> Any:
    """GX's pandas compute domain, cut to the one column a column metric reads.

    GX hands every column metric the whole batch and a per-row rule then drops the column's missing values from it
    (``df[df[column].notnull()]``): when the column has missing values that takes every column of the batch, a
    whole transient copy of it per such rule (a failing 1M-row batch peaked at 3.4x a passing one's memory for it).
    A column metric reads only its column (``accessor_domain_kwargs["column"]``) and the row index, so the frame
    handed to it is that column alone (a lazy selection under Copy-on-Write). A GX internal:
    ``tests/unit/test_validation_speed.py`` fails if a version stops calling it for column metrics.
    """
    from great_expectations.core.metric_domain_types import MetricDomainTypes

    def column_only(self: Any, domain_kwargs: dict[str, Any], domain_type: Any, accessor_keys: Any = None) -> Any:
        data, compute, accessor = compute_domain(self, domain_kwargs, domain_type, accessor_keys)
        column = accessor.get("column")
        is_column = MetricDomainTypes(domain_type) == MetricDomainTypes.COLUMN
        if is_column and isinstance(column, str) and column in data.columns:
            data = data[[column]]
        return data, compute, accessor

    return column_only


@dataclass(frozen=True)
class DocsTarget:
    """Where to build the Data Docs site of a failing batch, and the GX run it is filed under."""

    folder: Path
    run_name: str
    run_time: datetime


def validate(
    df: pd.DataFrame, suites: list[SuiteFile], *, keys: Sequence[str] | None, docs: DocsTarget | None = None
) -> Outcome:
    """Validate a batch: a cheap boolean pass, and detailed results only if something fails.

    ``keys`` are the columns that identify a row (the spec's ``keys``): a failure's ``example_ids`` name its
    example rows by them: the key's value for one key column, a ``{column: value}`` mapping for several.

    With ``docs``, the detailed pass of a failing batch runs through a checkpoint that also builds its Data
    Docs site, so the batch is validated in detail once, not once for the report and again for the docs.
    """
    with _lean_gx():
        return _validate(df, suites, keys=keys, docs=docs)


def _validate(
    df: pd.DataFrame, suites: list[SuiteFile], *, keys: Sequence[str] | None, docs: DocsTarget | None
) -> Outcome:
    batch = _shared_batch_definition().get_batch(batch_parameters={"dataframe": df})
    # One boolean pass over every suite's expectations together: GX's fixed cost per validate call (the batch, the
    # metric graph) is paid once, not once per suite.
    combined = {"name": "airloop-combined", "expectations": [e for s in suites for e in s.raw["expectations"]]}
    result = batch.validate(_to_gx_suite(combined), result_format="BOOLEAN_ONLY")
    evaluated = len(result.results)
    checks = _checks(result)
    if result.success:
        return Outcome(success=True, rows=len(df), evaluated=evaluated, failures=[], suites=suites, checks=checks)
    merged = _detailed(batch, suites, result)
    index = _build_docs(suites, merged, batch.id, docs) if docs is not None else None
    # Each suite's result names which suite a failure belongs to; passing suites are left out.
    detailed = {name: _report_json(r) for name, r in merged.items()}
    per_suite = [(_failures(s, detailed[s.name], keys, df), detailed[s.name]) for s in suites]
    per_suite = [(f, j) for f, j in per_suite if f]
    return Outcome(
        success=False,
        rows=len(df),
        evaluated=evaluated,
        failures=[f for fs, _ in per_suite for f in fs],
        suites=suites,
        results=[j for _, j in per_suite],
        docs_index=index,
        checks=checks,
    )


def _config_key(config: Any) -> str:
    """An expectation's identity across GX passes: its type, arguments, meta and severity (GX adds the batch's id to
    the arguments, and an id to an expectation registered in a context)."""
    raw = {k: v for k, v in config.to_json_dict().items() if k != "id"}
    raw["kwargs"] = {k: v for k, v in (raw.get("kwargs") or {}).items() if k != "batch_id"}
    return json.dumps(raw, sort_keys=True, default=str)


def _detailed(batch: Any, suites: list[SuiteFile], boolean: Any) -> dict[str, Any]:
    """Every suite's result for a failing batch: GX's detailed (bounded ``SUMMARY``) result for each expectation the
    boolean pass failed, its boolean result for each one it passed, in the suite's order, with GX's statistics.

    Only the failed expectations are evaluated again: a second pass over every expectation in ``SUMMARY`` format
    cost about three times the boolean pass on a 1M-row batch with 10 % bad rows, to learn nothing about the
    expectations that passed (``benchmarks/failing.py``). The verdict of each expectation is the one of the pass that
    evaluated it in detail, so a suite's verdict and statistics are what one ``SUMMARY`` pass would give.
    """
    from great_expectations.core.expectation_validation_result import ExpectationSuiteValidationResult
    from great_expectations.validator.validation_statistics import calc_validation_statistics

    by_key = {_config_key(r.expectation_config): r for r in boolean.results}
    per_suite = {s.name: [_config_key(e.configuration) for e in _to_gx_suite(s.raw).expectations] for s in suites}
    raws = {k: e for s in suites for k, e in zip(per_suite[s.name], s.raw["expectations"], strict=True)}
    missing = [k for ks in per_suite.values() for k in ks if k not in by_key]
    if missing:  # the boolean pass always reports every expectation; this names a GX change if it ever does not
        raise RuntimeError(f"GX reported no result for {missing[:3]}: validation cannot be reported")
    failed = [k for k, r in by_key.items() if not r.success and k in raws]
    again = {"name": "airloop-failed", "expectations": [raws[k] for k in failed]}
    detail = batch.validate(_to_gx_suite(again), result_format=_result_format())
    by_key |= {_config_key(r.expectation_config): r for r in detail.results}
    merged = {}
    for suite in suites:
        results = [by_key[k] for k in per_suite[suite.name]]
        stats = calc_validation_statistics(results)
        merged[suite.name] = ExpectationSuiteValidationResult(
            success=stats.success,
            results=results,
            suite_name=suite.name,
            statistics={
                "evaluated_expectations": stats.evaluated_expectations,
                "successful_expectations": stats.successful_expectations,
                "unsuccessful_expectations": stats.unsuccessful_expectations,
                "success_percent": stats.success_percent,
            },
            meta=dict(detail.meta),
        )
    return merged


def _checks(result: Any) -> list[dict[str, Any]]:
    """Each expectation of the boolean pass: its type, its column (None when it has none) and whether it passed
    (the data quality assertions of the batch's lineage, and of its report)."""
    checks = []
    for r in result.results:
        config = r.expectation_config
        column = (config.kwargs or {}).get("column")
        column = column if isinstance(column, str) else None
        checks.append({"type": str(config.type), "column": column, "success": bool(r.success)})
    return checks


def _result_format() -> dict[str, Any]:
    """GX's detailed format, bounded: exact counts, :data:`FAILURE_SAMPLE` failing values and row indexes per
    expectation.

    ``COMPLETE`` would list every bad value and row (and, for pandas, a query naming every bad row's index), so
    the result, the report and the Data Docs page would grow with the number of bad rows. The rows are named by
    their keys here (:func:`_row_ids`), not through GX's ``unexpected_index_column_names``: with that option GX
    builds a ``{column: value}`` dict for every bad row in Python before cutting the list to the sample
    (``compute_unexpected_pandas_indices``), a third of a failing 1M-row batch's time with 10 % bad rows.
    """
    return {
        "result_format": "SUMMARY",
        "partial_unexpected_count": FAILURE_SAMPLE,
        "return_unexpected_index_query": False,
    }


def _row_ids(df: pd.DataFrame, labels: Sequence[Any], keys: Sequence[str] | None) -> list[Any]:
    """The keys of the sample rows GX names by index label, by the key columns the batch has (a missing one is
    left out: the key check reports it); none when the batch has no key column or its index is not unique."""
    from great_expectations.util import convert_to_json_serializable

    present = [k for k in keys or () if k in df.columns]
    if not present or not labels or not df.index.is_unique:
        return []
    rows = convert_to_json_serializable(df.loc[list(labels), present].to_dict("records"))
    return [_row_id(row, keys or ()) for row in rows]


def _row_id(row: dict[str, Any], keys: Sequence[str]) -> Any:
    """A failing row's key: the value of a single key column, else ``{column: value}`` of every key column."""
    named = {k: row[k] for k in keys if k in row}
    if len(keys) == 1:
        return named.get(keys[0])
    return named or None


def _report_json(result: Any) -> dict[str, Any]:
    """A GX suite result as stored: only what describes the data, so a re-run gives the same report
    (GX's "meta" carries load times)."""
    full = result.to_json_dict()
    for r in full["results"]:  # ids GX generates when a suite is registered in a context differ on every run
        r["expectation_config"].pop("id", None)
        if isinstance(r.get("result"), dict):
            r["result"] = _bounded(r["result"])
    return {k: full[k] for k in ("suite_name", "statistics", "results")}


def _bounded(details: dict[str, Any]) -> dict[str, Any]:
    """An expectation's ``result`` with every list cut to :data:`FAILURE_SAMPLE` items (``<key>_total`` keeps the
    full length). Map rules are already bounded by the result format; this bounds what aggregate rules report, such
    as the observed distinct values, which GX lists in full whatever the format."""
    out: dict[str, Any] = {}
    for key, value in details.items():
        if isinstance(value, dict):
            value = _bounded(value)
        elif isinstance(value, list) and len(value) > FAILURE_SAMPLE:
            out[f"{key}_total"] = len(value)
            value = value[:FAILURE_SAMPLE]
        out[key] = value
    return out


def _exception_message(info: dict[str, Any]) -> str | None:
    """The message of an exception GX caught while evaluating an expectation, or None.

    GX 1.x reports it either flat (``{"raised_exception": True, "exception_message": ...}``) or, for a metric that
    failed, keyed by the metric's id (``{"MetricConfigurationID(...)": {"raised_exception": True, ...}}``).
    """
    if info.get("raised_exception"):
        return str(info.get("exception_message"))
    for value in info.values():
        if isinstance(value, dict) and value.get("raised_exception"):
            return str(value.get("exception_message"))
    return None


def _failures(suite: SuiteFile, result: dict[str, Any], keys: Sequence[str] | None, df: pd.DataFrame) -> list[Failure]:
    failures = []
    for r in result["results"]:
        if r["success"]:
            continue
        config = r["expectation_config"]
        kwargs = {k: v for k, v in config["kwargs"].items() if k != "batch_id"}
        details = r.get("result") or {}
        info = r.get("exception_info") or {}
        ids = _row_ids(df, (details.get("partial_unexpected_index_list") or [])[:_EXAMPLES], keys)
        failures.append(
            Failure(
                suite=suite.name,
                expectation=config["type"],
                kwargs=kwargs,
                unexpected_count=details.get("unexpected_count"),
                element_count=details.get("element_count"),
                examples=list(details.get("partial_unexpected_list") or [])[:_EXAMPLES],
                example_ids=[i for i in ids if i is not None][:_EXAMPLES],
                observed=details.get("observed_value"),
                error=_exception_message(info),
                notes=(config.get("meta") or {}).get("notes"),
            )
        )
    return failures


def _build_docs(suites: list[SuiteFile], merged: dict[str, Any], batch_id: str, docs: DocsTarget) -> Path:
    """Build the Data Docs site of a failing batch in ``docs.folder`` (replaced atomically) from its suites and
    their results (:func:`_detailed`); return its index page.

    GX's own way, a checkpoint with an ``UpdateDataDocsAction``, would validate every suite in detail again and
    rebuild the site once per suite; storing the results in the context's validation results store and building the
    site once gives the same pages (a suite's expectations, each suite's result under the run). A fresh ephemeral
    context per call keeps each batch's site to its own results and avoids any shared GX config file (concurrent
    tasks would race on one).
    """
    import great_expectations as gx
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.base import ProgressBarsConfig
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )

    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    _quiet_gx()
    target_dir = docs.folder
    target_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = target_dir.with_name(f".{target_dir.name}.tmp-{uuid.uuid4().hex}")
    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    ctx.add_data_docs_site(
        site_name="airloop",
        site_config={
            "class_name": "SiteBuilder",
            "show_how_to_buttons": False,  # type: ignore[typeddict-unknown-key]  # GX reads it; its TypedDict omits it
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(staging)},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        },
    )
    run_id = RunIdentifier(run_name=docs.run_name, run_time=docs.run_time)
    try:
        for suite in suites:
            ctx.suites.add(_to_gx_suite(suite.raw))
            result = merged[suite.name]
            result.meta = {**result.meta, "run_id": run_id, "validation_time": run_id.run_time}
            key = ValidationResultIdentifier(ExpectationSuiteIdentifier(name=suite.name), run_id, batch_id)
            ctx.validation_results_store.set(key, result)
        ctx.build_data_docs(site_names=["airloop"])
        if target_dir.exists():
            shutil.rmtree(target_dir)
        os.replace(staging, target_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target_dir / "index.html"
