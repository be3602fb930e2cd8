# syntax=docker/dockerfile:1
# The llm-token-exporter image: a wheel built in a builder stage, installed into a slim final stage that runs as a
# non-root numeric user and writes nothing at run time (the chart mounts its root filesystem read-only).
#
# Base images are pinned by tag. Production builds should also pin the digest, e.g.
#   FROM python:3.11-slim-bookworm@sha256:<digest>
# and refresh it deliberately (`docker buildx imagetools inspect python:3.11-slim-bookworm`).
#
#   docker build -t llm-token-exporter:0.1.0 .

FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY exporter ./exporter
# Every dependency ships binary wheels for this platform: no compiler is needed, here or below.
RUN pip wheel --wheel-dir /wheels --only-binary=:all: --no-binary=llm-token-exporter .

FROM python:3.11-slim-bookworm
LABEL org.opencontainers.image.title="llm-token-exporter" \
      org.opencontainers.image.description="Per-node Prometheus exporter for vLLM GPU nodes" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=utility
# Install from the builder's wheels only (bytecode compiled now, since nothing may be written later), then drop
# the installers: the running image needs neither pip nor setuptools.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels llm-token-exporter \
    && pip uninstall -y pip setuptools wheel \
    && groupadd --system --gid 65532 exporter \
    && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin exporter
USER 65532:65532
WORKDIR /
# /metrics, /healthz, /readyz; OTLP gRPC; OTLP HTTP
EXPOSE 9842 4317 4318
ENTRYPOINT ["llm-token-exporter", "serve"]
