"""The repository layout: no symlinks, every component in the wheel built from an archive of the
repository, built with the setuptools floor pyproject.toml names, and the standard library's
``operator`` module never shadowed."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import tarfile
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
COMPONENT_FOLDERS = ("relay", "streamgw", "operator")


def _tracked_files() -> list[tuple[str, str]]:
    """(mode, path) of every file git tracks."""
    out = subprocess.run(
        ["git", "ls-files", "-s"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    return [(line.split()[0], line.split("\t", 1)[1]) for line in out.splitlines()]


def _source_modules() -> set[str]:
    """Every ``turnpike.*`` module in the checkout, found by walking the folders."""
    modules = set()
    for base in (ROOT, *(ROOT / folder for folder in COMPONENT_FOLDERS)):
        for path in (base / "turnpike").rglob("*.py"):
            rel = path.relative_to(base).with_suffix("")
            modules.add(".".join(rel.parts))
    return modules


def test_no_symlink_is_tracked() -> None:
    links = [path for mode, path in _tracked_files() if mode == "120000"]
    assert links == []


def test_operator_folder_is_not_a_regular_package() -> None:
    # A regular package here would be imported as `operator` by any `python -m …` started from
    # the repository root in a fresh virtualenv (runpy imports collections, which imports
    # operator, before site-packages are set up). Without __init__.py it never wins.
    assert not (ROOT / "operator" / "__init__.py").exists()
    assert not (ROOT / "turnpike" / "__init__.py").exists(), "turnpike is a namespace package"


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


def test_every_package_folder_is_declared() -> None:
    # pyproject.toml lists the packages; a new subpackage left out of the list would be missing
    # from every wheel and image.
    declared = set(PYPROJECT["tool"]["setuptools"]["packages"])
    found = {module.rsplit(".", 1)[0] for module in _source_modules()}
    assert found == declared


@pytest.mark.slow
def test_wheel_from_git_archive_holds_and_runs_every_component(tmp_path: Path) -> None:
    """Build the wheel from `git archive HEAD` with the lowest setuptools pyproject.toml allows,
    then import every module of it from outside the checkout."""
    floor = next(req for req in PYPROJECT["build-system"]["requires"] if "setuptools" in req)
    assert floor.startswith("setuptools>="), floor
    builder = tmp_path / "builder"
    venv.create(builder, with_pip=True)
    python = builder / "bin" / "python"
    pin = floor.replace(">=", "==")
    subprocess.run(
        [python, "-m", "pip", "install", "-q", "--disable-pip-version-check", pin, "wheel"],
        check=True,
    )

    archive = tmp_path / "src.tar"
    subprocess.run(["git", "archive", "-o", archive, "HEAD"], cwd=ROOT, check=True)
    source = tmp_path / "src"
    with tarfile.open(archive) as tar:
        tar.extractall(source, filter="data")
    subprocess.run(
        [
            *(python, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"),
            *("--disable-pip-version-check", "-w", tmp_path / "dist", source),
        ],
        check=True,
    )
    (wheel,) = (tmp_path / "dist").glob("turnpike-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        zf.extractall(tmp_path / "installed")  # noqa: S202 (the wheel we just built)
    in_wheel = {name[: -len(".py")].replace("/", ".") for name in names if name.endswith(".py")}
    assert _source_modules() <= in_wheel

    # Import every module from the unpacked wheel, with this environment's dependencies but
    # without its site hooks (so the editable install of the checkout cannot stand in for it).
    site_packages = sysconfig.get_paths()["purelib"]
    modules = sorted(_source_modules() - {"turnpike.__main__"})
    script = (
        "import importlib, sys\n"
        f"sys.path[:0] = [{str(tmp_path / 'installed')!r}]\n"
        f"sys.path.append({site_packages!r})\n"
        f"for name in {modules!r}:\n"
        "    module = importlib.import_module(name)\n"
        f"    assert module.__file__.startswith({str(tmp_path / 'installed')!r}), module\n"
        "from turnpike.cli import main\n"
        "sys.exit(main(['--version']))\n"
    )
    result = subprocess.run(
        [sys.executable, "-S", "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("turnpike "), result.stdout
