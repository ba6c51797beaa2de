"""Training data that can be rebuilt: a registered version's training frame from the partition versions it names,
and the collection of the lake's kept versions that no registered version names.

A training run logs its lineage (``lineage/training_data.json``: the window, the validated partitions it read with
their content digests, and the training frame's digest). The lake keeps every version a validated partition held
(:data:`airloop.adapters.lake.KEPT_STAGES`), so :func:`rebuild` finds each named one by its content digest (the
current version or a kept one), checks it, and assembles the frame as training did; :func:`plan_gc` lists the
kept versions no registered version's lineage names, which :func:`collect` deletes. A named version is never
collected, whatever the command is given.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from airloop.core.errors import ExpectedFailure
from airloop.stages.train.record import LABELS_DIGEST_TAG, NO_TABLE_LABELS

if TYPE_CHECKING:
    import pandas as pd

    from airloop.adapters.lake import Lake, Manifest, Stage

log = logging.getLogger(__name__)

#: Where a training run keeps its lineage (see :func:`airloop.stages.train.record.lineage`).
LINEAGE_ARTIFACT = "lineage/training_data.json"
#: Stage whose versions training reads.
STAGE: Stage = "validated"


class RebuildProblem(ExpectedFailure, ValueError):
    """A version's training data cannot be rebuilt; the message names the partition, the digests and the fix."""


@dataclass(frozen=True)
class VersionLineage:
    """What a registered model version says it was trained on (from its MLflow run)."""

    model: str
    version: str
    run_id: str
    lineage: dict[str, Any] | None
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def partitions(self) -> list[dict[str, Any]]:
        return list((self.lineage or {}).get("partitions") or [])

    @property
    def named(self) -> set[tuple[str, str]]:
        """``(partition, content digest)`` of every partition version the lineage names."""
        return {(str(p["partition"]), str(p["content_digest"])) for p in self.partitions}

    @property
    def named_partitions(self) -> set[str]:
        """Partitions named without a digest (a version registered without a lineage artifact: its tag)."""
        if self.lineage is not None:
            return set()
        listed = self.tags.get("airloop.partitions", "")
        return {p for p in listed.split(",") if p}


def read_lineage(model: str, version: str) -> VersionLineage:
    """The lineage of a registered version, from the registry (its run's artifact, params and tags)."""
    from airloop.adapters import registry

    c = registry.client()
    try:
        mv = c.get_model_version(model, version)
    except Exception as exc:  # MLflow raises its own RestException for an unknown model or version
        raise RebuildProblem(
            f"Model {model} has no registered version {version!r} in the MLflow registry at "
            f"{registry.tracking_uri()} ({str(exc).splitlines()[0][:200]}). List them in the MLflow UI."
        ) from None
    run_id = str(mv.run_id or "")
    if not run_id:
        raise RebuildProblem(f"{model} v{version} names no MLflow run, so it has no lineage to rebuild from.")
    run = c.get_run(run_id)
    return VersionLineage(
        model=model,
        version=str(mv.version),
        run_id=run_id,
        lineage=registry.run_dict(run_id, LINEAGE_ARTIFACT),
        params=dict(run.data.params),
        tags=dict(run.data.tags),
    )


def registered_lineages(model: str) -> list[VersionLineage]:
    """The lineage of every registered version of a model (none when it has no registered model)."""
    from airloop.adapters import registry

    c = registry.client()
    versions = c.search_model_versions(f"name = '{model}'")
    return [read_lineage(model, str(v.version)) for v in sorted(versions, key=lambda v: int(v.version))]


# --- rebuild ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rebuilt:
    """A rebuilt training frame and what was checked."""

    model: str
    version: str
    frame: pd.DataFrame
    checked: list[str]
    notes: list[str]
    frame_digest: str

    def lines(self) -> list[str]:
        return [
            f"Rebuilt the training data of {self.model} v{self.version}: {len(self.frame)} rows, "
            f"frame digest {self.frame_digest[:12]}.",
            *(f"  - {line}" for line in self.checked),
            *self.notes,
        ]


