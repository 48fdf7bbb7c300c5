# The Bulletproof monitor: watch folders, ffmpeg workers, /metrics and the control API on :8080.
#
#   docker build -t bulletproof:0.1.0 .
#   docker run --rm -e BULLETPROOF_API_TOKEN=... -p 127.0.0.1:8080:8080 \
#       -v "$PWD/videos/incoming:/watch" -v "$PWD/videos/processed:/output" \
#       -v bulletproof-data:/data bulletproof:0.1.0
#
# docker-compose.yml builds this image for the whole stack; docs/deployment.md explains both.
# Needs BuildKit (the default builder since Docker 23) for the wheel mount below.
#
# Stage 1 builds the project's wheel and the wheels of its dependencies; stage 2 installs them
# offline into a slim Python with Debian's ffmpeg: no compiler, no pip cache, no source tree.
# No secret is baked in: the API token comes at run time (BULLETPROOF_API_TOKEN or
# api.token_file).

# The base of both stages: the Python and the Debian release (bookworm: ffmpeg 5.1, as the test
# suite uses) that CI tests with. Bump deliberately, with the tests.
ARG PYTHON_IMAGE=python:3.11.16-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bulletproof/ bulletproof/
COPY exporter/ exporter/
# bulletproof-*.whl plus every dependency as a wheel (all of them publish manylinux wheels),
# with the `postgres` extra (psycopg 3 and its binary wheel, libpq included) so that the image
# can be a node of a fleet sharing a PostgreSQL queue (docker-compose.fleet.yml).
RUN pip wheel --wheel-dir /wheels ".[postgres]" \
    && ls /wheels/bulletproof-*.whl /wheels/psycopg_binary-*.whl

FROM ${PYTHON_IMAGE} AS runtime
ARG BULLETPROOF_UID=10001
ARG BULLETPROOF_GID=10001
LABEL org.opencontainers.image.title="bulletproof" \
      org.opencontainers.image.description="A folder-watching video transcoder observed through Prometheus, Grafana and Alertmanager" \
      org.opencontainers.image.licenses="MIT"
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# ffmpeg (and ffprobe) from Debian; no recommends, no package lists left behind.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ffmpeg \
    && rm -rf /var/lib/apt/lists/*

# An unprivileged user. Its group owns the state and config folders (group-writable), so a
# compose `user:` override with `group_add: [10001]` can run as the host user that owns the
# video folders and still write the database and the config.
RUN groupadd --system --gid "${BULLETPROOF_GID}" bulletproof \
    && useradd --system --uid "${BULLETPROOF_UID}" --gid "${BULLETPROOF_GID}" \
        --home-dir /data --no-create-home --shell /usr/sbin/nologin bulletproof

# Install from the builder's wheels only (--no-index): nothing is compiled or fetched here.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels "bulletproof[postgres]" \
    && bulletproof --version \
    && python -c "import psycopg; print('psycopg', psycopg.__version__, 'libpq', psycopg.pq.version())" \
    && ffmpeg -hide_banner -version | head -n 1

# The default config: the container's paths, the API on 0.0.0.0:8080, no secret.
COPY --chown=${BULLETPROOF_UID}:${BULLETPROOF_GID} examples/monitor.compose.yaml /config/monitor.yaml
RUN mkdir -p /data /watch /output \
    && chown "${BULLETPROOF_UID}:${BULLETPROOF_GID}" /config /data /watch /output \
    && chmod 0775 /config /data /watch /output \
    && chmod 0664 /config/monitor.yaml

# /data holds the SQLite queue and history (a fleet node keeps them on PostgreSQL instead);
# /watch and /output are the video folders.
VOLUME ["/data", "/watch", "/output"]
WORKDIR /data
USER ${BULLETPROOF_UID}:${BULLETPROOF_GID}

# /metrics, /healthz, /readyz, /api/v1/*, /ws/updates (api.listen in the config).
EXPOSE 8080

# Alive = the HTTP server answers. Python's urllib: the slim image has no curl or wget.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4).status == 200 else 1)"]

# Exec form, no shell in between: SIGTERM reaches the monitor itself, which ends its ffmpeg
# processes, removes their temporaries and puts their jobs back in the queue.
STOPSIGNAL SIGTERM
ENTRYPOINT ["bulletproof"]
CMD ["run", "--config", "/config/monitor.yaml"]
