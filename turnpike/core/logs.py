"""Logging set-up shared by every command: one line per event, plain text or JSON.

Nothing here redacts: components never pass secrets, passwords or HMACs to a logger at all.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

# Attributes every LogRecord has; anything else was passed with ``extra=`` and is event data.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}
# What kopf attaches to every record for its own use, not for a reader: its settings object
# (whose repr is kilobytes), its event-posting flag and the object reference, which is logged as
# the readable ``object`` and ``namespace`` fields instead.
_FRAMEWORK = frozenset({"settings", "k8s_skip", "k8s_ref"})


def _object_fields(record: logging.LogRecord) -> dict[str, Any]:
    """``object`` (Kind/name) and ``namespace`` of the Kubernetes object a record is about."""
    ref = getattr(record, "k8s_ref", None)
    if not isinstance(ref, dict):
        return {}
    fields: dict[str, Any] = {}
    if ref.get("name"):
        fields["object"] = f"{ref['kind']}/{ref['name']}" if ref.get("kind") else ref["name"]
    if ref.get("namespace"):
        fields["namespace"] = ref["namespace"]
    return fields


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        event.update(_object_fields(record))
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in _FRAMEWORK and not key.startswith("_"):
                event[key] = value
        if record.exc_info:
            event["exc"] = self.formatException(record.exc_info)
        return json.dumps(event, default=str)


def setup_logging(level: str = "info", json_format: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if json_format:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Keep chatty libraries at warning unless the user asked for debug.
    if level.lower() != "debug":
        for name in ("aiohttp.access", "kubernetes", "urllib3"):
            logging.getLogger(name).setLevel(logging.WARNING)
