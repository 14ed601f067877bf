"""Rotation settings: the defaults the issue asks for, and bad values as clear usage errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from turnpike.operator.rotation_settings import RotationSettings, settings_from_env


def test_defaults_are_a_day_the_token_api_maximum_and_ten_minutes() -> None:
    d = RotationSettings()
    assert (d.interval, d.max_token_lifetime, d.wait_timeout) == (86400.0, 86400.0, 600.0)
    assert d.retire_after == 86400.0 + 3600.0


@pytest.mark.parametrize(
    ("flag", "value", "expected"),
    [
        ("--rotation-interval", "-5", "more than zero"),
        ("--rotation-wait-timeout", "0", "more than zero"),
        ("--max-token-lifetime", "a day", "a number of seconds"),
        ("--max-allocation-lifetime", "-1", "zero or more"),
        ("--rotation-check-interval", "nan", "a finite number"),
    ],
)
def test_a_bad_flag_is_a_usage_error_not_a_traceback(flag: str, value: str, expected: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "turnpike", "operator", "--namespace", "x", flag, value],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert f"argument {flag}: expected {expected}" in done.stderr
    assert "Traceback" not in done.stderr


def test_environment_settings_are_read_and_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TURNPIKE_ROTATION_INTERVAL", "4")
    monkeypatch.setenv("TURNPIKE_MAX_ALLOCATION_LIFETIME", "0")
    settings = settings_from_env()
    assert settings.interval == 4.0 and settings.max_allocation_lifetime == 0.0
    monkeypatch.setenv("TURNPIKE_ROTATION_WAIT_TIMEOUT", "-1")
    with pytest.raises(SystemExit) as exited:
        settings_from_env()
    assert exited.value.code == 2
