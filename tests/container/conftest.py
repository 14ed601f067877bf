"""The image, built once per session with scripts/image, for every container test: with Podman,
and (for the tests that compare the engines) with Docker, loaded into the test Podman from the
`docker save` archive the Docker build wrote."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.container import (
    Podman,
    build_image,
    context_digest,
    require_docker,
    require_root_podman,
)


@pytest.fixture(scope="session")
def podman() -> Podman:
    return require_root_podman()


@pytest.fixture(scope="session")
def built(podman: Podman, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, str]:
    """(image name, the `docker save` archive scripts/image wrote, the build's output)."""
    image = f"localhost/turnpike-test:{context_digest()}"
    archive = tmp_path_factory.mktemp("image") / "turnpike.tar"
    output = build_image(podman, image, archive)
    return image, archive, output


@pytest.fixture(scope="session")
def image(built: tuple[str, Path, str]) -> str:
    return built[0]


@pytest.fixture(scope="session")
def docker_built(podman: Podman, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, str]:
    """The same, built by scripts/image with Docker (a private daemon of its own), then loaded
    into the test Podman from its archive."""
    require_docker()
    image = f"localhost/turnpike-test-docker:{context_digest()}"
    archive = tmp_path_factory.mktemp("docker-image") / "turnpike.tar"
    output = build_image(podman, image, archive, engine="docker")
    podman("load", "--quiet", "--input", str(archive))
    return image, archive, output


@pytest.fixture(scope="session")
def docker_image(docker_built: tuple[str, Path, str]) -> str:
    return docker_built[0]