def find_version(lake: Lake, model: str, partition: str, digest: str) -> Manifest | None:
    """The version of a validated partition holding data of ``digest``: the current one, else a kept one."""
    current = lake.manifest(model, STAGE, partition)
    if current is not None and current.content_digest == digest:
        return current
    for kept in lake.versions(model, STAGE, partition):
        if kept.content_digest == digest:
            return kept
    return None


def _gone(model: str, version: str, ref: Mapping[str, Any], lake: Lake) -> RebuildProblem:
    current = lake.manifest(model, STAGE, str(ref["partition"]))
    kept = [m.content_digest[:12] for m in lake.versions(model, STAGE, str(ref["partition"]))]
    now = f"current version holds {current.content_digest[:12]}" if current else "no current version"
    return RebuildProblem(
        f"Cannot rebuild {model} v{version}: validated partition {ref['partition']} of "
        f"{lake.partition_url(model, STAGE, str(ref['partition']))} no longer holds the version it was trained on "
        f"(expected content digest {ref['content_digest']}; {now}; kept versions: {', '.join(kept) or 'none'}). "
        "`airloop lake gc` never removes a version a registered model version names, so it was removed or "
        "overwritten outside airloop (or before versions were kept). Restore it from a backup of the lake, or "
        "retrain."
    )


def rebuild(lake: Lake, found: VersionLineage, time_column: str) -> Rebuilt:
    """Rebuild a version's training frame from the partition versions its lineage names, checking every digest.

    Each partition version is found by its content digest and its rows' digest recomputed (a tampered file fails
    here); the frame is assembled as training does (the lineage's columns, rows inside the window, sorted by
    time) and its digest compared with the one the run logged. Raises :class:`RebuildProblem` naming the
    partition and the expected and actual digests.
    """
    import pandas as pd

    from airloop.adapters.lake import content_digest

    model, version = found.model, found.version
    if found.lineage is None:
        raise RebuildProblem(
            f"{model} v{version} (MLflow run {found.run_id}) has no {LINEAGE_ARTIFACT}: it was not trained by "
            "airloop's train stage, so there is no lineage to rebuild from."
        )
    frames, checked = _checked_partitions(lake, found)
    if not frames:
        raise RebuildProblem(f"The lineage of {model} v{version} names no partition: nothing to rebuild.")
    frame = _training_frame(pd.concat(frames, ignore_index=True), found, time_column)
    digest = content_digest(frame)
    return Rebuilt(model, version, frame, checked, _frame_notes(found, digest, time_column), digest)


def _checked_partitions(lake: Lake, found: VersionLineage) -> tuple[list[pd.DataFrame], list[str]]:
    """Every partition version the lineage names, read and its content digest checked; a line per partition."""
    from airloop.adapters.lake import content_digest

    model, version = found.model, found.version
    frames, checked = [], []
    for ref in found.partitions:
        partition, expected = str(ref["partition"]), str(ref["content_digest"])
        manifest = find_version(lake, model, partition, expected)
        if manifest is None:
            raise _gone(model, version, ref, lake)
        full = lake.read_version(manifest)
        actual = content_digest(full)
        if actual != expected:
            raise RebuildProblem(
                f"Cannot rebuild {model} v{version}: validated partition {partition} (version {manifest.version}, "
                f"{lake.data_url(manifest)}) does not hold what it was trained on: expected content digest "
                f"{expected}, actual {actual}. Its file was changed outside airloop; restore it from a backup of "
                "the lake, or retrain."
            )
        where = "current" if lake.manifest(model, STAGE, partition) == manifest else "kept"
        checked.append(
            f"{partition}: {manifest.rows} rows, digest {expected[:12]} matches ({where} {manifest.version})"
        )
        frames.append(full)
    return frames, checked


