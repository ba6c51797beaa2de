"""The lake: partitions of Parquet files, one per model, stage and data interval, on a local disk or object storage.

Where (read when a lake is opened with :func:`default_lake`, never at import):

- ``AIRLOOP_LAKE_URL``: the lake's root as a URL, e.g. ``s3://airloop-lake/lake`` (scale-out) or
  ``file:///data/lake``. Unset: ``$AIRLOOP_HOME/lake`` on the local disk (the embedded default).
- On S3 and S3-compatible stores (SeaweedFS, MinIO, moto), botocore reads the standard variables itself:
  ``AWS_ENDPOINT_URL`` (unset: AWS), ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``
  (or a profile, an instance role...). They are read when a process first opens the lake.
- ``AIRLOOP_LAKE_STORAGE_OPTIONS`` (optional): a JSON object of extra fsspec options for the root's filesystem,
  e.g. ``{"config_kwargs": {"s3": {"addressing_style": "path"}}}`` or ``{"requester_pays": true}``.

The same code runs on both: every path goes through one fsspec filesystem (``fsspec.core.url_to_fs``; s3fs for
``s3://``). Only where a local disk and object storage differ in what is atomic does the code branch (publishing
one file: rename locally, one PUT or completed multipart upload on object storage).

Layout: ``<root>/<model>/<stage>/<interval key>/`` holding ``_manifest.json`` and a version folder
``v-<16 hex>/`` with ``part-<digest>.parquet`` and optional side files (reports). The version is a digest of
what the files hold (the data's content digest and each side file's bytes), so the same data written again
lands under the same names (a re-run of an interval changes no byte and, on object storage, uploads nothing),
and files of different versions never share a name: two writers, or a crashed one and the next, never mix files.
Partitions written before versions existed keep their files next to the manifest (``version`` empty) and still
read.

The manifest is the single source of truth, on both backends: a partition exists when its manifest does, and
readers (:meth:`Lake.read`, :meth:`Lake.iter_batches`, :meth:`Lake.partitions`, :meth:`Lake.manifest`) read
exactly the files it lists. Publication is therefore:

1. write the version's data and side files (each atomically: a local temporary file renamed into place, or
   one upload that becomes visible only when complete);
2. write the manifest, last, atomically (rename; on S3 one PUT replaces an object atomically): this is the
   moment the new version becomes visible, all at once;
3. only then delete the files of the version it replaced, and sweep leftovers of crashed writers (files of no
   manifest, older than :data:`STALE_AFTER`, so a writer still uploading is never swept).

In the stages of :data:`KEPT_STAGES` (``validated``) a replaced or deleted version is not deleted but kept: its
manifest is written into its own version folder (before the new manifest replaces it), so a model trained on it
can be rebuilt (``airloop lineage rebuild``). Readers of the partition see only the current version; kept ones
are listed by :meth:`Lake.versions` and removed only by :meth:`Lake.remove_version` (``airloop lake gc``, which
keeps every version a registered model version's lineage names).

A reader thus sees the old version or the new one, never half of one; a crash before step 2 leaves the old one
intact; a reader that read a manifest just before it was replaced reads the new one. :meth:`Lake.delete` removes the
manifest first (the partition disappears at once), then the files (in a kept stage, all but its versions).
Concurrent writers of one partition: the last manifest wins, complete, and the other's files are swept. (airloop
never runs two at once: one DAG run per interval, and one scoring run per model at a time, which publishes a
partition right after the warehouse transaction that replaced its rows commits: :meth:`Lake.staged`. The one case
this layout does not cover: a writer re-publishing exactly the version another is replacing at that moment may lose
its files to the other's clean-up; readers then get :class:`PartitionNotFound` naming the missing file, and running
the interval again repairs it.)

The manifest carries no timestamps, and the content digest is computed from the rows (not the Parquet bytes),
so digests are identical for the same data on every backend and every pyarrow version.

A missing bucket, refused credentials or an unreachable endpoint raise :class:`LakeUnavailable`, whose message
names the lake's URL and what to check; never a bare botocore traceback.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from airloop.adapters.outages import ServiceUnavailable, exception_chain, mask_url
from airloop.core.digests import digest as sha256
from airloop.core.digests import hasher, json_digest, short
from airloop.core.settings import LAKE_URL

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from fsspec import AbstractFileSystem

Stage = Literal["raw", "validated", "quarantine", "predictions", "shadow"]
STAGES: tuple[Stage, ...] = ("raw", "validated", "quarantine", "predictions", "shadow")
MANIFEST = "_manifest.json"
VERSION_PREFIX = "v-"
#: Stages whose replaced (or deleted) versions are kept, not deleted: training reads ``validated``, and a model
#: trained on a version must stay rebuildable. A kept version is its folder ``v-<16 hex>/`` with its own
#: ``_manifest.json`` inside; readers of the partition never see it, ``airloop lake gc`` removes those no
#: registered model version's lineage names.
KEPT_STAGES: tuple[Stage, ...] = ("validated",)


def _kept_folders(part: str, found: Iterable[str]) -> set[str]:
    """The version folders under ``part`` that hold a kept version's manifest (from a listing of ``part``)."""
    kept = set()
    for path in found:
        parts = path[len(part) + 1 :].split("/")
        if len(parts) == 2 and parts[0].startswith(VERSION_PREFIX) and parts[1] == MANIFEST:
            kept.add(parts[0])
    return kept


