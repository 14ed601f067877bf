# The one turnpike image every component runs (relay, tokens, streamgw, operator). Build it with
# scripts/image (Docker + BuildKit or Podman; no registry needed), or directly:
#
#   DOCKER_BUILDKIT=1 docker build --network=host -t turnpike:local .
#   docker run --rm turnpike:local --version
#
# Stage 1 compiles the relay's eBPF fast path with Debian's clang and builds wheels for Turnpike
# and its pinned dependencies; stage 2 installs them (and libbpf1 and espeak-ng) into a
# clean slim Python with no compiler, no pip and no build tools, running as a numeric non-root
# user, and fails the build unless every component is there and imports. Dependencies and
# Turnpike itself are separate steps, so a source change rebuilds only Turnpike's own wheel.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 DEBIAN_FRONTEND=noninteractive
# Debian's clang and libbpf headers, for the relay's kernel fast path (an eBPF object).
RUN apt-get update -qq \
    && apt-get install -y -qq --no-install-recommends clang libbpf-dev >/dev/null \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# The dependencies, as pyproject.toml declares them and constraints.txt pins them. The optional
# ca-certificates secret is the build host's trust store (scripts/image passes it), for pip behind
# an intercepting proxy; a secret mount never lands in a layer.
COPY pyproject.toml constraints.txt ./
RUN --mount=type=secret,id=ca-certificates \
    if [ -s /run/secrets/ca-certificates ]; then export PIP_CERT=/run/secrets/ca-certificates; fi \
    && python3 -c 'import tomllib; \
print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
       > /tmp/requirements.txt \
    && pip wheel --wheel-dir /deps --requirement /tmp/requirements.txt --constraint constraints.txt \
    && cd /deps && sha256sum *.whl > /deps.sha256
# Turnpike itself (see .dockerignore: the metadata, the pins, and the four source folders, each
# component folder holding its portion of the turnpike package). The fast path's object is
# compiled next to its source, so the wheel ships it (package data).
COPY README.md ./
COPY turnpike ./turnpike
COPY relay ./relay
COPY streamgw ./streamgw
COPY operator ./operator
RUN clang -O2 -g -Wall -Werror -target bpf -I"/usr/include/$(uname -m)-linux-gnu" \
    -c relay/turnpike/relay/fastpath.bpf.c -o relay/turnpike/relay/fastpath.bpf.o
RUN --mount=type=secret,id=ca-certificates \
    if [ -s /run/secrets/ca-certificates ]; then export PIP_CERT=/run/secrets/ca-certificates; fi \
    && pip wheel --no-deps --wheel-dir /wheels . \
    && cd /wheels && sha256sum *.whl > /wheels.sha256

FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
# Debian's runtime packages (no recommends): libbpf1 loads the relay's fast path, espeak-ng is
# the gateway's embedded <Say> engine.
RUN apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libbpf1 espeak-ng \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/apt/* /var/log/dpkg.log \
    && groupadd --gid 10001 turnpike \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin turnpike
# Each install step is preceded by the checksums of the wheels it installs: Podman's builder does
# not key its cache for a RUN on what the RUN bind-mounts, so without them a changed wheel could
# reuse a stale install layer.
COPY --from=build /deps.sha256 /usr/share/turnpike/deps.sha256
RUN --mount=type=bind,from=build,source=/deps,target=/deps \
    pip install --no-index --no-deps /deps/*.whl
COPY --from=build /wheels.sha256 /usr/share/turnpike/wheels.sha256
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels turnpike \
    && pip check \
    && pip uninstall --yes pip setuptools wheel
# A wheel built without a component folder would still install; this makes such a build fail:
# every subcommand's module loads (turnpike --version builds the full command line), every
# component package is present and each of its modules imports, and the relay's fast path
# object and the libbpf that loads it are there (a pod granted CAP_BPF and CAP_NET_ADMIN uses
# them; without those capabilities the relay says so once and relays in userspace).
RUN turnpike --version \
    && python3 -c 'from turnpike.relay import bpf, offload; \
assert offload.object_path().is_file(), offload.object_path(); bpf.libbpf()' \
    && python3 -c 'import importlib, pkgutil; \
[importlib.import_module(m.name) \
 for c in ("core", "tokens", "dev", "relay", "streamgw", "operator") \
 for m in pkgutil.walk_packages(importlib.import_module("turnpike." + c).__path__, f"turnpike.{c}.")]'
LABEL org.opencontainers.image.title="turnpike" \
      org.opencontainers.image.description="Self-hosted STUN/TURN relays, ICE-server tokens and Media Streams gateway" \
      org.opencontainers.image.licenses="Apache-2.0"
# Numeric, so that Kubernetes can verify runAsNonRoot without reading /etc/passwd.
USER 10001:10001
WORKDIR /tmp
ENTRYPOINT ["turnpike"]
CMD ["--help"]
