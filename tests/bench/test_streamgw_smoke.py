"""``python -m bench streamgw --smoke``: the stream gateway benchmark's harness end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.e2e


def test_streamgw_smoke(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "streamgw", "--smoke", "--out", str(tmp_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result: dict[str, Any] = json.loads((tmp_path / "streamgw.json").read_text())
    assert result["benchmark"] == "streamgw" and result["smoke"] is True
    for key in ("date", "cores", "cpu_model", "kernel", "python", "uvloop"):
        assert key in result["machine"]
    kinds = {s["kind"] for s in result["steps"]}
    assert kinds == {"fork", "echo"}
    for step in result["steps"]:
        assert "error" not in step, step
        assert step["rtp_sent"] == step["streams"] * step["frames_per_stream"]
        assert step["ws_frames"] > 0 and step["latency_p99_ms"] is not None
        assert step["cpu_per_stream_pct"] is not None
        if step["kind"] == "echo":
            assert step["echoed_frames_back"] > 0
            assert step["playout_jitter_p99_ms"] is not None
    hostile = result["hostile_twiml"]
    assert hostile["bombs_refused"] > 0 and hostile["bombs_fetched"] > 0
    assert hostile["say_calls"] > 0
    for phase in ("quiet", "bombs", "say"):
        assert hostile[f"{phase}_p99_ms"] is not None
    assert len(result["summary"]["headline"]) == 2
    assert (tmp_path / "streamgw.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the README's figures section renders from this result
    from bench.report import streamgw_section

    assert "| kind | streams |" in "\n".join(streamgw_section(result))


def test_streamgw_sip_smoke(tmp_path: Path) -> None:
    """``--sip``: the same steps with calls placed by INVITE/ACK and ended by BYE."""
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "streamgw", "--smoke", "--sip", "--out", str(tmp_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result: dict[str, Any] = json.loads((tmp_path / "streamgw-sip.json").read_text())
    assert result["benchmark"] == "streamgw-sip" and result["params"]["sip"] is True
    assert "--sip" in result["command"] and "--numbers" in result["command"]
    assert {s["kind"] for s in result["steps"]} == {"fork", "echo"}
    for step in result["steps"]:
        assert "error" not in step, step
        assert step["calls_per_s"] > 0 and step["ws_frames"] > 0
    assert result["hostile_twiml"] == {}
    assert (tmp_path / "streamgw-sip.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
