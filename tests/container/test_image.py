"""scripts/image builds the image with no registry (the base from Debian packages when the
Python base cannot be pulled) and writes a `docker save` archive, with Podman and with Docker (a
private daemon it starts and stops); the image is the one the chart expects, has no pip, both
engines build the same image, and a build that lost a component fails instead of looking fine."""

from __future__ import annotations

import contextlib
import json
import re
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
    docker_data_root,
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


# What a person relies on in the image, as the image itself reports it.
PROBE = """
import importlib, importlib.metadata, importlib.util, json, os, pkgutil, shutil, sys
from turnpike.relay import offload
components = ("core", "tokens", "dev", "relay", "streamgw", "operator")
print(json.dumps({
    "ids": [os.getuid(), os.getgid()],
    "modules": sorted(
        m.name for c in components
        for m in pkgutil.walk_packages(
            importlib.import_module("turnpike." + c).__path__, f"turnpike.{c}.")),
    "distributions": sorted(
        f"{d.metadata['Name']}=={d.version}" for d in importlib.metadata.distributions()),
    "pip": [importlib.util.find_spec("pip") is None, shutil.which("pip"), shutil.which("pip3")],
    "venv": sys.prefix != sys.base_prefix,
    "python": sys.version_info[:2],
    "fastpath": offload.object_path().is_file(),
}))
"""


def probe(podman: Podman, image: str) -> dict[str, object]:
    proc = podman("run", "--rm", *ulimit_flags(), "--entrypoint=python3", image, "-c", PROBE)
    result: dict[str, object] = json.loads(proc.stdout)
    return result


def test_scripts_image_builds_with_a_private_docker_daemon_and_stops_it(
    podman: Podman, docker_built: tuple[str, Path, str]
) -> None:
    image, archive, output = docker_built
    assert image in archive_tags(archive)
    [started] = re.findall(r"started a private dockerd for this build \(in (\S+), store", output)
    assert f"stopped the private dockerd and removed {started}" in output, output[-3000:]
    assert not Path(started).exists()
    # Nothing of the daemon is left: no process running with its directories, nothing mounted.
    private = (started, str(docker_data_root()))
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            args = cmdline.read_bytes().decode(errors="replace")
            assert not any(p in args for p in private), (cmdline, args)
    mounts = Path("/proc/self/mountinfo").read_text()
    assert not any(p + "/" in mounts for p in private)
    out = podman("run", "--rm", *ulimit_flags(), image, "--version").stdout
    assert out.strip() == f"turnpike {__version__}"


def test_docker_and_podman_build_the_same_image(
    podman: Podman, image: str, docker_image: str
) -> None:
    configs = []
    for name in (image, docker_image):
        [inspected] = json.loads(podman("image", "inspect", name).stdout)
        config = inspected["Config"]
        keys = ("User", "Entrypoint", "Cmd", "WorkingDir", "Env", "Labels")
        summary = {key: config.get(key) for key in keys}
        # Buildah stamps its own version; the image's labels are the rest.
        summary["Labels"] = {
            k: v for k, v in (config.get("Labels") or {}).items() if k != "io.buildah.version"
        }
        configs.append(summary)
    assert configs[0] == configs[1]
    assert configs[0]["User"] == "10001:10001"
    podman_built, docker_built = probe(podman, image), probe(podman, docker_image)
    assert podman_built == docker_built
    assert podman_built["ids"] == [10001, 10001]
    assert podman_built["pip"] == [True, None, None] and podman_built["venv"] is True
    assert podman_built["fastpath"] is True
    modules = podman_built["modules"]
    assert isinstance(modules, list)
    for component in ("tokens", "relay", "streamgw", "operator"):
        assert f"turnpike.{component}.cli" in modules
