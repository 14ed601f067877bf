# syntax=docker/dockerfile:1
# The one turnpike image every component runs (relay, tokens, streamgw, operator):
#
#   docker build -t turnpike:0.1.0 .
#   docker run --rm turnpike:0.1.0 --help
#
# Stage 1 builds wheels for Turnpike and its pinned dependencies; stage 2 installs them into a
# clean slim Python with no compiler, no pip and no build tools, running as a numeric non-root user.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
# Only what the package is built from (see .dockerignore): the metadata, the pins, and the four
# source folders (each component folder holds its portion of the turnpike package).
COPY pyproject.toml README.md constraints.txt ./
COPY turnpike ./turnpike
COPY relay ./relay
COPY streamgw ./streamgw
COPY operator ./operator
RUN pip wheel --wheel-dir /wheels --constraint constraints.txt .

FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
# espeak-ng: the gateway's embedded <Say> engine (Debian's package, no recommends).
RUN apt-get update \
    && apt-get install -y --no-install-recommends espeak-ng \
    && rm -rf /var/lib/apt/lists/*
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels turnpike \
    && pip uninstall --yes pip setuptools wheel \
    && groupadd --gid 10001 turnpike \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin turnpike
LABEL org.opencontainers.image.title="turnpike" \
      org.opencontainers.image.description="Self-hosted STUN/TURN relays, ICE-server tokens and Media Streams gateway" \
      org.opencontainers.image.licenses="Apache-2.0"
# Numeric, so that Kubernetes can verify runAsNonRoot without reading /etc/passwd.
USER 10001:10001
WORKDIR /tmp
ENTRYPOINT ["turnpike"]
CMD ["--help"]
