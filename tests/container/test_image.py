"""scripts/image builds the image with no registry (the base from Debian packages when the
Python base cannot be pulled) and writes a `docker save` archive; the image is the one the chart
expects, has no pip, and a build that lost a component fails instead of looking fine."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from support.container import (
    CONTEXT_DIRS,
    CONTEXT_FILES,
    ROOT,
    Podman,
    archive_tags,
    context_digest,
    scripts_image,
    ulimit_flags,
)

from turnpike.core.version import __version__

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(900)]


def test_scripts_image_builds_and_writes_a_docker_archive(
    podman: Podman, built: tuple[str, Path, str]
) -> None:
    image, archive, _ = built
    assert image in archive_tags(archive)
    out = podman("run", "--rm", *ulimit_flags(), image, "--version").stdout
    assert out.strip() == f"turnpike {__version__}"


def test_the_image_runs_turnpike_as_the_chart_user_with_no_pip(podman: Podman, image: str) -> None:
    [config] = json.loads(podman("image", "inspect", image).stdout)
    assert config["Config"]["User"] == "10001:10001"
    assert config["Config"]["Entrypoint"] == ["turnpike"]
    probe = (
        "import importlib.util, shutil, sys;"
        "print(importlib.util.find_spec('pip'), shutil.which('pip'), shutil.which('pip3'),"
        " sys.prefix != sys.base_prefix)"
    )
    out = podman("run", "--rm", *ulimit_flags(), "--entrypoint=python3", image, "-c", probe)
    assert out.stdout.split() == ["None", "None", "None", "True"]


def test_a_build_that_lost_a_component_fails(
    podman: Podman, built: tuple[str, Path, str], tmp_path: Path
) -> None:
    # The tree as it is, except that the stream gateway's folder came out empty (as when a
    # component was a symlink that a checkout did not create): the wheel still builds.
    context = tmp_path / "src"
    context.mkdir()
    for name in CONTEXT_FILES:
        shutil.copy2(ROOT / name, context / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.bpf.o")
    for name in CONTEXT_DIRS:
        shutil.copytree(ROOT / name, context / name, ignore=ignore)
    # Its packages stay (so the wheel builds), their modules are gone.
    for module in (context / "streamgw" / "turnpike" / "streamgw").rglob("*.py"):
        if module.name != "__init__.py":
            module.unlink()

    broken = f"localhost/turnpike-test-broken:{context_digest(context)}"
    podman("rmi", "--force", broken, check=False)  # left by an earlier session, if any
    proc = scripts_image(podman, broken, context=context)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output[-3000:]
    assert "cannot import name 'cli' from 'turnpike.streamgw'" in output, output[-3000:]
    assert podman("image", "exists", broken, check=False).returncode == 1
