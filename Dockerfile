# syntax=docker/dockerfile:1
# accessguard image: `accessguard` is the entrypoint; the Kubernetes manifests (deploy/k8s/)
# pass `worker`, `connect hr-webhook`, `connect poller NAME` or `registry import FILE`.
#
# Base pinned by digest (python:3.11-slim-bookworm, linux/amd64 + arm64 index). Bump the tag
# and the digest together: docker buildx imagetools inspect python:3.11-slim-bookworm

# --- build: the wheels of accessguard and every dependency -----------------------------------
FROM python:3.11-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91 AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY streams ./streams
COPY connectors ./connectors
RUN python -m pip wheel --no-cache-dir --wheel-dir /wheels .

# --- runtime: the installed wheels, a non-root user, nothing else ----------------------------
FROM python:3.11-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    ACCESSGUARD_DATA_DIR=/var/lib/accessguard \
    ACCESSGUARD_RULES_DIR=/etc/accessguard/rules \
    ACCESSGUARD_LOG_FORMAT=json
RUN groupadd --system --gid 10001 accessguard \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin accessguard \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/accessguard
# Installed from the build stage's wheels through a bind mount: no wheel stays in a layer.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m pip install --no-cache-dir --no-index --find-links=/wheels accessguard
# The shipped detection rules; Kubernetes mounts the accessguard-rules ConfigMap over them.
COPY rules/*.yaml /etc/accessguard/rules/
WORKDIR /var/lib/accessguard
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["accessguard"]
CMD ["--help"]
