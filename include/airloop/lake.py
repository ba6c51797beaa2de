"""The lake: partitions of Parquet files, one per model, stage and data interval.

Layout: ``<root>/<model>/<stage>/<interval key>/`` holding ``part-<digest>.parquet``, optional side files
(reports) and ``_manifest.json``. A partition exists when its manifest does. Writes are atomic: data and
side files go to temporary names and are renamed into place, the manifest is written last (also by rename),
and only then are files of an older version removed. A reader that goes through the manifest therefore
sees either the old partition or the new one, never half of one, and a crash leaves the old one intact.

Writing the same data twice gives byte-identical files (the file name is the content digest and the
manifest carries no timestamps), which is what makes a re-run of an interval a no-op.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import pandas as pd

Stage = Literal["raw", "validated", "quarantine", "predictions"]
STAGES: tuple[Stage, ...] = ("raw", "validated", "quarantine", "predictions")
MANIFEST = "_manifest.json"


class PartitionNotFound(FileNotFoundError):
    """The partition has no manifest: it was never written, or it was removed."""


@dataclass(frozen=True)
class Manifest:
    """What a partition holds. Stored as ``_manifest.json``; carries no timestamps on purpose."""

    model: str
    stage: str
    partition: str
    rows: int
    content_digest: str
    data_file: str
    columns: dict[str, str]
    side_files: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True, default=str) + "\n"


def content_digest(df: pd.DataFrame) -> str:
    """sha256 of a frame's columns, dtypes and values (row order matters, the index does not).

    Independent of the Parquet writer's version, so a digest recorded today still matches the same rows
    written by a later pyarrow.
    """
    import pandas as pd

    h = hashlib.sha256()
    h.update(json.dumps([[str(c), str(t)] for c, t in df.dtypes.items()]).encode())
    if len(df):
        h.update(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes())
    return h.hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class Lake:
    """A lake rooted at a local folder."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def partition_dir(self, model: str, stage: Stage, partition: str) -> Path:
        if stage not in STAGES:
            raise ValueError(f"unknown lake stage {stage!r}; expected one of {', '.join(STAGES)}")
        if not partition or "/" in partition or partition.startswith("."):
            raise ValueError(f"invalid partition key {partition!r}")
        return self.root / model / stage / partition

    def write(
        self,
        model: str,
        stage: Stage,
        partition: str,
        df: pd.DataFrame,
        *,
        side_files: dict[str, bytes] | None = None,
        meta: dict[str, Any] | None = None,
    ) -> Manifest:
        """Write (or replace) a partition atomically and return its manifest."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        target = self.partition_dir(model, stage, partition)
        target.mkdir(parents=True, exist_ok=True)
        digest = content_digest(df)
        data_file = f"part-{digest[:16]}.parquet"
        table = pa.Table.from_pandas(df, preserve_index=False)
        tmp = target / f".{data_file}.tmp-{uuid.uuid4().hex}"
        try:
            pq.write_table(table, tmp, compression="zstd")
            os.replace(tmp, target / data_file)
        finally:
            tmp.unlink(missing_ok=True)
        for name, data in sorted((side_files or {}).items()):
            if name in (MANIFEST, data_file) or "/" in name:
                raise ValueError(f"side file name {name!r} is reserved or not a plain file name")
            _write_atomic(target / name, data)
        manifest = Manifest(
            model=model,
            stage=stage,
            partition=partition,
            rows=len(df),
            content_digest=digest,
            data_file=data_file,
            columns={str(c): str(t) for c, t in df.dtypes.items()},
            side_files=sorted(side_files or {}),
            meta=meta or {},
        )
        self._commit(target, manifest)
        return manifest

    def copy(
        self,
        model: str,
        source: Stage,
        target: Stage,
        partition: str,
        *,
        side_files: dict[str, bytes] | None = None,
        meta: dict[str, Any] | None = None,
    ) -> Manifest:
        """Publish a partition of one stage to another by copying its data file (no decode, no re-encode).

        The same atomic protocol as :meth:`write`: data and side files first, the manifest last.
        """
        manifest = self.manifest(model, source, partition)
        if manifest is None:
            raise PartitionNotFound(f"no {source} partition {partition} for model {model} under {self.root}")
        src_dir = self.partition_dir(model, source, partition)
        dst_dir = self.partition_dir(model, target, partition)
        dst_dir.mkdir(parents=True, exist_ok=True)
        _write_atomic(dst_dir / manifest.data_file, (src_dir / manifest.data_file).read_bytes())
        for name, data in sorted((side_files or {}).items()):
            if name in (MANIFEST, manifest.data_file) or "/" in name:
                raise ValueError(f"side file name {name!r} is reserved or not a plain file name")
            _write_atomic(dst_dir / name, data)
        copied = Manifest(
            **{**asdict(manifest), "stage": target, "side_files": sorted(side_files or {}), "meta": meta or {}}
        )
        self._commit(dst_dir, copied)
        return copied

    def _commit(self, folder: Path, manifest: Manifest) -> None:
        """Make a partition version visible (manifest by rename), then drop files of older versions."""
        _write_atomic(folder / MANIFEST, manifest.to_json().encode())
        keep = {MANIFEST, manifest.data_file, *manifest.side_files}
        for stale in folder.iterdir():
            if stale.name not in keep and not stale.name.startswith("."):
                stale.unlink()

    def manifest(self, model: str, stage: Stage, partition: str) -> Manifest | None:
        path = self.partition_dir(model, stage, partition) / MANIFEST
        try:
            return Manifest(**json.loads(path.read_text()))
        except FileNotFoundError:
            return None

    def read(self, model: str, stage: Stage, partition: str, columns: list[str] | None = None) -> pd.DataFrame:
        """Read a partition through its manifest. Raises :class:`PartitionNotFound` if there is none."""
        import pyarrow.parquet as pq

        manifest = self.manifest(model, stage, partition)
        if manifest is None:
            raise PartitionNotFound(
                f"no {stage} partition {partition} for model {model} under {self.root} "
                f"(run the {model}_ingest DAG for that interval first)"
            )
        path = self.partition_dir(model, stage, partition) / manifest.data_file
        return pq.read_table(path, columns=columns).to_pandas()

    def iter_batches(
        self, model: str, stage: Stage, partition: str, columns: list[str] | None = None, batch_rows: int = 65536
    ) -> Iterator[pd.DataFrame]:
        """Read a partition in bounded batches (memory does not grow with the partition's size)."""
        import pyarrow.parquet as pq

        manifest = self.manifest(model, stage, partition)
        if manifest is None:
            raise PartitionNotFound(f"no {stage} partition {partition} for model {model} under {self.root}")
        # pre_buffer=False: pyarrow's default keeps every row group read so far buffered until the file closes
        # (about 12 MB per million rows), which would make memory grow with the partition.
        with pq.ParquetFile(self.partition_dir(model, stage, partition) / manifest.data_file, pre_buffer=False) as f:
            for batch in f.iter_batches(batch_size=batch_rows, columns=columns):
                yield batch.to_pandas()

    def write_batches(
        self,
        model: str,
        stage: Stage,
        partition: str,
        batches: Iterable[pd.DataFrame],
        *,
        meta: dict[str, Any] | None = None,
    ) -> Manifest:
        """Write a partition from batches, streaming: same atomic protocol and digest as :meth:`write`.

        The digest equals ``content_digest`` of the concatenated frame (the row hashes are computed per batch),
        so a partition written in batches is byte-identical to the same rows written at once.
        """
        import pandas as pd
        import pyarrow as pa
        import pyarrow.parquet as pq

        target = self.partition_dir(model, stage, partition)
        target.mkdir(parents=True, exist_ok=True)
        tmp = target / f".part.tmp-{uuid.uuid4().hex}"
        h, writer, rows, dtypes = hashlib.sha256(), None, 0, None
        try:
            for df in batches:
                if dtypes is None:
                    dtypes = [[str(c), str(t)] for c, t in df.dtypes.items()]
                    h.update(json.dumps(dtypes).encode())
                table = pa.Table.from_pandas(df, preserve_index=False)
                if writer is None:
                    writer = pq.ParquetWriter(tmp, table.schema, compression="zstd")
                if len(df):
                    h.update(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes())
                    writer.write_table(table)
                rows += len(df)
            if writer is None:
                raise ValueError(f"no batches to write for {model}/{stage}/{partition}")
            writer.close()
            digest = h.hexdigest()
            data_file = f"part-{digest[:16]}.parquet"
            os.replace(tmp, target / data_file)
        finally:
            if writer is not None and writer.is_open:
                writer.close()
            tmp.unlink(missing_ok=True)
        manifest = Manifest(
            model=model,
            stage=stage,
            partition=partition,
            rows=rows,
            content_digest=digest,
            data_file=data_file,
            columns=dict(dtypes or []),
            meta=meta or {},
        )
        self._commit(target, manifest)
        return manifest

    def delete(self, model: str, stage: Stage, partition: str) -> bool:
        """Remove a partition: the manifest first (it disappears at once), then its files. True if it existed."""
        target = self.partition_dir(model, stage, partition)
        existed = (target / MANIFEST).exists()
        (target / MANIFEST).unlink(missing_ok=True)
        shutil.rmtree(target, ignore_errors=True)
        return existed

    def partitions(self, model: str, stage: Stage) -> list[str]:
        """Keys of the partitions of a stage that exist (have a manifest), sorted."""
        folder = self.root / model / stage
        if not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir() if (p / MANIFEST).is_file())
