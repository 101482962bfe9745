"""What the benchmarks in scripts/ share: free ports, the process tree of a
daemon, waiting for it to serve and stopping it, and a scratch PostgreSQL
database. Imported by scripts/bench and scripts/bench-scale (the repository
root is on their path)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import uuid
from collections import defaultdict
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def osd_env() -> dict[str, str]:
    """The environment of an osd command a bench starts: none of the caller's
    OSD_* settings, which would change what is measured."""
    return {k: v for k, v in os.environ.items() if not k.startswith("OSD_")}


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (a daemon's serving processes), itself first."""
    children: dict[int, list[int]] = defaultdict(list)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children[int(fields[1])].append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop(0)
        out.append(p)
        todo += children.get(p, [])
    return out


def wait_serving(
    proc: subprocess.Popen[bytes],
    target: str,
    timeout: float,
    what: str,
    start: float | None = None,
) -> float:
    """Seconds from ``start`` (default: now) until the gRPC health service at
    ``target`` answers SERVING, asked over one channel; RuntimeError when
    ``proc`` exits first or the time is up."""
    start = time.perf_counter() if start is None else start
    request = health_pb2.HealthCheckRequest(service="")
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.perf_counter() - start < timeout:
            if proc.poll() is not None:
                raise RuntimeError(f"{what} exited with {proc.returncode} before serving")
            try:
                answer = stub.Check(request, timeout=0.5)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return time.perf_counter() - start
            except grpc.RpcError:
                pass
            time.sleep(0.02)
    raise RuntimeError(f"{what} was not SERVING within {timeout:.0f} s")


def stop_process(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    """SIGTERM, then SIGKILL after ``timeout``; True when it had to be killed."""
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
        return False
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return True


class ScratchDatabase:
    """A database of its own on a PostgreSQL server (``url``: an admin
    connection), dropped when done."""

    def __init__(self, url: str, prefix: str = "osd_bench") -> None:
        from sqlalchemy import create_engine, make_url

        admin = make_url(url)
        if admin.drivername in ("postgresql", "postgres"):
            admin = admin.set(drivername="postgresql+psycopg")
        self.name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        self.url = admin.set(database=self.name).render_as_string(hide_password=False)
        self.shown = admin.render_as_string(hide_password=True)
        self.engine = create_engine(
            admin, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5}
        )
        self.created = False

    def create(self) -> None:
        from sqlalchemy import text

        with self.engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{self.name}"'))
        self.created = True

    def backend_pids(self) -> list[int]:
        """The server processes serving the database (empty if unknown)."""
        from sqlalchemy import text

        try:
            with self.engine.connect() as conn:
                rows = conn.execute(
                    text("SELECT pid FROM pg_stat_activity WHERE datname = :name"),
                    {"name": self.name},
                ).all()
        except Exception:
            return []
        return [int(row[0]) for row in rows]

    def drop(self) -> None:
        """Drops the database if it was made (a failure is printed, not raised)."""
        from sqlalchemy import text

        try:
            if self.created:
                with self.engine.connect() as conn:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
                self.created = False
        except Exception as exc:
            lines = str(exc).strip().splitlines()
            print(f"could not drop the scratch database {self.name}: {lines[0] if lines else exc}")
        finally:
            self.engine.dispose()

    def __enter__(self) -> ScratchDatabase:
        self.create()
        return self

    def __exit__(self, *_exc: object) -> None:
        with contextlib.suppress(Exception):
            self.drop()
