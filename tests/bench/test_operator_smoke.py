"""``python -m bench operator --smoke``: the operator benchmark's harness end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.e2e


def test_operator_smoke(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "operator", "--smoke", "--out", str(tmp_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result: dict[str, Any] = json.loads((tmp_path / "operator.json").read_text())
    assert result["benchmark"] == "operator" and result["smoke"] is True
    for key in ("date", "cores", "cpu_model", "kernel", "python", "uvloop"):
        assert key in result["machine"]
    assert [s["edges"] for s in result["steps"]] == result["params"]["counts"]
    for step in result["steps"]:
        assert not step["timed_out"], step
        assert step["in_place_s"] is not None and step["children_s"] is not None
        # The operator's own requests while nothing changes, counted from the emulator's log.
        total = sum(step["steady_by_verb"].values())
        assert abs(step["steady_requests_per_min"] - total) <= 0.1 * len(step["steady_by_verb"])
    assert len(result["summary"]["headline"]) == len(result["params"]["counts"])
    assert (tmp_path / "operator.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the README's figures section renders from this result
    from bench.report import operator_section

    assert "| RelayEdges |" in "\n".join(operator_section(result))