#: Files under a partition that no manifest lists (a crashed writer's) are removed by the next publication of
#: that partition once they are older than this; younger ones may belong to a writer still uploading.
STALE_AFTER = timedelta(hours=1)

#: S3 error codes that mean the credentials were refused (or do not reach the bucket).
_REFUSED = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AccessDenied",
    "InvalidToken",
    "ExpiredToken",
    "TokenRefreshRequired",
    "AllAccessDisabled",
    "AccountProblem",
    "InvalidClientTokenId",
    "403",
    "Forbidden",
}
_UNREACHABLE = {
    "EndpointConnectionError",
    "ConnectTimeoutError",
    "ConnectionClosedError",
    "ReadTimeoutError",
    "ClientConnectorError",
    "ServerDisconnectedError",
}


class PartitionNotFound(FileNotFoundError):
    """The partition has no manifest: it was never written, or it was removed."""


class LakeUnavailable(ServiceUnavailable):
    """The lake's storage could not be used: missing bucket, refused credentials, unreachable endpoint.

    The message names the lake's URL, the cause and what to check. A plain exception (Airflow retries it):
    an endpoint that was down may be back; a missing bucket or a wrong key fails the same way again.
    """


@dataclass(frozen=True)
class Manifest:
    """What a partition holds. Stored as ``_manifest.json``; carries no timestamps on purpose.

    ``data_file`` and ``side_files`` are plain names inside the version folder ``version`` of the partition
    (directly in the partition's folder when ``version`` is empty: partitions written before versions existed).
    """

    model: str
    stage: str
    partition: str
    rows: int
    content_digest: str
    data_file: str
    columns: dict[str, str]
    side_files: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    version: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True, default=str) + "\n"

    @property
    def files(self) -> list[str]:
        """The files of this version, relative to the partition's folder."""
        prefix = f"{self.version}/" if self.version else ""
        return [f"{prefix}{name}" for name in [self.data_file, *self.side_files]]


def content_digest(df: pd.DataFrame) -> str:
    """sha256 of a frame's columns, dtypes and values (row order matters, the index does not).

    Independent of the Parquet writer's version, so a digest recorded today still matches the same rows
    written by a later pyarrow.
    """
    h = hasher()
    h.update(json.dumps([[str(c), str(t)] for c, t in df.dtypes.items()]).encode())
    if len(df):
        h.update(row_hashes(df).tobytes())
    return h.hexdigest()


def row_hashes(df: pd.DataFrame) -> np.ndarray:
    """Each row's uint64 hash, exactly ``pd.util.hash_pandas_object(df, index=False)``, computed faster.

    The content digest hashes these (its definition since the lake's first version). pandas factorizes every text
    column before hashing it (``categorize=True``), which makes repeated values cheap and unique ones dear: on 100k
    unique row keys factorizing costs one to two times the hashing itself, and a column holding one value in every
    row (a scored partition's provenance, a regression's empty class columns) is still factorized row by row. So,
    per column, the same numbers by a cheaper route: a text column holding one value (or only nulls) hashes that
    value once and repeats it; a text column without nulls whose values look mostly unique is hashed without
    factorizing (pandas documents ``categorize`` as an optimisation: a value's hash does not depend on it, only a
    null's does, hence "without nulls"); any other column goes through pandas as before. The columns' hashes are
    combined by pandas' own ``combine_hash_arrays`` (internal; what ``hash_pandas_object`` combines them with).
    ``tests/unit/test_lake.py`` holds the equality on frames of every kind of column, so a pandas that changed
    either would fail there.
    """
    import numpy as np
    import pandas as pd
    from pandas.core.util.hashing import combine_hash_arrays

    if not df.shape[1]:
        empty: np.ndarray = pd.util.hash_pandas_object(df, index=False).to_numpy()
        return empty
    columns = (_column_hashes(df.iloc[:, i]) for i in range(df.shape[1]))
    return np.asarray(combine_hash_arrays(columns, df.shape[1]), dtype=np.uint64)


#: Rows :func:`_column_hashes` looks at to guess whether a text column's values are mostly unique.
_SAMPLE_ROWS = 1_000


