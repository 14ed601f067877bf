"""`turnpike operator` without usable credentials: one clear line and exit code 2, never a
traceback, and never a kubeconfig's contents (they hold tokens)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from support.kube_e2e import Cluster

TOKEN = "tp-test-token-7f3a9c"


def _operator(tmp_path: Path, kubeconfig: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "KUBERNETES_SERVICE_HOST"}
    env.update({"KUBECONFIG": kubeconfig, "HOME": str(tmp_path)})
    return subprocess.run(
        [sys.executable, "-m", "turnpike", "operator", "--standalone"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, "No such file or directory"),
        (f"users:\n- name: x\n  user: {{token: {TOKEN}\n", "could not be read"),
        ("apiVersion: v1\nkind: Config\n", "Current context is not set"),
    ],
    ids=["missing", "malformed", "no-context"],
)
def test_unusable_kubeconfig_is_one_clear_line(
    tmp_path: Path, text: str | None, expected: str
) -> None:
    path = tmp_path / "kubeconfig"
    if text is not None:
        path.write_text(text)
    result = _operator(tmp_path, str(path))
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "cannot start: no Kubernetes credentials" in output
    assert expected in output
    assert "Traceback" not in output
    assert TOKEN not in output


def test_a_busy_metrics_port_is_one_clear_line(tmp_path: Path, cluster: Cluster) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if k != "KUBERNETES_SERVICE_HOST"}
        env["KUBECONFIG"] = str(cluster.kubeconfig)
        result = subprocess.run(
            [
                *(sys.executable, "-m", "turnpike", "operator", "--standalone"),
                *("--namespace", "tp-nothing", "--metrics", f"127.0.0.1:{port}"),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert f"cannot start: cannot listen for metrics on 127.0.0.1:{port}" in output
    assert "Traceback" not in output
