"""--log-json: one readable JSON object per line; kopf's per-object records keep the object and
namespace but not kopf's internals (its settings repr alone was kilobytes per line)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import kopf
import pytest

from turnpike.core.logs import JsonFormatter


class JsonLines(io.StringIO):
    def lines(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.getvalue().splitlines()]


@pytest.fixture
def json_logs() -> Iterator[JsonLines]:
    """Everything logged while the test runs, as --log-json writes it."""
    out = JsonLines()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield out
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def test_kopf_object_records_keep_object_and_namespace_only(
    json_logs: JsonLines,
) -> None:
    body = {
        "apiVersion": "turnpike.io/v1alpha1",
        "kind": "RelayEdge",
        "metadata": {"name": "ashburn", "namespace": "turnpike", "uid": "u-1"},
    }
    # kopf's own per-object logger, as handlers receive it.
    log = kopf.ObjectLogger(body=kopf.Body(body), settings=kopf.OperatorSettings())
    log.info("Reconciled %s", "ashburn", extra={"children": 4})
    [line] = json_logs.lines()
    assert set(line) == {"ts", "level", "logger", "msg", "object", "namespace", "children"}
    assert line["object"] == "RelayEdge/ashburn" and line["namespace"] == "turnpike"
    assert line["msg"] == "Reconciled ashburn" and line["children"] == 4
    assert line["level"] == "info" and line["logger"] == "kopf.objects"


def test_plain_records_keep_their_extra_fields_and_exceptions(
    json_logs: JsonLines,
) -> None:
    log = logging.getLogger("turnpike.relay")
    log.warning("peer denied", extra={"event": "peer_denied", "peer": "10.0.0.1"})
    try:
        raise ValueError("bad input")
    except ValueError:
        log.exception("failed")
    denied, failed = json_logs.lines()
    assert denied["event"] == "peer_denied" and denied["peer"] == "10.0.0.1"
    assert "object" not in denied and denied["level"] == "warning"
    assert failed["level"] == "error" and "ValueError: bad input" in str(failed["exc"])
