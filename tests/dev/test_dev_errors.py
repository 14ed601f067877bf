"""`turnpike dev` and `turnpike dev call` refuse bad input with a clear message, not a traceback."""

import os
import subprocess
import sys
from pathlib import Path

import ifaddr
import pytest


def foreign_address() -> str:
    """An address from the documentation ranges (RFC 5737) that this machine does not have."""
    mine = {e.ip for a in ifaddr.get_adapters() for e in a.ips if isinstance(e.ip, str)}
    for candidate in ("198.51.100.254", "203.0.113.254", "192.0.2.254"):
        if candidate not in mine:
            return candidate
    raise AssertionError("this machine has every documentation address")


def turnpike(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "turnpike", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


@pytest.mark.parametrize("free_ports", [True, False])
def test_host_that_is_not_on_this_machine(tmp_path: Path, free_ports: bool) -> None:
    state_file = tmp_path / "dev.json"
    extra = ["--free-ports"] if free_ports else []
    host = foreign_address()
    result = turnpike("dev", "--host", host, "--state-file", str(state_file), *extra)
    assert result.returncode == 1, result.stderr
    assert f"{host} is not an address of this machine" in result.stderr
    assert "Traceback" not in result.stderr
    assert not state_file.exists()


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{not json", "cannot read the state file"),
        ("[1, 2]", "is not a `turnpike dev` state file"),
        ('{"pid": "me"}', "is not a `turnpike dev` state file"),
        ("{pid}", "is not a complete `turnpike dev` state file ('host')"),
    ],
)
def test_call_with_a_broken_state_file(tmp_path: Path, content: str, problem: str) -> None:
    state_file = tmp_path / "dev.json"
    # a live pid (this test's), so the call gets as far as reading the state's contents
    state_file.write_text(content.replace("{pid}", f'{{"pid": {os.getpid()}}}'))
    result = turnpike("dev", "call", "--state-file", str(state_file))
    assert result.returncode == 1, result.stderr
    assert problem in result.stderr
    assert "Traceback" not in result.stderr


def test_call_with_a_missing_twiml_file(tmp_path: Path) -> None:
    state_file = tmp_path / "dev.json"
    state_file.write_text(f'{{"pid": {os.getpid()}}}')
    missing = tmp_path / "missing.xml"
    result = turnpike("dev", "call", "--state-file", str(state_file), "--twiml", str(missing))
    assert result.returncode == 1, result.stderr
    assert f"cannot use {missing}" in result.stderr
    assert "Traceback" not in result.stderr


def test_call_without_a_running_fleet(tmp_path: Path) -> None:
    result = turnpike("dev", "call", "--state-file", str(tmp_path / "none.json"))
    assert result.returncode == 1
    assert "no running `turnpike dev` found" in result.stderr
