# syntax=docker/dockerfile:1
# One image recipe for every Coca AI service. SERVICE is the directory under services/ (gateway,
# ws_gateway, user, agent, channel, memory, billing, plugin, web). From the repository root:
#   docker build -f deploy/docker/service.Dockerfile --build-arg SERVICE=user -t coca/user .
# The image runs `python -m coca_${SERVICE}`; its argument is the command, so migrations are the
# same image with `migrate`:  docker run --rm -e DATABASE_URL=... coca/user migrate
# The LLM stand-in (NOT A MODEL; `make up` without a GPU) is the target llm-standin:
#   docker build -f deploy/docker/service.Dockerfile --target llm-standin -t coca/llm-standin .
# Keep UV_VERSION equal to the Makefile's (tests/deploy checks it).
ARG PY=python:3.11-slim-bookworm
ARG UV_VERSION=0.13.8

FROM ghcr.io/astral-sh/uv:${UV_VERSION} AS uv

FROM ${PY} AS base
COPY --from=uv /uv /bin/uv
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=0 UV_FROZEN=1
WORKDIR /app

# Third-party dependencies first (a layer that changes only with the lock), then the workspace code.
FROM base AS build
ARG SERVICE
RUN test -n "${SERVICE}" || { echo "build with --build-arg SERVICE=<directory under services/>" >&2; exit 1; }
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=bind,source=uv.lock,target=uv.lock \
    --mount=type=bind,source=pyproject.toml,target=pyproject.toml \
    uv sync --frozen --no-dev --no-install-workspace --package coca-${SERVICE}
COPY libs libs
COPY services/${SERVICE} services/${SERVICE}
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=bind,source=uv.lock,target=uv.lock \
    --mount=type=bind,source=pyproject.toml,target=pyproject.toml \
    uv sync --frozen --no-dev --no-editable --package coca-${SERVICE}

FROM base AS standin-build
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=bind,source=uv.lock,target=uv.lock \
    --mount=type=bind,source=pyproject.toml,target=pyproject.toml \
    uv sync --frozen --no-dev --no-install-workspace --package coca-llm-standin
COPY libs libs
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=bind,source=uv.lock,target=uv.lock \
    --mount=type=bind,source=pyproject.toml,target=pyproject.toml \
    uv sync --frozen --no-dev --no-editable --package coca-llm-standin

# The runtime stages: the interpreter and the virtual environment, no uv, no sources, no compiler.
FROM ${PY} AS runtime
RUN groupadd --system --gid 10001 coca \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin coca
ENV PATH=/app/.venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 HOME=/tmp HTTP_HOST=0.0.0.0 GRPC_HOST=0.0.0.0
WORKDIR /app
USER 10001:10001

FROM runtime AS llm-standin
COPY --from=standin-build /app/.venv /app/.venv
EXPOSE 8090
ENTRYPOINT ["python", "-m", "coca_llm_standin", "--host", "0.0.0.0", "--port", "8090"]

# The default target (last stage): one service.
FROM runtime AS service
ARG SERVICE
ENV SERVICE=${SERVICE}
COPY --from=build /app/.venv /app/.venv
ENTRYPOINT ["/bin/sh", "-c", "exec python -m \"coca_${SERVICE}\" \"$@\"", "coca"]
CMD ["serve"]