def _column_hashes(column: pd.Series) -> np.ndarray:
    """``pd.util.hash_pandas_object(column, index=False)`` as a uint64 array (see :func:`row_hashes`)."""
    import numpy as np
    import pandas as pd
    from pandas.api.types import infer_dtype

    def by_pandas(part: pd.Series, categorize: bool = True) -> np.ndarray:
        hashed: np.ndarray = pd.util.hash_pandas_object(part, index=False, categorize=categorize).to_numpy()
        return hashed

    n, dtype = len(column), column.dtype
    if not n:
        return by_pandas(column)
    if isinstance(dtype, pd.StringDtype) and dtype.storage == "python":
        values = np.asarray(column.array)  # its own object array: text or pd.NA
    elif dtype == np.dtype(object):
        values = column.to_numpy()
        if infer_dtype(values, skipna=True) not in ("string", "empty"):
            return by_pandas(column)
    else:
        return by_pandas(column)
    first = values[0]
    if isinstance(first, str):
        try:
            same = bool((values == first).all())
        except TypeError:  # pd.NA's comparison has no truth value: a null somewhere, so not one value
            same = False
        if same:
            return np.repeat(by_pandas(column.iloc[:1]), n)
    nulls = column.isna().to_numpy()
    if nulls.all():
        return np.repeat(by_pandas(column.iloc[:1]), n)
    if not nulls.any():
        sample = values[:_SAMPLE_ROWS]
        if len(set(sample.tolist())) * 2 > len(sample):  # mostly unique: factorizing costs more than it saves
            return by_pandas(column, categorize=False)
    return by_pandas(column)


def version_of(digest: str, side_files: Mapping[str, bytes]) -> str:
    """The version folder of a partition holding data of ``digest`` and these side files (same files, same name)."""
    what = {"content_digest": digest, "side_files": {n: sha256(b) for n, b in side_files.items()}}
    return VERSION_PREFIX + short(json_digest(what))


def _check_side_files(side_files: Mapping[str, bytes], data_file: str) -> None:
    for name in side_files:
        if name in (MANIFEST, data_file) or "/" in name or not name or name.startswith("."):
            raise ValueError(f"side file name {name!r} is reserved or not a plain file name")


def _error_code(exc: BaseException) -> str | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        return str(code) if code is not None else None
    return None


def _mtime(info: Mapping[str, Any]) -> float | None:
    """When a listed file was last written (seconds since the epoch), from a local or an S3 listing."""
    value = info.get("mtime") or info.get("LastModified") or info.get("last_modified") or info.get("created")
    if isinstance(value, datetime):
        return value.timestamp()
    return float(value) if isinstance(value, int | float) else None


