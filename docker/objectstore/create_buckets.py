"""Create the object store's buckets if they do not exist (the `objectstore-init` service; idempotent).

Environment: S3_ENDPOINT_URL (empty for AWS itself), S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY (a key that
may create buckets), S3_REGION (default us-east-1) and BUCKETS (names separated by spaces or commas).
Waits up to S3_WAIT_SECONDS (default 60) for the endpoint to answer. Exit code 1 names what failed.
"""

from __future__ import annotations

import os
import sys
import time


def _client():  # type: ignore[no-untyped-def]
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=os.environ.get("S3_ENDPOINT_URL") or None,
        aws_access_key_id=os.environ["S3_ACCESS_KEY_ID"],
        aws_secret_access_key=os.environ["S3_SECRET_ACCESS_KEY"],
        region_name=os.environ.get("S3_REGION") or "us-east-1",
        config=Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=5,
            read_timeout=30,
        ),
    )


def ensure_buckets(buckets: list[str], wait_seconds: float = 60.0) -> list[str]:
    """Create each bucket that is missing; return the names created.

    Asks per bucket (HEAD, which needs no right to list every bucket), so a key scoped to its buckets on an
    existing store works too.
    """
    from botocore.exceptions import ClientError, EndpointConnectionError

    s3 = _client()
    deadline = time.monotonic() + wait_seconds
    created = []
    for bucket in buckets:
        while True:
            try:
                s3.head_bucket(Bucket=bucket)
                status = 200
                break
            except EndpointConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
            except ClientError as exc:
                status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
                if status != 404:
                    raise RuntimeError(f"bucket {bucket}: HTTP {status} (exists, not usable with this key?)") from exc
                break
        if status == 200:
            print(f"objectstore-init: bucket {bucket} exists")
            continue
        try:
            s3.create_bucket(Bucket=bucket)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise
        created.append(bucket)
        print(f"objectstore-init: bucket {bucket} created")
    return created


def main() -> int:
    missing = [v for v in ("S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY", "BUCKETS") if not os.environ.get(v)]
    if missing:
        print(f"objectstore-init: set {', '.join(missing)}", file=sys.stderr)
        return 1
    buckets = [b for b in os.environ["BUCKETS"].replace(",", " ").split() if b]
    try:
        ensure_buckets(buckets, float(os.environ.get("S3_WAIT_SECONDS") or 60))
    except Exception as exc:  # one line that says what failed, not a traceback of botocore internals
        endpoint = os.environ.get("S3_ENDPOINT_URL") or "AWS S3"
        cause = f"{type(exc).__name__}: {exc}"
        print(f"objectstore-init: could not create {buckets} at {endpoint}: {cause}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
