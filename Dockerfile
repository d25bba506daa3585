# syntax=docker/dockerfile:1
# The eventpipe image: one entry point, `eventpipe`; the command picks the role.
#   docker build -t eventpipe .
#   docker run -p 8080:8080 -e EVENTPIPE_KAFKA_BOOTSTRAP=kafka:9092 eventpipe           # receiver
#   docker run -e EVENTPIPE_KAFKA_BOOTSTRAP=kafka:9092 -e EVENTPIPE_SINK=postgresql://... eventpipe consumer
#   docker run ... eventpipe topics ensure      /     docker run ... eventpipe migrate
# The stack with Kafka, PostgreSQL, Prometheus and Grafana is docker-compose.yml.

ARG PYTHON_VERSION=3.11

# ---- build: the eventpipe wheel, installed with its dependencies into a virtualenv ------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY pipeline/ pipeline/
COPY producers/ producers/
COPY consumers/ consumers/
COPY eventpipe/ eventpipe/
# Every dependency ships manylinux wheels (aiohttp, msgspec, uvloop, asyncpg, cramjam), so no compiler
# is needed. The pip cache mount keeps rebuilds after a code change quick.
RUN --mount=type=cache,target=/root/.cache/pip \
    python -m pip wheel --no-deps --wheel-dir /wheels . \
 && python -m venv /opt/venv \
 && /opt/venv/bin/pip install /wheels/eventpipe-*.whl

# ---- runtime: the venv on a clean slim image, as an unprivileged user ---------------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
LABEL org.opencontainers.image.title="eventpipe" \
      org.opencontainers.image.description="Drop-in, queue-backed ingestion for e-commerce behaviour events" \
      org.opencontainers.image.licenses="Apache-2.0"

# A fixed numeric uid/gid, so Kubernetes' runAsNonRoot can verify it and volumes can be chowned to it.
RUN groupadd --system --gid 10001 eventpipe \
 && useradd --system --uid 10001 --gid eventpipe --home-dir /var/lib/eventpipe --create-home \
        --shell /usr/sbin/nologin eventpipe

COPY --from=build /opt/venv /opt/venv

# Inside a container the receiver must listen on every interface to be reachable at all, hence the
# host default here (the program's own default stays 127.0.0.1). Bytecode was compiled at install time,
# so nothing needs to write next to the code and the root filesystem can be mounted read-only.
ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    EVENTPIPE_HTTP_HOST=0.0.0.0 \
    EVENTPIPE_LOG_FORMAT=json \
    EVENTPIPE_DATA_DIR=/var/lib/eventpipe

WORKDIR /var/lib/eventpipe
USER 10001:10001

# 8080: the receiver (vendor APIs, /metrics, /healthz, /readyz); 9400: a consumer's /metrics, /healthz,
# /readyz.
EXPOSE 8080 9400
STOPSIGNAL SIGTERM

# Liveness of whichever server this container runs: the receiver's port if it listens, else the
# consumer's. Python's stdlib only: slim images have no curl or wget. Readiness (/readyz) is checked by
# the orchestrator (docker-compose.yml, the Kubernetes probes), not here.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, socket, sys, urllib.request as r; ports = [int(os.environ.get(name) or default) for name, default in (('EVENTPIPE_HTTP_PORT', 8080), ('EVENTPIPE_METRICS_PORT', 9400))]; up = [p for p in ports if socket.socket().connect_ex(('127.0.0.1', p)) == 0]; sys.exit(0 if up and r.urlopen(f'http://127.0.0.1:{up[0]}/healthz', timeout=3).status == 200 else 1)"]

ENTRYPOINT ["eventpipe"]
CMD ["receiver", "--host", "0.0.0.0"]
