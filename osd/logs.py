"""Logging set-up: text or JSON lines, and levels per module.

In JSON, each line is one object: ``time``, ``level``, ``logger`` and
``message``, the fields a call's access line carries (``request_id``,
``method``, ``subject``, ``code``, ``duration_ms``) when it has them, and
``error`` with the traceback of an exception. The gateway passes its
request id to the daemon, so one id names a REST call on both sides.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

FORMATS = ("text", "json")
# Attributes of a record given with extra=, written as fields of their own.
FIELDS = ("request_id", "method", "subject", "code", "duration_ms")
_TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def parse_levels(text: str) -> dict[str, str]:
    """``"osd.audit=warning,uvicorn=error"`` as {logger: LEVEL}; ValueError
    naming the entry that is wrong."""
    out: dict[str, str] = {}
    for entry in filter(None, (e.strip() for e in text.split(","))):
        name, sep, level = entry.partition("=")
        level = level.strip().upper()
        if not sep or not name.strip():
            raise ValueError(f"{entry!r} is not LOGGER=LEVEL")
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ValueError(f"{entry!r}: {level.lower()!r} is not debug, info, warning or error")
        out[name.strip()] = level
    return out


def setup(level: str, fmt: str = "text", levels: dict[str, str] | None = None) -> None:
    """Logs to stderr at ``level`` in ``fmt``, with ``levels`` per logger.

    As logging.basicConfig, it leaves alone a process whose root logger
    already has handlers it did not install (osd called from a host program,
    or a test), and replaces only its own."""
    root = logging.getLogger()
    if any(not getattr(h, "_osd", False) for h in root.handlers):
        return
    for old in list(root.handlers):
        root.removeHandler(old)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(_TEXT))
    handler._osd = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("alembic").setLevel(max(logging.WARNING, logging.getLevelName(level)))
    for name, named_level in (levels or {}).items():
        logging.getLogger(name).setLevel(named_level)
