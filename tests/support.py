"""Helpers shared by fixtures at several test levels (not fixtures themselves, so e2e code can call them)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from airloop.adapters.lake import Lake
    from airloop.core.spec import ModelSpec


def write_validated_partitions(engine: Engine, lake: Lake, spec: ModelSpec, last: int = 14) -> list[str]:
    """Validated partitions of the newest ``last`` intervals (14 cover the bikes 364-day window), without GX.

    Real ingestion writes the same data files (extract, then copy raw to validated); validation itself is
    tested in ``tests/integration/test_ingest_dag.py``, and running it here would only add time.
    """
    from airloop.adapters.source import extract_interval
    from airloop.core.intervals import expected_intervals

    keys = []
    for interval in list(expected_intervals(spec, until=datetime.now(UTC)))[-last:]:
        meta = {
            "interval_start": interval.start.isoformat(),
            "interval_end": interval.end.isoformat(),
            "suite_digests": {"schema": "fixture", "values": "fixture"},
        }
        lake.write(spec.name, "validated", interval.key, extract_interval(engine, spec, interval).frame, meta=meta)
        keys.append(interval.key)
    return keys


class S3Server:
    """An S3-compatible server (moto) on 127.0.0.1 in this process, for lake tests on object storage.

    It speaks the S3 protocol over real HTTP (s3fs and boto3 talk to it as to any store) and keeps objects in
    memory. :meth:`env` gives the standard AWS variables that point a client at it; :meth:`bucket` creates a
    fresh bucket; :meth:`refusing_credentials` makes it check credentials (and refuse every key) for a while.
    """

    REGION = "us-east-1"

    def __init__(self) -> None:
        import socket

        from moto.server import ThreadedMotoServer

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def start(self) -> S3Server:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def env(self) -> dict[str, str]:
        """The AWS variables a client reads (test credentials: moto accepts any key unless told otherwise)."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "airloop-test",
            "AWS_SECRET_ACCESS_KEY": "airloop-test-secret",
            "AWS_DEFAULT_REGION": self.REGION,
            "NO_PROXY": "127.0.0.1,localhost",
        }

    def client(self):  # -> S3Client (boto3 types are not installed)
        import boto3

        env = self.env()
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            region_name=self.REGION,
        )

    def bucket(self, prefix: str = "airloop") -> str:
        """A new, empty bucket with a unique name."""
        import uuid

        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    @contextlib.contextmanager
    def refusing_credentials(self) -> Iterator[None]:
        """Make the server authenticate requests (moto then refuses every key: none is registered in its IAM)."""
        import urllib.request

        def set_count(value: str) -> None:
            request = urllib.request.Request(
                f"{self.endpoint}/moto-api/reset-auth",
                data=value.encode(),
                method="POST",
                headers={"Content-Type": "text/plain"},  # a form type would leave moto an empty body
            )
            with urllib.request.urlopen(request, timeout=10):
                pass

        set_count("0")
        try:
            yield
        finally:
            set_count("inf")


def models_folder(folder: Path, model: str, monitoring: dict | None = None) -> Path:
    """``folder`` holding the bikes spec and a copy of it named ``model`` (an isolated model for one module).

    ``monitoring`` updates the copy's monitoring section. Point ``AIRLOOP_MODELS_DIR`` at the folder to use it.
    """
    import shutil

    import yaml

    bikes = Path(__file__).resolve().parents[1] / "include" / "models" / "bikes.yaml"
    shutil.copy(bikes, folder / "bikes.yaml")
    raw = yaml.safe_load(bikes.read_text())
    raw["name"] = model
    raw["monitoring"].update(monitoring or {})
    (folder / f"{model}.yaml").write_text(yaml.safe_dump(raw))
    return folder
