"""Why loading the fast path was refused (EPERM), as the relay tells it from /proc/self/status."""

from __future__ import annotations

from pathlib import Path

import pytest

from turnpike.relay.bpf import CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN, not_permitted_because


def status(tmp_path: Path, *caps: int, seccomp: int = 2) -> Path:
    path = tmp_path / "status"
    mask = sum(1 << cap for cap in caps)
    path.write_text(f"Name:\tturnpike\nCapEff:\t{mask:016x}\nNoNewPrivs:\t1\nSeccomp:\t{seccomp}\n")
    return path


@pytest.mark.parametrize(
    ("caps", "said"),
    [
        ((), "the process lacks CAP_BPF and CAP_NET_ADMIN"),
        ((CAP_NET_ADMIN,), "the process lacks CAP_BPF"),
        ((CAP_BPF,), "the process lacks CAP_NET_ADMIN"),
    ],
)
def test_a_missing_capability_is_named(tmp_path: Path, caps: tuple[int, ...], said: str) -> None:
    assert not_permitted_because(status(tmp_path, *caps)) == said


def test_with_both_held_under_seccomp_the_filter_is_named(tmp_path: Path) -> None:
    why = not_permitted_because(status(tmp_path, CAP_BPF, CAP_NET_ADMIN))
    assert "seccomp filter refused bpf(2)" in why and "CAP_SYS_ADMIN" in why


@pytest.mark.parametrize(
    ("caps", "seccomp"),
    [((CAP_BPF, CAP_NET_ADMIN), 0), ((CAP_SYS_ADMIN,), 2)],
)
def test_nothing_is_guessed_when_neither_explains_it(
    tmp_path: Path, caps: tuple[int, ...], seccomp: int
) -> None:
    assert not_permitted_because(status(tmp_path, *caps, seccomp=seccomp)) == ""


def test_an_unreadable_status_says_nothing(tmp_path: Path) -> None:
    assert not_permitted_because(tmp_path / "missing") == ""
