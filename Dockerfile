# syntax=docker/dockerfile:1
# One image for both components of Falco Triage:
#   falco-triage run      the operator (kopf)
#   falco-triage ingest   the HTTP receiver for Falco and Falcosidekick
# Built as: docker build -t falco-triage:dev .
#
# It runs as the unprivileged user 65532 and writes nothing outside /tmp, so it works with a
# read-only root filesystem (the chart's default).

# A specific patch release on a specific Debian release: rebuilds get the same Python unless
# this line changes.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# ---- build: the wheel, installed into a self-contained virtual environment -------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# Only what the wheel is built from (see .dockerignore).
COPY pyproject.toml README.md ./
COPY operator ./operator
# NB: pip compiles the installed modules to bytecode here, at build time; at run time
# PYTHONDONTWRITEBYTECODE keeps Python from trying to write into the read-only filesystem.
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
 && python -m venv /opt/falco-triage \
 && /opt/falco-triage/bin/pip install /wheels/falco_triage-*.whl \
 && /opt/falco-triage/bin/falco-triage --version

# ---- runtime ----------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="falco-triage" \
      org.opencontainers.image.description="Falco alerts as analyzed FalcoAlert resources, with policy-driven, reversible responses" \
      org.opencontainers.image.licenses="Apache-2.0"
# The virtual environment points at the base image's /usr/local/bin/python3.11, which is the
# same in both stages.
COPY --from=build /opt/falco-triage /opt/falco-triage
ENV PATH=/opt/falco-triage/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    TMPDIR=/tmp
WORKDIR /tmp
# 65532: the conventional "nonroot" user of distroless images; no entry in /etc/passwd is needed.
USER 65532:65532
# 8080: the receiver (falco-triage ingest); 8081: the operator's liveness endpoint.
EXPOSE 8080 8081
ENTRYPOINT ["falco-triage"]
CMD ["--help"]
