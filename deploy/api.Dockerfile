# syntax=docker/dockerfile:1.7
# zapgate api image. Build from the repository root:
#   docker build -f deploy/api.Dockerfile .
# Dependencies are installed from uv.lock before any source is copied, so a code change
# rebuilds only the last layers.

FROM python:3.11-slim AS build
COPY --from=ghcr.io/astral-sh/uv:0.13.9 /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src

# 1. Dependencies only: the lock file and every workspace member's pyproject.toml.
COPY pyproject.toml uv.lock ./
COPY libs/contracts/pyproject.toml libs/contracts/pyproject.toml
COPY libs/runtime/pyproject.toml libs/runtime/pyproject.toml
COPY libs/wapi/pyproject.toml libs/wapi/pyproject.toml
COPY libs/devservers/pyproject.toml libs/devservers/pyproject.toml
COPY services/ingest/pyproject.toml services/ingest/pyproject.toml
COPY services/health/pyproject.toml services/health/pyproject.toml
COPY services/sender/pyproject.toml services/sender/pyproject.toml
COPY services/api/pyproject.toml services/api/pyproject.toml
COPY services/console/pyproject.toml services/console/pyproject.toml
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-workspace --package zapgate-api

# 2. The code, installed non-editable so the runtime stage needs only the venv.
COPY libs libs
COPY services services
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --package zapgate-api

FROM python:3.11-slim
RUN groupadd --system --gid 10001 zapgate \
    && useradd --system --uid 10001 --gid zapgate --home-dir /app --no-create-home zapgate \
    && mkdir -p /app/var && chown zapgate:zapgate /app/var
COPY --from=build /app/.venv /app/.venv
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1
WORKDIR /app
USER zapgate
EXPOSE 8000 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=5 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen(\"http://127.0.0.1:8080/readyz\", timeout=2)"]
CMD ["zapgate-api", "run"]