def _training_frame(frame: pd.DataFrame, found: VersionLineage, time_column: str) -> pd.DataFrame:
    """The frame as training assembled it: the lineage's columns, rows inside its window, sorted by time."""
    import pandas as pd

    features = json.loads(found.params["features"]) if "features" in found.params else None
    target = found.params.get("target")
    if features is not None and target is not None:
        wanted = [*features, target, time_column]
        frame = frame[[c for c in wanted if c in frame.columns]]
    window = (found.lineage or {}).get("window") or {}
    times = pd.to_datetime(frame[time_column], utc=True)
    inside = pd.Series(True, index=frame.index)
    if window.get("start"):
        inside &= times >= pd.Timestamp(datetime.fromisoformat(window["start"]))
    if window.get("end"):
        inside &= times < pd.Timestamp(datetime.fromisoformat(window["end"]))
    return frame.loc[inside].sort_values(time_column, kind="stable").reset_index(drop=True)


def _frame_notes(found: VersionLineage, digest: str, time_column: str) -> list[str]:
    """The training frame's digest checked against the logged one (or why it is not); raises on a mismatch."""
    model, version = found.model, found.version
    logged = (found.lineage or {}).get("content_digest") or found.tags.get("airloop.dataset_digest")
    if found.tags.get(LABELS_DIGEST_TAG, NO_TABLE_LABELS) != NO_TABLE_LABELS:
        return [
            f"Labels: this run took its labels from the warehouse table `labels` (labels digest "
            f"{found.tags[LABELS_DIGEST_TAG][:12]}); the rebuilt frame holds the validated partitions' columns, and "
            "the training frame's digest (features joined with those labels) is not checked here."
        ]
    if not logged:
        return ["The run logged no training frame digest: the partitions' digests were checked."]
    if digest != logged:
        raise RebuildProblem(
            f"Cannot rebuild {model} v{version}: every partition matches, but the assembled training frame "
            f"does not: expected digest {logged}, actual {digest} (the time column `{time_column}` or the "
            "columns read differ from training's). Check the spec's source.time_column."
        )
    return [f"Training frame digest {logged[:12]} matches."]


# --- collection -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Collectable:
    """A kept partition version that no registered version names and that is not current."""

    model: str
    partition: str
    version: str
    content_digest: str
    rows: int
    size: int
    manifest: Manifest

    def line(self) -> str:
        return (
            f"{self.model}/{STAGE}/{self.partition}/{self.version}: {self.rows} rows, {self.size} bytes "
            f"(digest {self.content_digest[:12]})"
        )


@dataclass(frozen=True)
class GcPlan:
    """What ``airloop lake gc`` found: versions to delete and versions kept because a lineage names them."""

    collectable: list[Collectable]
    named: list[str]

    @property
    def size(self) -> int:
        return sum(c.size for c in self.collectable)


def plan_gc(lake: Lake, lineages: Mapping[str, Iterable[VersionLineage]]) -> GcPlan:
    """The kept versions of each model's validated partitions that no registered version's lineage names.

    ``lineages`` maps each model to the lineages of all its registered versions. A version registered without a
    lineage artifact names its partitions only (tag ``airloop.partitions``): every version of those is kept.
    """
    collectable, named_lines = [], []
    for model, found in lineages.items():
        found = list(found)
        named = set().union(*(f.named for f in found)) if found else set()
        whole = set().union(*(f.named_partitions for f in found)) if found else set()
        for partition in lake.kept_partitions(model, STAGE):
            current = lake.manifest(model, STAGE, partition)
            for kept in lake.versions(model, STAGE, partition):
                if current is not None and current.version == kept.version:
                    continue
                if (partition, kept.content_digest) in named or partition in whole:
                    by = sorted(f"v{f.version}" for f in found if (partition, kept.content_digest) in f.named)
                    named_lines.append(
                        f"{model}/{STAGE}/{partition}/{kept.version}: named by {', '.join(by) or 'a version'}"
                    )
                    continue
                collectable.append(
                    Collectable(
                        model, partition, kept.version, kept.content_digest, kept.rows, lake.version_size(kept), kept
                    )
                )
    return GcPlan(collectable, named_lines)


def collect(lake: Lake, plan: GcPlan) -> int:
    """Delete the plan's versions; the bytes freed."""
    freed = 0
    for c in plan.collectable:
        lake.remove_version(c.manifest)
        log.info("Removed %s", c.line())
        freed += c.size
    return freed
