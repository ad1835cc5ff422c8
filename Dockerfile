# Production-like image of the API (and of the sandbox, with another command).
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install .
COPY models ./models
RUN useradd --system --uid 10001 b2bscore && mkdir -p /app/var && chown b2bscore /app/var
USER b2bscore
ENV B2BSCORE_MODELS_DIR=/app/models PROMETHEUS_MULTIPROC_DIR=/tmp
EXPOSE 8000
CMD ["b2bscore", "serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "2"]
