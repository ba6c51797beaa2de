"""Real Postgres, Redis and an S3 endpoint on 127.0.0.1 for the distributed test, started and stopped by it.

Postgres and Redis are Debian's packages (``make system-deps`` installs them); the S3 endpoint is moto's server
(from PyPI, a dev dependency). Each runs in a temporary folder on a free port with a generated password and is
stopped, with everything it wrote, by :meth:`Services.stop`. Nothing listens beyond 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _wait_port(port: int, what: str, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            sock.settimeout(1)
            if sock.connect_ex((HOST, port)) == 0:
                return
        time.sleep(0.3)
    tail = log.read_text(errors="replace")[-2000:] if log.exists() else "(no log)"
    raise RuntimeError(f"{what} did not listen on {HOST}:{port} within {timeout:.0f} s. Its log:\n{tail}")


def _run(cmd: list[str], what: str) -> None:
    """Run a set-up command; on failure, raise with its output (not only its exit code)."""
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed ({done.returncode}): {' '.join(cmd)}\n{done.stdout}\n{done.stderr}")


def _debian_binary(pattern: str, package: str) -> str:
    found = sorted(glob.glob(pattern))
    if not found:
        raise RuntimeError(f"{pattern} not found: install Debian's {package} (`make system-deps`)")
    return found[-1]


@dataclass
class Services:
    """The running services and how to reach them."""

    root: Path
    pg_port: int = 0
    pg_password: str = ""
    redis_port: int = 0
    redis_password: str = ""
    s3_port: int = 0
    s3_key: str = "airloop-test"
    s3_secret: str = ""
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    pg_data: Path | None = None
    pg_user_cmd: list[str] = field(default_factory=list)

    def pg_url(self, database: str) -> str:
        return f"postgresql+psycopg2://airloop:{self.pg_password}@{HOST}:{self.pg_port}/{database}"

    @property
    def redis_url(self) -> str:
        return f"redis://:{self.redis_password}@{HOST}:{self.redis_port}/0"

    @property
    def s3_endpoint(self) -> str:
        return f"http://{HOST}:{self.s3_port}"

    # --- Postgres -------------------------------------------------------------------------------------------

    def start_postgres(self, databases: list[str]) -> None:
        initdb = _debian_binary("/usr/lib/postgresql/*/bin/initdb", "postgresql")
        pg_ctl = str(Path(initdb).parent / "pg_ctl")
        self.pg_port, self.pg_password = free_port(), secrets.token_urlsafe(24)
        base = self.root / "postgres"
        base.mkdir(parents=True)
        self.pg_data = base / "data"
        pwfile = base / "pwfile"
        pwfile.write_text(self.pg_password + "\n")
        if os.geteuid() == 0:  # Postgres refuses to run as root: run it as Debian's postgres user
            user = pwd.getpwnam("postgres")
            shutil.chown(base, user.pw_uid, user.pw_gid)
            shutil.chown(pwfile, user.pw_uid, user.pw_gid)
            os.chmod(self.root, 0o755)  # the postgres user must reach its folder
            self.pg_user_cmd = ["runuser", "-u", "postgres", "--"]
        run = self.pg_user_cmd
        _run(
            [*run, initdb, "-D", str(self.pg_data), "-U", "airloop", f"--pwfile={pwfile}", "--auth=scram-sha-256"],
            "initdb",
        )
        log = base / "postgres.log"
        _run(
            [
                *run,
                pg_ctl,
                "-D",
                str(self.pg_data),
                "-l",
                str(log),
                "-w",
                "-o",
                f"-p {self.pg_port} -c listen_addresses={HOST} -k {base} -c max_connections=200",
                "start",
            ],
            "pg_ctl start",
        )
        _wait_port(self.pg_port, "Postgres", log)
        import psycopg2

        conn = psycopg2.connect(
            host=HOST, port=self.pg_port, user="airloop", password=self.pg_password, dbname="postgres"
        )
        conn.autocommit = True
        with conn.cursor() as cur:
            for db in databases:
                cur.execute(f'CREATE DATABASE "{db}"')
        conn.close()

    # --- Redis ----------------------------------------------------------------------------------------------

    def start_redis(self) -> None:
        server = _debian_binary("/usr/bin/redis-server", "redis-server")
        self.redis_port, self.redis_password = free_port(), secrets.token_urlsafe(24)
        folder = self.root / "redis"
        folder.mkdir(parents=True)
        log = folder / "redis.log"
        # The password goes in through stdin (a config read from "-"), never on a command line others can read.
        config = (
            f'port {self.redis_port}\nbind {HOST}\nsave ""\nappendonly no\ndir {folder}\n'
            f"requirepass {self.redis_password}\nlogfile {log}\n"
        )
        proc = subprocess.Popen([server, "-"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, start_new_session=True)
        assert proc.stdin is not None
        proc.stdin.write(config.encode())
        proc.stdin.close()
        self.procs["redis"] = proc
        _wait_port(self.redis_port, "Redis", log)

    # --- S3 (moto) ------------------------------------------------------------------------------------------

    def start_s3(self, buckets: list[str]) -> None:
        self.s3_port, self.s3_secret = free_port(), secrets.token_urlsafe(24)
        folder = self.root / "s3"
        folder.mkdir(parents=True)
        log = folder / "moto.log"
        moto = str(Path(sys.executable).parent / "moto_server")
        with log.open("wb") as out:
            self.procs["s3"] = subprocess.Popen(
                [moto, "-H", HOST, "-p", str(self.s3_port)],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _wait_port(self.s3_port, "the moto S3 server", log)
        s3 = self.s3_client()
        for bucket in buckets:
            s3.create_bucket(Bucket=bucket)

    def s3_client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.s3_endpoint,
            aws_access_key_id=self.s3_key,
            aws_secret_access_key=self.s3_secret,
            region_name="us-east-1",
        )

    def s3_env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.s3_endpoint,
            "AWS_ACCESS_KEY_ID": self.s3_key,
            "AWS_SECRET_ACCESS_KEY": self.s3_secret,
            "AWS_DEFAULT_REGION": "us-east-1",
            "MLFLOW_S3_ENDPOINT_URL": self.s3_endpoint,
        }

    # --- stop -----------------------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop everything started here (also after a failed start) and remove its files."""
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
        if self.pg_data is not None and (self.pg_data / "postmaster.pid").exists():
            pg_ctl = str(Path(_debian_binary("/usr/lib/postgresql/*/bin/initdb", "postgresql")).parent / "pg_ctl")
            subprocess.run(
                [*self.pg_user_cmd, pg_ctl, "-D", str(self.pg_data), "-m", "fast", "-w", "stop"],
                capture_output=True,
                timeout=60,
            )
        shutil.rmtree(self.root, ignore_errors=True)
