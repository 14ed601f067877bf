"""The repository layout must never shadow the standard library's ``operator`` module."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_operator_folder_is_not_a_regular_package() -> None:
    # A regular package here would be imported as `operator` by any `python -m …` started from
    # the repository root in a fresh virtualenv (runpy imports collections, which imports
    # operator, before site-packages are set up). As a namespace portion it never wins.
    assert not (ROOT / "operator" / "__init__.py").exists()


def test_python_dash_m_from_repo_root_without_site() -> None:
    # -S: no site-packages, so nothing has imported `operator` before the cwd is searched.
    result = subprocess.run(
        [sys.executable, "-S", "-m", "json.tool"],
        input="{}",
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_components_import_under_the_turnpike_namespace() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import turnpike.operator.cli, turnpike.relay.cli, "
            "turnpike.streamgw.cli; import operator; print(operator.eq)",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "built-in function eq" in result.stdout
