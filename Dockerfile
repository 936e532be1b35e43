# semwatch container image: one image for every command (`worker`, `page`, `replay`, ...).
#
#   docker build -t semwatch:0.1.0 .
#   docker run --rm -e SEMWATCH_BROKER_URL=kafka://kafka:9092 semwatch:0.1.0 worker
#
# Base image pinned by version tag (Python 3.11 on Debian 12). Every runtime dependency ships a
# manylinux wheel for CPython 3.11 on x86_64, so no compiler is installed.
FROM python:3.11.10-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Install the package (and only what the package needs: no tests, no .venv from the build context).
WORKDIR /src
COPY pyproject.toml README.md ./
COPY semwatch/ semwatch/
COPY streams/ streams/
COPY detectors/ detectors/
COPY rules/ rules/
COPY sinks/ sinks/
RUN pip install . \
    && rm -rf /src

# Non-root user. /app is its working directory: Faust keeps its small data directory
# (<app_id>-data) in the working directory, so it must be writable.
RUN groupadd --system --gid 10001 semwatch \
    && useradd --system --uid 10001 --gid semwatch --home-dir /app --shell /usr/sbin/nologin semwatch \
    && mkdir -p /app \
    && chown semwatch:semwatch /app

# Default detector/rule/price config, so the image works on its own. docker-compose.yml mounts the
# repository's config/ over it read-only; mount your own the same way.
COPY config/ /app/config/
ENV SEMWATCH_CONFIG_DIR=/app/config

WORKDIR /app
USER semwatch

# 9464: worker /metrics (SEMWATCH_METRICS_PORT). The pager agent is configured to 9465 in compose.
EXPOSE 9464

ENTRYPOINT ["semwatch"]
CMD ["worker"]
