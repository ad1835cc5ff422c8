# One image for every b2bscore process: the API, the workers, the migrations, the sandbox.
# Built once (docker compose builds it for the `migrate` service; the others reuse it).
#
# Stage 1 builds the wheel, which carries the migrations and the model bundles of
# models/ (setup.py); stage 2 installs that wheel alone: no source tree in the image.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml setup.py MANIFEST.in README.md ./
COPY src ./src
COPY models ./models
RUN pip wheel --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# libgomp1: LightGBM's OpenMP runtime.
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /wheels /wheels
RUN pip install /wheels/*.whl && rm -rf /wheels
# Owned by the service's user, so that a named volume mounted there starts writable.
RUN useradd --system --uid 10001 --home-dir /app b2bscore \
    && mkdir -p /app/var /app/checkpoints && chown b2bscore /app/var /app/checkpoints
WORKDIR /app
USER 10001
# var/ holds only what the embedded default keeps on disk; compose and Kubernetes pass
# every secret and store by B2BSCORE_* variables instead.
ENV B2BSCORE_VAR_DIR=/app/var
EXPOSE 8000
CMD ["b2bscore", "serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "2"]
