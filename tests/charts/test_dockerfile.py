"""The Dockerfile, read statically (no container engine is needed to run the suite): a multi-stage
build whose final stage is a slim Python with no build tools, runs as a numeric non-root user and
starts `turnpike`; and the build copies every folder the package is made of."""

from __future__ import annotations

import json
import tomllib
import re
from dataclasses import dataclass, field

from charts.chartkit import ROOT

RUNTIME_PACKAGES = {"espeak-ng", "libbpf1"}
BUILD_TOOLS = re.compile(
    r"\b(gcc|g\+\+|clang|make|build-essential|cc|python3?-dev|libc6?-dev|git|curl|wget)\b"
)


@dataclass
class Stage:
    base: str
    name: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [arg for word, arg in self.instructions if word == keyword]


def parse(text: str) -> tuple[dict[str, str], list[Stage]]:
    """(global ARG defaults, stages) with line continuations joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", text)
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for raw in joined.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        word = word.upper()
        if word == "FROM":
            match = re.match(r"(\S+)(?:\s+AS\s+(\S+))?", rest, re.IGNORECASE)
            assert match, line
            base = re.sub(r"\$\{(\w+)\}", lambda m: args[m[1]], match[1])
            stages.append(Stage(base, match[2] or str(len(stages))))
        elif word == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default
        else:
            assert stages, f"instruction before FROM: {line}"
            stages[-1].instructions.append((word, rest))
    return args, stages


def _stages() -> list[Stage]:
    return parse((ROOT / "Dockerfile").read_text())[1]


def test_multi_stage_with_a_slim_python_311_runtime() -> None:
    stages = _stages()
    assert len(stages) >= 2
    build, final = stages[0], stages[-1]
    assert re.fullmatch(r"python:3\.11(\.\d+)?-slim(-\w+)?", final.base), final.base
    # The wheel is built in the first stage and only its wheels reach the last one.
    assert any("pip wheel" in run for run in build.all("RUN"))
    installs = " ".join(final.all("RUN"))
    assert f"from={build.name}" in installs
    assert "--no-index" in installs, "the runtime stage must not download or build anything"


def test_final_stage_has_no_build_tools() -> None:
    final = _stages()[-1]
    for run in final.all("RUN"):
        assert "apk add" not in run, run
        if "apt-get install" in run:
            # Only the runtime programs the image needs (espeak-ng speaks <Say>, libbpf1 loads
            # the relay's fast path), nothing more.
            assert "--no-install-recommends" in run and "rm -rf /var/lib/apt/lists" in run, run
            packages = run.split("--no-install-recommends", 1)[1].split("&&", 1)[0].split()
            assert packages and set(packages) <= RUNTIME_PACKAGES, packages
        assert not BUILD_TOOLS.search(run.replace("build,", "")), run
    assert "pip uninstall --yes pip setuptools wheel" in " ".join(final.all("RUN"))
    # Nothing from the source tree is copied into the final image directly: only the wheels'
    # checksums from the build stage (they key the install steps' cache).
    assert final.all("ADD") == []
    copies = [c.split() for c in final.all("COPY")]
    assert copies and all(c[0] == f"--from={_stages()[0].name}" for c in copies)
    assert all(c[1].endswith(".sha256") for c in copies)


def test_runs_as_numeric_non_root_user() -> None:
    users = _stages()[-1].all("USER")
    assert users, "the final stage must set USER"
    user, _, group = users[-1].partition(":")
    assert user.isdigit() and int(user) > 0
    assert not group or (group.isdigit() and int(group) > 0)
    # The chart's pods run as the same user.
    values = (ROOT / "charts" / "turnpike" / "values.yaml").read_text()
    assert f"runAsUser: {user}" in values


def test_entrypoint_is_turnpike() -> None:
    final = _stages()[-1]
    assert json.loads(final.all("ENTRYPOINT")[-1]) == ["turnpike"]
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'turnpike = "turnpike.cli:main"' in pyproject


def test_the_build_copies_every_folder_the_package_is_made_of() -> None:
    build = _stages()[0]
    copied = {arg.split()[0] for arg in build.all("COPY")}
    copied |= {name for arg in build.all("COPY") for name in arg.split()[:-1]}
    # turnpike/ and every folder pyproject.toml maps a package from (relay/, streamgw/, operator/).
    package_dirs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-dir"
    ]
    needed = {"turnpike"} | {path.split("/")[0] for path in package_dirs.values()}
    assert needed <= copied
    assert {"pyproject.toml", "README.md", "constraints.txt"} <= copied
    # ...and .dockerignore lets exactly those in.
    allowed = {
        line[1:].rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    assert needed | {"pyproject.toml", "README.md", "constraints.txt"} == allowed


def test_the_parser_sees_a_bad_dockerfile() -> None:
    _, stages = parse("FROM python:3.11 AS b\nRUN apt-get install -y gcc\nUSER root\n")
    assert stages[-1].all("USER") == ["root"]
    assert BUILD_TOOLS.search(stages[-1].all("RUN")[0])