class Lake:
    """A lake rooted at a local folder or an object-storage URL (``s3://bucket/prefix``).

    ``storage_options`` are passed to the root's fsspec filesystem. Use :func:`default_lake` for the lake
    airloop's settings name.
    """

    def __init__(self, root: str | os.PathLike[str], storage_options: Mapping[str, Any] | None = None) -> None:
        from fsspec.core import split_protocol, url_to_fs
        from fsspec.implementations.local import LocalFileSystem

        url = os.fspath(root)
        options = dict(storage_options or {})
        if split_protocol(url)[0] in ("s3", "s3a"):
            # Listings must show other workers' writes at once: no listing cache (s3fs keeps one by default).
            options.setdefault("use_listings_cache", False)
        self.fs: AbstractFileSystem
        self.fs, path = url_to_fs(url, **options)
        self.local = isinstance(self.fs, LocalFileSystem)
        # s3fs asks for an object's size (HEAD) before reading it in parallel ranges: one GET is enough here.
        self._cat_options = {"max_concurrency": 1} if "s3" in self.fs.protocol else {}
        self._root = path.rstrip("/") or "/"
        self.url = self._root if self.local else self.fs.unstrip_protocol(self._root)

    def __repr__(self) -> str:
        return f"Lake({self.url!r})"

    @property
    def root(self) -> str:
        """The lake's root: a local path, or a URL such as ``s3://bucket/lake``."""
        return self.url

    # Locations --------------------------------------------------------------------------------------------

    def _join(self, *parts: str) -> str:
        return "/".join([self._root.rstrip("/"), *parts])

    def _partition_path(self, model: str, stage: Stage, partition: str) -> str:
        if stage not in STAGES:
            raise ValueError(f"unknown lake stage {stage!r}; expected one of {', '.join(STAGES)}")
        if not partition or "/" in partition or "\\" in partition or partition.startswith("."):
            raise ValueError(f"invalid partition key {partition!r}")
        if not model or "/" in model or model.startswith("."):
            raise ValueError(f"invalid model name {model!r}")
        return self._join(model, stage, partition)

    def _location(self, path: str) -> str:
        return path if self.local else self.fs.unstrip_protocol(path)

    def partition_url(self, model: str, stage: Stage, partition: str) -> str:
        """Where a partition lives, for logs and Asset events: a local path or a URL (``s3://...``)."""
        return self._location(self._partition_path(model, stage, partition))

    def stage_url(self, model: str, stage: Stage) -> str:
        """Where a model's stage lives: a local path or a URL."""
        self._partition_path(model, stage, "k")  # validates model and stage
        return self._location(self._join(model, stage))

    def data_url(self, manifest: Manifest) -> str:
        """Where the data file of a partition version lives: a local path or a URL."""
        part = self._partition_path(manifest.model, manifest.stage, manifest.partition)  # type: ignore[arg-type]
        return self._location(f"{part}/{manifest.files[0]}")

    def files(self, model: str, stage: Stage, partition: str) -> list[str]:
        """Every file under a partition's folder (temporary and unlisted ones included), relative, sorted."""
        part = self._partition_path(model, stage, partition)
        with self._io(f"listing {self._location(part)}"):
            return sorted(p[len(part) + 1 :] for p in self._find(part))

    # Errors -----------------------------------------------------------------------------------------------

    def _endpoint(self) -> str:
        client_kwargs = getattr(self.fs, "client_kwargs", None) or {}
        endpoint = (
            client_kwargs.get("endpoint_url")
            or getattr(self.fs, "endpoint_url", None)
            or os.environ.get("AWS_ENDPOINT_URL_S3")
            or os.environ.get("AWS_ENDPOINT_URL")
        )
        return (
            f"endpoint {mask_url(str(endpoint))}" if endpoint else "the default AWS endpoint (AWS_ENDPOINT_URL unset)"
        )

    def _problem(self, exc: BaseException, doing: str) -> LakeUnavailable | None:
        """The :class:`LakeUnavailable` that ``exc`` means, or None when it is not a storage problem."""
        bucket = self._root.split("/", 1)[0]
        where = f"The lake at {self.url} ({self._endpoint()})"
        settings = LAKE_URL.name + ("" if LAKE_URL.is_set() else " (unset)")
        for link in exception_chain(exc):
            code, name = _error_code(link), type(link).__name__
            cause = f"{code or name}: {' '.join(str(link).split())[:300]}"
            if code == "NoSuchBucket":
                return LakeUnavailable(
                    f"{where} cannot be used: its bucket `{bucket}` does not exist ({cause}), while {doing}.\n"
                    f"What to check: {settings} names the right bucket, AWS_ENDPOINT_URL the right object store, "
                    f"and the bucket was created (the compose stack's objectstore-init service creates it)."
                )
            if code in _REFUSED or (not self.local and isinstance(link, PermissionError)):
                key = "set" if os.environ.get("AWS_ACCESS_KEY_ID") else "unset"
                return LakeUnavailable(
                    f"{where} refused the credentials ({cause}), while {doing}.\n"
                    f"What to check: AWS_ACCESS_KEY_ID ({key}) and AWS_SECRET_ACCESS_KEY are the lake's key pair, "
                    f"that this key may read, write and list bucket `{bucket}`, and AWS_DEFAULT_REGION."
                )
            if name in ("NoCredentialsError", "PartialCredentialsError"):
                return LakeUnavailable(
                    f"{where} cannot be used: no credentials were found ({cause}), while {doing}.\n"
                    "What to check: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or a profile or role) for the "
                    "lake's object store."
                )
            if name in _UNREACHABLE or (not self.local and isinstance(link, ConnectionError | TimeoutError)):
                return LakeUnavailable(
                    f"{where} is unreachable ({cause}), while {doing}.\n"
                    "What to check: the object store is up and reachable from the workers, and AWS_ENDPOINT_URL "
                    "points at it. Airflow retries the task; clear it once the store is back."
                )
            if self.local and isinstance(link, PermissionError):
                return LakeUnavailable(
                    f"The lake at {self.url} cannot be written ({cause}), while {doing}.\n"
                    f"What to check: the permissions of {self.url} for the user running the task, or {settings}."
                )
        return None

    @contextlib.contextmanager
    def _io(self, doing: str) -> Iterator[None]:
        try:
            yield
        except (PartitionNotFound, LakeUnavailable):
            raise
        except Exception as exc:
            problem = self._problem(exc, doing)
            if problem is None:
                raise
            raise problem from None

    # Low-level file operations (one place where a local disk and object storage differ) ---------------------

    def _find(self, path: str, detail: bool = False) -> Any:
        """Every file under ``path`` (one listing on object storage); nothing when there is none."""
        try:
            return self.fs.find(path, detail=detail)
        except FileNotFoundError as exc:
            if self._problem(exc, "listing") is not None:
                raise
            return {} if detail else []

    def _cat(self, path: str) -> bytes | None:
        try:
            return self.fs.cat_file(path, **self._cat_options)
        except FileNotFoundError as exc:
            if self._problem(exc, "reading") is not None:
                raise
            return None

    def _parent(self, path: str) -> str:
        return path.rsplit("/", 1)[0]

    @contextlib.contextmanager
    def _spool(self, near: str) -> Iterator[str]:
        """A local temporary file to write before publishing it (next to ``near`` locally, so a rename moves it)."""
        if self.local:
            self.fs.makedirs(near, exist_ok=True)
            tmp = f"{near}/.tmp-{uuid.uuid4().hex}"
        else:
            fd, tmp = tempfile.mkstemp(prefix="airloop-lake-", suffix=".tmp")
            os.close(fd)
        try:
            yield tmp
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def _publish_file(self, tmp: str, path: str) -> None:
        """Make the local file ``tmp`` the file ``path``, atomically (rename, or one upload)."""
        if self.local:
            self.fs.makedirs(self._parent(path), exist_ok=True)
            os.replace(tmp, path)
            os.utime(path)  # its age counts from publication (see STALE_AFTER)
        else:
            self.fs.put_file(tmp, path)

    def _put_bytes(self, path: str, data: bytes) -> None:
        if self.local:
            with self._spool(self._parent(path)) as tmp:
                with open(tmp, "wb") as f:
                    f.write(data)
                self._publish_file(tmp, path)
        else:
            self.fs.pipe_file(path, data)

    def _copy_file(self, src: str, dst: str) -> None:
        if self.local:
            with self._spool(self._parent(dst)) as tmp:
                shutil.copyfile(src, tmp)
                self._publish_file(tmp, dst)
        else:
            self.fs.cp_file(src, dst)  # server-side on S3: no download, no upload

    def _rm(self, path: str, recursive: bool = False) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(path, recursive=recursive)

    # Publication ------------------------------------------------------------------------------------------

    def _read_manifest(self, part: str) -> Manifest | None:
        data = self._cat(f"{part}/{MANIFEST}")
        return None if data is None else Manifest(**json.loads(data))

    def _present(self, part: str, manifest: Manifest) -> bool:
        return all(self.fs.exists(f"{part}/{name}") for name in manifest.files)

    def _publish(
        self, manifest: Manifest, side_files: Mapping[str, bytes], put_data: Callable[[str], None]
    ) -> Manifest:
        """Data and side files of the version first, the manifest last, then retire what it replaced."""
        part = self._partition_path(manifest.model, manifest.stage, manifest.partition)  # type: ignore[arg-type]
        with self._io(f"writing partition {self._location(part)}"):
            previous = self._read_manifest(part)
            # The same version already published and complete: its files are these very bytes, keep them.
            if previous is None or previous.version != manifest.version or not self._present(part, previous):
                put_data(f"{part}/{manifest.files[0]}")
                for name, data in sorted(side_files.items()):
                    self._put_bytes(f"{part}/{manifest.version}/{name}", data)
            if (
                previous is not None
                and previous.version not in ("", manifest.version)
                and previous.stage in KEPT_STAGES
            ):
                # Kept before it stops being current: a crash in between leaves it kept, never lost.
                self._keep_version(part, previous)
            if previous != manifest:
                self._put_bytes(f"{part}/{MANIFEST}", manifest.to_json().encode())
            self._retire(part, manifest, previous)
        return manifest

    def _retire(self, part: str, current: Manifest, previous: Manifest | None) -> None:
        """Delete the replaced version's files (keep it, in a stage of :data:`KEPT_STAGES`), and leftovers of
        crashed writers older than STALE_AFTER."""
        keep = {MANIFEST, current.version}
        if previous is not None and previous.version != current.version:
            if previous.version and previous.stage in KEPT_STAGES:
                pass  # kept by _publish, before the new manifest was written
            elif previous.version:
                self._rm(f"{part}/{previous.version}", recursive=True)
            else:  # a partition written before versions: its files sit next to the manifest
                for name in previous.files:
                    self._rm(f"{part}/{name}")
        horizon = time.time() - STALE_AFTER.total_seconds()
        newest: dict[str, float] = {}
        found = self._find(part, detail=True)
        keep |= _kept_folders(part, found)
        for path, info in found.items():
            top = path[len(part) + 1 :].split("/", 1)[0]
            if top in keep:
                continue
            written = _mtime(info)
            newest[top] = max(newest.get(top, 0.0), written if written is not None else float("inf"))
        for top, written in sorted(newest.items()):
            if written < horizon:
                self._rm(f"{part}/{top}", recursive=True)

    # Writers ----------------------------------------------------------------------------------------------

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

        self._partition_path(model, stage, partition)
        side = dict(side_files or {})
        digest = content_digest(df)
        data_file = f"part-{digest[:16]}.parquet"
        _check_side_files(side, data_file)
        manifest = Manifest(
            model=model,
            stage=stage,
            partition=partition,
            rows=len(df),
            content_digest=digest,
            data_file=data_file,
            columns={str(c): str(t) for c, t in df.dtypes.items()},
            side_files=sorted(side),
            meta=meta or {},
            version=version_of(digest, side),
        )

        def put_data(path: str) -> None:
            with self._spool(self._parent(path)) as tmp:
                pq.write_table(pa.Table.from_pandas(df, preserve_index=False), tmp, compression="zstd")
                self._publish_file(tmp, path)

        return self._publish(manifest, side, put_data)

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

        The same atomic protocol as :meth:`write`: data and side files first, the manifest last. On S3 the
        copy happens inside the object store.
        """
        manifest = self.manifest(model, source, partition)
        if manifest is None:
            raise PartitionNotFound(f"no {source} partition {partition} for model {model} under {self.url}")
        side = dict(side_files or {})
        _check_side_files(side, manifest.data_file)
        src = f"{self._partition_path(model, source, partition)}/{manifest.files[0]}"
        copied = Manifest(
            **{
                **asdict(manifest),
                "stage": target,
                "side_files": sorted(side),
                "meta": meta or {},
                "version": version_of(manifest.content_digest, side),
            }
        )
        return self._publish(copied, side, lambda path: self._copy_file(src, path))

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
        so a partition written in batches is byte-identical to the same rows written at once. The Parquet file
        is spooled to a local temporary file (next to the partition on a local lake) and published when the
        batches end, so memory stays bounded and a failure mid-way publishes nothing.
        """
        with self.staged(model, stage, partition, meta=meta) as staged:
            staged.write(batches)
            return staged.publish()

    @contextlib.contextmanager
    def staged(
        self, model: str, stage: Stage, partition: str, *, meta: dict[str, Any] | None = None
    ) -> Iterator[StagedPartition]:
        """A partition written in two steps: :meth:`StagedPartition.write` spools its batches (nothing is visible),
        :meth:`StagedPartition.publish` makes it the partition. Left unpublished, it is discarded at the block's end.

        For a writer whose commit point is elsewhere: scoring spools the lake's rows while the warehouse
        transaction inserts them, and publishes only once that transaction has committed.
        """
        part = self._partition_path(model, stage, partition)
        with self._spool(part) as tmp:
            yield StagedPartition(self, model, stage, partition, tmp, meta or {})

    def delete(self, model: str, stage: Stage, partition: str) -> bool:
        """Remove a partition: the manifest first (it disappears at once), then its files. True if it existed.

        In a stage of :data:`KEPT_STAGES` the partition's versions are kept (the current one becomes a kept
        version): readers no longer see the partition, and a model trained on it can still be rebuilt.
        """
        part = self._partition_path(model, stage, partition)
        with self._io(f"deleting partition {self._location(part)}"):
            current = self._read_manifest(part)
            existed = current is not None
            if current is not None and current.version and stage in KEPT_STAGES:
                self._keep_version(part, current)
            if existed:
                self._rm(f"{part}/{MANIFEST}")
            if stage not in KEPT_STAGES:
                self._rm(part, recursive=True)
            else:
                found = self._find(part)
                kept = _kept_folders(part, found)
                for path in found:
                    if path[len(part) + 1 :].split("/", 1)[0] not in kept:
                        self._rm(path)
        return existed

    # Kept versions ----------------------------------------------------------------------------------------

    def _keep_version(self, part: str, manifest: Manifest) -> None:
        """Keep a version that stops being current: its manifest goes into its own folder (written last)."""
        if self._present(part, manifest):
            self._put_bytes(f"{part}/{manifest.version}/{MANIFEST}", manifest.to_json().encode())
        else:  # its files are gone already (removed outside airloop): nothing to keep
            self._rm(f"{part}/{manifest.version}", recursive=True)

    def versions(self, model: str, stage: Stage, partition: str) -> list[Manifest]:
        """The kept versions of a partition (those it held before, see :data:`KEPT_STAGES`), by version name.

        The current version is :meth:`manifest`; a kept version that is also current (the same data published
        again) is listed here too.
        """
        part = self._partition_path(model, stage, partition)
        with self._io(f"listing the versions of {self._location(part)}"):
            found = self._find(part)
            kept = []
            for top in sorted(_kept_folders(part, found)):
                manifest = self._read_manifest(f"{part}/{top}")
                if manifest is not None:
                    kept.append(manifest)
            return kept

    def kept_partitions(self, model: str, stage: Stage) -> list[str]:
        """Keys of the partitions of a stage that hold kept versions (current or withdrawn), sorted."""
        self._partition_path(model, stage, "k")  # validates model and stage
        folder = self._join(model, stage)
        with self._io(f"listing {self._location(folder)}"):
            found = self._find(folder)
        keys = set()
        for path in found:
            parts = path[len(folder) + 1 :].split("/")
            if len(parts) == 3 and parts[1].startswith(VERSION_PREFIX) and parts[2] == MANIFEST:
                keys.add(parts[0])
        return sorted(keys)

    def models(self) -> list[str]:
        """The models that have a folder in the lake, sorted."""
        with self._io(f"listing {self.url}"):
            try:
                found = self.fs.ls(self._root, detail=False)
            except FileNotFoundError:
                return []
        return sorted(
            name for name in (str(p).rstrip("/").rsplit("/", 1)[-1] for p in found) if name and not name.startswith(".")
        )

    def version_size(self, manifest: Manifest) -> int:
        """Bytes a version's folder holds."""
        part = self._partition_path(manifest.model, manifest.stage, manifest.partition)  # type: ignore[arg-type]
        with self._io(f"sizing {self._location(part)}/{manifest.version}"):
            return sum(int(info.get("size") or 0) for info in self._find(f"{part}/{manifest.version}", True).values())

    def read_version(self, manifest: Manifest, columns: list[str] | None = None) -> pd.DataFrame:
        """The rows of one version of a partition (current or kept), from its data file.

        Raises :class:`PartitionNotFound` naming the file when it is gone.
        """
        import pyarrow.parquet as pq

        path = self.data_url(manifest)
        part = self._partition_path(manifest.model, manifest.stage, manifest.partition)  # type: ignore[arg-type]
        with self._io(f"reading {path}"):
            try:
                with pq.ParquetFile(f"{part}/{manifest.files[0]}", filesystem=self.fs) as f:
                    return f.read(columns=columns).to_pandas()
            except FileNotFoundError:
                raise PartitionNotFound(
                    f"version {manifest.version} of {manifest.stage} partition "
                    f"{manifest.partition} of model {manifest.model}: {path} is missing"
                ) from None

    def remove_version(self, manifest: Manifest) -> None:
        """Delete a kept version: its manifest first, then its files. Refuses the partition's current version."""
        part = self._partition_path(manifest.model, manifest.stage, manifest.partition)  # type: ignore[arg-type]
        with self._io(f"removing {self._location(part)}/{manifest.version}"):
            current = self._read_manifest(part)
            if not manifest.version or (current is not None and current.version == manifest.version):
                raise ValueError(
                    f"version {manifest.version or '(unversioned)'} is the current one of {manifest.model}/"
                    f"{manifest.stage}/{manifest.partition}: only kept versions are removed"
                )
            self._rm(f"{part}/{manifest.version}/{MANIFEST}")
            self._rm(f"{part}/{manifest.version}", recursive=True)

    # Readers ----------------------------------------------------------------------------------------------

    def manifest(self, model: str, stage: Stage, partition: str) -> Manifest | None:
        """The partition's manifest, or None when the partition does not exist."""
        part = self._partition_path(model, stage, partition)
        with self._io(f"reading the manifest of {self._location(part)}"):
            return self._read_manifest(part)

    def _require(self, model: str, stage: Stage, partition: str, hint: str = "") -> tuple[Manifest, str]:
        manifest = self.manifest(model, stage, partition)
        if manifest is None:
            raise PartitionNotFound(f"no {stage} partition {partition} for model {model} under {self.url}{hint}")
        return manifest, f"{self._partition_path(model, stage, partition)}/{manifest.files[0]}"

    def _open(self, model: str, stage: Stage, partition: str, hint: str = "", **options: Any) -> Any:
        """The partition's data file as a ``pyarrow.parquet.ParquetFile``, through the lake's fsspec filesystem
        (pyarrow reads a local one natively, others through fsspec file objects).

        A version replaced between reading its manifest and opening its file is gone: read the new manifest
        once more rather than fail a reader that merely raced a re-publication.
        """
        import pyarrow.parquet as pq

        manifest, path = self._require(model, stage, partition, hint)
        with self._io(f"reading {self._location(path)}"):
            try:
                return pq.ParquetFile(path, filesystem=self.fs, **options)
            except FileNotFoundError:
                if self.manifest(model, stage, partition) == manifest:
                    raise PartitionNotFound(
                        f"{stage} partition {partition} of model {model} lists {self._location(path)}, which is "
                        "missing (removed outside airloop, or lost to a concurrent writer). "
                        "Run the interval again to rewrite it."
                    ) from None
            _, path = self._require(model, stage, partition, hint)
            return pq.ParquetFile(path, filesystem=self.fs, **options)

    def read(self, model: str, stage: Stage, partition: str, columns: list[str] | None = None) -> pd.DataFrame:
        """Read a partition through its manifest. Raises :class:`PartitionNotFound` if there is none."""
        hint = f" (run the {model}_ingest DAG for that interval first)"
        with self._open(model, stage, partition, hint) as f, self._io(f"reading {model}/{stage}/{partition}"):
            return f.read(columns=columns).to_pandas()

    def iter_batches(
        self, model: str, stage: Stage, partition: str, columns: list[str] | None = None, batch_rows: int = 65536
    ) -> Iterator[pd.DataFrame]:
        """Read a partition in bounded batches (memory does not grow with the partition's size)."""
        # pre_buffer=False: pyarrow's default keeps every row group read so far buffered until the file closes
        # (about 12 MB per million rows), which would make memory grow with the partition.
        with (
            self._open(model, stage, partition, pre_buffer=False) as f,
            self._io(f"reading {model}/{stage}/{partition}"),
        ):
            for batch in f.iter_batches(batch_size=batch_rows, columns=columns):
                yield batch.to_pandas()

    def read_side_file(self, model: str, stage: Stage, partition: str, name: str) -> bytes:
        """A side file (a report) of the partition's current version."""
        manifest, _ = self._require(model, stage, partition)
        if name not in manifest.side_files:
            raise FileNotFoundError(f"{model}/{stage}/{partition} has no side file {name!r}: {manifest.side_files}")
        part = self._partition_path(model, stage, partition)
        path = f"{part}/{manifest.version}/{name}" if manifest.version else f"{part}/{name}"
        with self._io(f"reading {self._location(path)}"):
            return self.fs.cat_file(path, **self._cat_options)

    def partitions(self, model: str, stage: Stage) -> list[str]:
        """Keys of the partitions of a stage that exist (have a manifest), sorted. One listing on object storage."""
        self._partition_path(model, stage, "k")  # validates model and stage
        folder = self._join(model, stage)
        with self._io(f"listing {self._location(folder)}"):
            found = self._find(folder)
        keys = []
        for path in found:
            key, _, name = path[len(folder) + 1 :].partition("/")
            if name == MANIFEST and not key.startswith("."):
                keys.append(key)
        return sorted(keys)


