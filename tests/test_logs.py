"""Structured logs: `osd serve --log-format json` writes one JSON object per
line, a call's access line carries its request id, method, subject, code and
duration as fields, the id a REST client sends is the id the daemon logs,
and levels can be set per logger."""

from __future__ import annotations

import json
import queue
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from osd.logs import parse_levels
from tests.test_tls import _process


def _next(lines: queue.Queue[str], seen: list[dict[str, Any]], want: Any) -> dict[str, Any]:
    """The next JSON line for which ``want`` is true; every line read must be JSON."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            text = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            break
        line = json.loads(text)  # fails the test on a line that is not JSON
        seen.append(line)
        if want(line):
            return line  # type: ignore[no-any-return]
    raise AssertionError(f"no such line in {seen}")


def test_json_logs_carry_the_calls_fields_and_the_clients_request_id(tmp_path: Path) -> None:
    argv = [
        "serve",
        "--grpc-listen",
        "127.0.0.1:0",
        "--rest-listen",
        "127.0.0.1:0",
        "--data-dir",
        str(tmp_path),
        "--log-format",
        "json",
        "--log-levels",
        "osd.access=debug,uvicorn=warning",
    ]
    seen: list[dict[str, Any]] = []
    with _process(argv) as (_proc, lines):
        started = _next(lines, seen, lambda line: "serving REST on" in line["message"])
        assert {"time", "level", "logger", "message"} <= set(started)
        found = re.search(r"http://127\.0\.0\.1:(\d+)", started["message"])
        assert found
        api = f"http://127.0.0.1:{found.group(1)}"
        made = httpx.post(
            f"{api}/v1/clusters", json={"name": "logged"}, headers={"x-request-id": "trace-42"}
        )
        assert made.status_code == 200
        line = _next(lines, seen, lambda line: line.get("request_id") == "trace-42")
        assert line["method"] == "osd.v1.ClusterService/CreateCluster"
        assert line["code"] == "OK" and line["subject"] == "-" and line["level"] == "debug"
        assert isinstance(line["duration_ms"], float) and line["logger"] == "osd.access"
        bad = httpx.get(f"{api}/v1/clusters/nope", headers={"x-request-id": "trace-43"})
        assert bad.status_code == 400
        line = _next(lines, seen, lambda line: line.get("request_id") == "trace-43")
        assert line["code"] == "INVALID_ARGUMENT" and line["level"] == "info"


def test_log_settings_are_checked(tmp_path: Path) -> None:
    for flag, value, says in (
        ("--log-format", "xml", "is not text or json"),
        ("--log-levels", "osd.access", "is not LOGGER=LEVEL"),
        ("--log-levels", "osd=loud", "'loud' is not debug, info, warning or error"),
    ):
        with _process(["serve", "--data-dir", str(tmp_path), flag, value]) as (proc, lines):
            assert proc.wait(timeout=30) == 2
            text = ""
            deadline = time.monotonic() + 10  # the reader may lag the exit
            while says not in text and time.monotonic() < deadline:
                try:
                    text += lines.get(timeout=0.5)
                except queue.Empty:
                    continue
            assert says in text, text


def test_levels_per_logger_parse() -> None:
    assert parse_levels("osd.access=debug, uvicorn=ERROR") == {
        "osd.access": "DEBUG",
        "uvicorn": "ERROR",
    }
    assert parse_levels("") == {}
    with pytest.raises(ValueError, match="is not LOGGER=LEVEL"):
        parse_levels("=debug")
