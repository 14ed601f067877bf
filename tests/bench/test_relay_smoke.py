"""``python -m bench relay --smoke``: the relay benchmark's harness end to end, in seconds.

Runs the real load generator against a real Turnpike relay and coturn on loopback and checks that
a well-formed result and the plots come out. No assertion is made on any speed figure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from support import require_tool

REPO_ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.e2e, pytest.mark.interop]


def _run(out: Path, *extra: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "relay", "--smoke", "--out", str(out), *extra],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result: dict[str, Any] = json.loads((out / "relay.json").read_text())
    return result


def _check_number(value: Any) -> None:
    assert isinstance(value, int | float) and value >= 0, value


def test_relay_smoke_turnpike_and_coturn(tmp_path: Path) -> None:
    require_tool("turnserver", "apt-get install coturn")
    result = _run(tmp_path, "--servers", "coturn,turnpike-w1")

    assert result["benchmark"] == "relay" and result["smoke"] is True
    for key in ("date", "cores", "cpu_model", "kernel", "python", "uvloop"):
        assert key in result["machine"]
    assert result["machine_line"]
    assert set(result["servers"]) == {"coturn", "turnpike-w1"}
    assert all(s["command"] for s in result["servers"].values())
    assert "<secret>" in result["servers"]["coturn"]["command"]  # never the secret itself

    (rnd,) = result["rounds"]
    _check_number(rnd["generator_ceiling"]["max_rate_pps"])
    for name in ("coturn", "turnpike-w1"):
        got = rnd["servers"][name]
        for mode in ("channel", "send", "tcp"):
            entry = got["max_rate"][mode]
            if entry.get("error"):
                continue  # a server that cannot do this mode is reported, not hidden
            _check_number(entry["max_rate_pps"])
            assert entry["trials"], entry
            for trial in entry["trials"]:
                assert {"rate", "offered", "received", "loss", "pass"} <= set(trial)
        _check_number(got["cpu"]["server_cpu_s"])
        assert got["cpu"]["relayed_packets"] > 0
        lat = got["latency"]
        assert lat["relay_rtt"]["samples"] > 0 and lat["direct_rtt"]["samples"] > 0
        assert got["alloc"]["allocated"] > 0
        _check_number(got["alloc"]["allocations_per_s"])

    summary = result["summary"]
    assert "turnpike-w1/coturn" in summary["ratios"]
    assert summary["headline"] and summary["generator_ceiling_pps"]["median"] is not None
    for png in ("relay-rates.png", "relay-loss.png", "relay-latency.png", "relay-cost.png"):
        data = (tmp_path / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    # the README's figures section renders from this result
    from bench.report import relay_section

    assert "| figure |" in "\n".join(relay_section(result))


def test_relay_smoke_workers_2_without_coturn(tmp_path: Path) -> None:
    """`--workers 2` end to end; with no turnserver on PATH coturn is skipped, not a failure."""
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()  # every process is started by absolute path; only turnserver is looked up
    result = _run(
        tmp_path, "--servers", "coturn,turnpike-w2", env={**os.environ, "PATH": str(empty_bin)}
    )

    assert "turnserver" in result["skipped"]["coturn"]
    assert set(result["servers"]) == {"turnpike-w2"}
    assert result["servers"]["turnpike-w2"]["workers"] == 2
    command = result["servers"]["turnpike-w2"]["command"]
    assert command[command.index("--workers") + 1] == "2"
    (rnd,) = result["rounds"]
    got = rnd["servers"]["turnpike-w2"]
    for mode in ("channel", "send", "tcp"):
        assert "error" not in got["max_rate"][mode], got["max_rate"][mode]
        _check_number(got["max_rate"][mode]["max_rate_pps"])
    assert got["cpu"]["relayed_packets"] > 0
    assert got["alloc"]["allocated"] > 0
    assert result["summary"]["ratios"] == {}  # no ratio without the reference
    from bench.report import relay_section

    section = "\n".join(relay_section(result))
    assert "| figure | turnpike-w2 |" in section
    assert "Not run: coturn: turnserver" in section  # the figures never hide the missing reference