class StagedPartition:
    """A partition spooled but not published (see :meth:`Lake.staged`): ``write`` once, then ``publish``."""

    def __init__(self, lake: Lake, model: str, stage: Stage, partition: str, spool: str, meta: dict[str, Any]) -> None:
        self._lake, self._spool, self._meta = lake, spool, meta
        self.model, self.stage, self.partition = model, stage, partition
        self.manifest: Manifest | None = None

    def write(self, batches: Iterable[pd.DataFrame]) -> Manifest:
        """Spool the batches to the local file; the manifest they will publish (nothing is visible yet)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        where = f"{self.model}/{self.stage}/{self.partition}"
        # The batches' own errors (a model, a database) pass through untouched: only publishing talks to storage.
        h, writer, rows, dtypes = hasher(), None, 0, None
        try:
            for df in batches:
                if dtypes is None:
                    dtypes = [[str(c), str(t)] for c, t in df.dtypes.items()]
                    h.update(json.dumps(dtypes).encode())
                table = pa.Table.from_pandas(df, preserve_index=False)
                if writer is None:
                    writer = pq.ParquetWriter(self._spool, table.schema, compression="zstd")
                if len(df):
                    h.update(row_hashes(df).tobytes())
                    writer.write_table(table)
                rows += len(df)
            if writer is None:
                raise ValueError(f"no batches to write for {where}")
        finally:
            if writer is not None and writer.is_open:
                writer.close()
        digest = h.hexdigest()
        self.manifest = Manifest(
            model=self.model,
            stage=self.stage,
            partition=self.partition,
            rows=rows,
            content_digest=digest,
            data_file=f"part-{digest[:16]}.parquet",
            columns=dict(dtypes or []),
            meta=self._meta,
            version=version_of(digest, {}),
        )
        return self.manifest

    def publish(self) -> Manifest:
        """Make the spooled rows the partition: data file, then manifest (the same protocol as :meth:`Lake.write`)."""
        if self.manifest is None:
            raise ValueError(f"{self.model}/{self.stage}/{self.partition}: publish() before write()")
        spool = self._spool
        return self._lake._publish(self.manifest, {}, lambda path: self._lake._publish_file(spool, path))


def default_lake() -> Lake:
    """The lake airloop's settings name: ``AIRLOOP_LAKE_URL`` (with ``AIRLOOP_LAKE_STORAGE_OPTIONS``), else
    ``$AIRLOOP_HOME/lake`` on the local disk. Every task, CLI command and view opens the lake through this."""
    from airloop.core.settings import lake_storage_options, lake_url

    return Lake(lake_url(), storage_options=lake_storage_options())
