"""Prometheus metrics of the service (multiprocess-aware)."""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1, 2.5)

REQUEST_LATENCY = Histogram(
    "b2bscore_http_request_duration_seconds",
    "Server-side latency of HTTP requests.",
    ["route", "method", "status"],
    buckets=_LATENCY_BUCKETS,
)
SOURCE_LATENCY = Histogram(
    "b2bscore_source_duration_seconds",
    "Latency of each provider call within a score request, by outcome.",
    ["source", "status"],
    buckets=_LATENCY_BUCKETS,
)
SOURCE_STATUS = Counter(
    "b2bscore_source_status_total", "Provider outcomes per score request.", ["source", "status"]
)
DECISIONS = Counter(
    "b2bscore_decisions_total", "Decisions answered, by outcome and mode.", ["decision", "mode"]
)
SCORES = Histogram(
    "b2bscore_score",
    "Distribution of scores answered (0-1000, higher is safer).",
    buckets=tuple(range(100, 1001, 100)),
)
PROBABILITY_OF_DEFAULT = Histogram(
    "b2bscore_probability_of_default",
    "Distribution of calibrated probabilities of default answered.",
    buckets=(0.005, 0.01, 0.02, 0.03, 0.05, 0.08, 0.12, 0.2, 0.35, 0.5, 1.0),
)
STAGE_LATENCY = Histogram(
    "b2bscore_score_stage_duration_seconds",
    "Time spent in each stage of a score request.",
    ["stage"],
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5),
)
AUDIT_BATCH_ROWS = Histogram(
    "b2bscore_audit_batch_rows",
    "Audit rows committed together by the group-commit writer.",
    buckets=(1, 2, 4, 8, 16, 32, 64),
)
ADMISSION_WAIT = Histogram(
    "b2bscore_admission_wait_seconds",
    "Time a decision request waited for its turn before its budget started (kit/admission).",
    buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
ADMISSION_REFUSED = Counter(
    "b2bscore_admission_refused_total",
    "Decision requests answered 503 overloaded: no turn within the admission wait.",
)
AUDIT_FAILURES = Counter(
    "b2bscore_audit_failures_total", "Score requests refused because the audit row failed."
)

JOBS_QUEUE_DEPTH = Gauge(
    "b2bscore_jobs_queue_depth",
    "Jobs of the job engine waiting (todo) and running (doing), per queue.",
    ["queue", "status"],
    multiprocess_mode="livemostrecent",
)
JOB_DURATION = Histogram(
    "b2bscore_job_duration_seconds",
    "Duration of background jobs, by task and outcome.",
    ["task", "outcome"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800),
)
WEBHOOK_ATTEMPTS = Counter(
    "b2bscore_webhook_attempts_total",
    "Webhook delivery attempts, by outcome (succeeded, retry, failed).",
    ["outcome"],
)
WEBHOOK_FIRST_DELIVERY = Histogram(
    "b2bscore_webhook_event_to_delivery_seconds",
    "Time from an event's creation to its first successful delivery.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60, 600, 3600),
)
BATCH_ROWS = Counter("b2bscore_batch_rows_total", "Batch rows processed, by outcome.", ["outcome"])
MONITORING_RECHECKS = Counter(
    "b2bscore_monitoring_rechecks_total",
    "Checks of watched companies queued because their data changed, by what changed.",
    ["source"],
)
# The model registry (b2bscore.model.tasks). PSI gauges are computed periodically by one
# worker, never per request; the most recent value wins across workers.
MODEL_FEATURE_PSI = Gauge(
    "b2bscore_model_feature_psi",
    "PSI of a feature over the drift window against the live model's training reference.",
    ["model", "feature"],
    multiprocess_mode="mostrecent",
)
MODEL_SCORE_PSI = Gauge(
    "b2bscore_model_score_psi",
    "PSI of the score over the drift window against the live model's training reference.",
    ["model"],
    multiprocess_mode="mostrecent",
)
MODEL_EVENT_APPLIED = Gauge(
    "b2bscore_model_event_applied",
    "Latest model-registry event each worker applied (the minimum is the laggard).",
    multiprocess_mode="livemin",
)
SHADOW_SCORED = Counter(
    "b2bscore_shadow_scored_total", "Decisions scored by the shadow model after the answer."
)
CANARY_ROLLBACKS = Counter(
    "b2bscore_canary_rollbacks_total",
    "Canary candidates rolled back automatically by the guard.",
    ["model"],
)


def render_metrics() -> tuple[bytes, str]:
    """The exposition text for /metrics, aggregated across workers in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST


CONSENT_SYNCS = Histogram(
    "b2bscore_consent_sync_seconds",
    "Open-banking consent syncs, by outcome (synced, revoked_by_bank, failed, skipped).",
    ["outcome"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
