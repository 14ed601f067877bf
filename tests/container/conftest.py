"""The image, built once per session with scripts/image, for every container test."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.container import Podman, build_image, context_digest, require_root_podman


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
