"""The data steward's page of a model: its suites in plain words and what each rule did to the recent intervals.

Read from the suite files (``expectations/<model>/*.json``, as ingestion loads them) and the warehouse's
``validation_results`` (one row per validated interval: verdict, the digest of every suite in force, and each
failed expectation with its unexpected count and example values). For every expectation of every suite:

- the rule in plain words (:func:`airloop.core.rules.rule_text`), with its column, bounds and ``mostly``;
- its history over the last intervals: failed (with the unexpected share and example values), passed, or
  passed under another version of the suite (the digest in force then differs from the file now: that version's
  rule may have differed, but no failure of this rule was recorded);

and, per model: the expectations that failed most often, the suite digests in force per interval (marking where
they changed), and the exact ``airloop suites check`` command that dry-runs the suites of a checkout on each
interval. Plain data, unit tested without a server; :mod:`airloop.ui.app` serves it.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airloop.core.jsonable import jsonable
from airloop.core.rules import rule_text, same_rule, share_text

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from airloop.core.spec import ModelSpec

log = logging.getLogger(__name__)

PASS, FAIL, OTHER_VERSION, ABSENT = "pass", "fail", "other-version", "absent"
#: A rule on the target set aside for an interval whose labels were not due when it was validated.
SET_ASIDE = "set-aside"


def check_command(model: str, partition: str, suite_file: str | None = None) -> str:
    """The command that dry-runs the suites of a checkout (or one suite file) on one interval, writing nothing."""
    only = f" --suite {suite_file}" if suite_file else ""
    return f"airloop suites check {model}{only} --on {partition}"


@dataclass(frozen=True)
class Verdict:
    """What one rule did to one interval."""

    partition: str
    status: str  # pass, fail, other-version (passed under another suite digest), absent (suite not in force)
    unexpected_count: int | None = None
    element_count: int | None = None
    examples: list[Any] = field(default_factory=list)
    observed: Any = None
    error: str | None = None

    @property
    def unexpected_share(self) -> float | None:
        if self.unexpected_count is None or not self.element_count:
            return None
        return self.unexpected_count / self.element_count

    @property
    def summary(self) -> str:
        """The cell's words: ``fail: 22 of 672 rows (3.27%); e.g. 0.0, 0.0`` or ``pass``."""
        if self.status == PASS:
            return "pass"
        if self.status == OTHER_VERSION:
            return "pass (other suite version)"
        if self.status == ABSENT:
            return "suite not in force"
        if self.status == SET_ASIDE:
            return "set aside: the labels were not due when this interval was validated"
        if self.error:
            return f"fail: could not be evaluated: {self.error}"
        share = self.unexpected_share
        text = "fail"
        if self.unexpected_count is not None:
            text += f": {self.unexpected_count} of {self.element_count} rows"
            if share is not None:
                text += f" ({share_text(share)})"
        elif self.observed is not None:
            text += f": observed {self.observed!r}"
        if self.examples:
            text += "; e.g. " + ", ".join(repr(v) for v in self.examples)
        return text


@dataclass
class Rule:
    """One expectation of a suite file, with its history (aligned with :attr:`SuitesPage.intervals`)."""

    index: int  # 1-based position in the file
    type: str
    kwargs: dict[str, Any]
    text: str
    column: str | None
    mostly: float | None
    notes: str | None
    history: list[Verdict] = field(default_factory=list)

    @property
    def failures(self) -> int:
        return sum(v.status == FAIL for v in self.history)


@dataclass
class Suite:
    """One suite file as the page shows it."""

    name: str
    file: str  # as a steward names it in a command: relative to the project when inside it
    digest: str
    notes: str | None
    rules: list[Rule]


@dataclass
class IntervalRow:
    """One validated interval: verdict, suite digests in force (and which changed since the interval before)."""

    partition: str
    interval_start: datetime
    interval_end: datetime
    success: bool
    rows: int
    evaluated: int
    failed: int
    validated_at: datetime | None
    digests: dict[str, str]
    changed: list[str]  # suites whose digest differs from the previous (older) interval's, or that came or went
    current: bool  # every suite digest is the one of the files now
    command: str
    report_path: str | None
    docs_path: str | None


