"""``python -m bench tokens --smoke``: the token API benchmark's harness end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.e2e


def test_tokens_smoke(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "tokens", "--smoke", "--out", str(tmp_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result: dict[str, Any] = json.loads((tmp_path / "tokens.json").read_text())
    assert result["benchmark"] == "tokens" and result["smoke"] is True
    for key in ("date", "cores", "cpu_model", "kernel", "python", "uvloop"):
        assert key in result["machine"]
    assert result["steps"]
    for step in result["steps"]:
        assert step["tokens"] > 0 and step["statuses"].get("201") == step["tokens"]
        assert step["p50_ms"] is not None and step["p99_ms"] is not None
        assert step["response"]["ice_servers"] >= 1
    assert result["summary"]["headline"]
    assert (tmp_path / "tokens.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the README's figures section renders from this result
    from bench.report import tokens_section

    assert "| requests in flight |" in "\n".join(tokens_section(result))