@dataclass
class TopFailure:
    """A rule that failed in some of the recent intervals (it may no longer be in the suites)."""

    suite: str
    type: str
    kwargs: dict[str, Any]
    text: str
    intervals: int
    last: str
    worst_share: float | None
    in_force: bool


@dataclass
class SuitesPage:
    """Everything on one model's steward page."""

    model: str
    suite_dir: str
    suites: list[Suite] = field(default_factory=list)
    intervals: list[IntervalRow] = field(default_factory=list)  # newest first
    top_failing: list[TopFailure] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The page as JSON-ready data (the view's ``/api/models/<model>/suites`` answer)."""
        data = asdict(self)
        for suite, raw in zip(data["suites"], self.suites, strict=True):
            for rule, r in zip(suite["rules"], raw.rules, strict=True):
                rule["failures"] = r.failures
                for verdict, v in zip(rule["history"], r.history, strict=True):
                    verdict["unexpected_share"] = v.unexpected_share
                    verdict["summary"] = v.summary
        return jsonable(data)


def _shown_path(path: Path, project: Path | None) -> str:
    if project is not None:
        try:
            return path.resolve().relative_to(project.resolve()).as_posix()
        except ValueError:
            pass
    return str(path)


def verdict(suite: str, rule: dict[str, Any], digest: str, row: dict[str, Any]) -> Verdict:
    """What ``rule`` (an expectation of ``suite``, whose file has ``digest`` now) did to one validated interval."""
    partition = row["partition"]
    for aside in row.get(DEFERRED) or []:
        stored = {"suite": aside.get("suite"), "expectation": aside.get("type"), "kwargs": aside.get("kwargs")}
        if aside.get("action") == "set aside" and same_rule(suite, rule["type"], rule.get("kwargs") or {}, stored):
            return Verdict(partition, SET_ASIDE)
    for failure in row.get("failures") or []:
        if same_rule(suite, rule["type"], rule.get("kwargs") or {}, failure):
            return Verdict(
                partition=partition,
                status=FAIL,
                unexpected_count=failure.get("unexpected_count"),
                element_count=failure.get("element_count"),
                examples=list(failure.get("examples") or []),
                observed=failure.get("observed"),
                error=failure.get("error"),
            )
    digests = row.get("suite_digests") or {}
    if suite not in digests:
        return Verdict(partition, ABSENT)
    return Verdict(partition, PASS if digests[suite] == digest else OTHER_VERSION)


#: Where :func:`load_suites_page` puts an interval's rules set aside (from its validation result) in its row.
DEFERRED = "deferred_label_rules"


def _set_aside(report_path: str | None) -> list[dict[str, Any]]:
    """The rules on the target an interval's validation set aside (its report's ``deferred_label_rules``), when the
    report is a file this process can read; none otherwise (the page then shows those rules as they were stored)."""
    import json

    if not report_path:
        return []
    try:
        report = json.loads(Path(report_path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    deferred = report.get(DEFERRED) if isinstance(report, dict) else None
    return list(deferred.get("rules") or []) if isinstance(deferred, dict) else []


def _intervals(model: str, rows: list[dict[str, Any]], now: dict[str, str]) -> list[IntervalRow]:
    out = []
    for i, row in enumerate(rows):  # newest first
        digests = dict(row.get("suite_digests") or {})
        older = dict(rows[i + 1].get("suite_digests") or {}) if i + 1 < len(rows) else digests
        changed = sorted(n for n in set(digests) | set(older) if digests.get(n) != older.get(n))
        out.append(
            IntervalRow(
                partition=row["partition"],
                interval_start=row["interval_start"],
                interval_end=row["interval_end"],
                success=bool(row["success"]),
                rows=int(row["rows"]),
                evaluated=int(row["evaluated_expectations"]),
                failed=int(row["failed_expectations"]),
                validated_at=row.get("validated_at"),
                digests=digests,
                changed=changed,
                current=digests == now,
                command=check_command(model, row["partition"]),
                report_path=row.get("report_path"),
                docs_path=row.get("docs_path"),
            )
        )
    return out


def _top_failing(rows: list[dict[str, Any]], suites: list[Suite], limit: int) -> list[TopFailure]:
    import json

    found: dict[str, TopFailure] = {}
    for row in reversed(rows):  # oldest first, so ``last`` ends as the newest failing interval
        for f in row.get("failures") or []:
            kwargs = dict(f.get("kwargs") or {})
            suite, kind = str(f.get("suite") or "?"), str(f.get("expectation") or "?")
            # A failure of a rule in force is shown (and counted) as that rule, in its words.
            rule = next((r for s in suites for r in s.rules if same_rule(s.name, r.type, r.kwargs, f)), None)
            if rule is not None:
                suite = next(s.name for s in suites if rule in s.rules)
                kwargs = rule.kwargs
            key = json.dumps([suite, kind, kwargs], sort_keys=True, default=str)
            count, total = f.get("unexpected_count"), f.get("element_count")
            share = count / total if isinstance(count, int) and total else None
            top = found.get(key)
            if top is None:
                text = rule.text if rule is not None else rule_text(kind, kwargs)
                top = found[key] = TopFailure(suite, kind, kwargs, text, 0, "", None, rule is not None)
            top.intervals += 1
            top.last = row["partition"]
            if share is not None and (top.worst_share is None or share > top.worst_share):
                top.worst_share = share
    ranked = sorted(found.values(), key=lambda t: t.last, reverse=True)  # newest failure first among equals
    ranked.sort(key=lambda t: -t.intervals)
    return ranked[:limit]


def load_suites_page(
    spec: ModelSpec,
    engine: Engine,
    expectations_dir: Path,
    *,
    project: Path | None = None,
    limit: int = 12,
) -> SuitesPage:
    """Read one model's steward page: its suite files and its last ``limit`` validated intervals.

    A suite folder that does not load, or a warehouse that cannot be read, is named in ``problems``, not raised:
    the page shows what it can.
    """
    from airloop.adapters import warehouse
    from airloop.adapters.expectations import SuiteError, load_suites

    page = SuitesPage(model=spec.name, suite_dir=_shown_path(expectations_dir / spec.suite_dir, project))
    try:
        files = load_suites(spec, expectations_dir)
    except SuiteError as exc:
        files = []
        page.problems.append(f"The suites do not load (`airloop suites check {spec.name}` says the same):\n{exc}")
    rows: list[dict[str, Any]] = []
    try:
        warehouse.ensure_schema(engine)
        rows = warehouse.recent_validations(engine, spec.name, limit=limit)
        rows = [{**row, DEFERRED: _set_aside(row.get("report_path"))} for row in rows]
    except Exception as exc:  # the page still shows the suites
        log.warning("airloop view: validation results of %s unreadable: %s", spec.name, exc)
        page.problems.append(f"Warehouse not readable ({type(exc).__name__}: {exc}); check the connection.")
    for f in files:
        rules = []
        for i, exp in enumerate(f.raw["expectations"]):
            kwargs = dict(exp.get("kwargs") or {})
            mostly = kwargs.get("mostly")
            rules.append(
                Rule(
                    index=i + 1,
                    type=exp["type"],
                    kwargs=kwargs,
                    text=rule_text(exp["type"], kwargs),
                    column=kwargs.get("column"),
                    mostly=float(mostly) if isinstance(mostly, int | float) else None,
                    notes=(exp.get("meta") or {}).get("notes"),
                    history=[verdict(f.name, exp, f.digest, row) for row in rows],
                )
            )
        notes = (f.raw.get("meta") or {}).get("notes")
        page.suites.append(Suite(f.name, _shown_path(f.path, project), f.digest, notes, rules))
    page.intervals = _intervals(spec.name, rows, {s.name: s.digest for s in page.suites})
    page.top_failing = _top_failing(rows, page.suites, limit=10)
    return page


# --- HTML --------------------------------------------------------------------------------------------------------


def render_suites_page(page: SuitesPage, *, reports_root: Path, models: list[str], user: str) -> str:
    """The steward's page as HTML (every value escaped by Jinja2)."""
    from airloop.core.urls import MOUNT, report_url
    from airloop.ui.board import _environment

    return (
        _environment()
        .get_template("suites.html")
        .render(
            p=page,
            models=models,
            user=user,
            mount=MOUNT,
            report=lambda path: report_url(path, reports_root),
            share=share_text,
            check_command=check_command,
        )
    )
