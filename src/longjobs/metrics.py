"""Prometheus metrics of this process, served at ``/metrics`` by the API.

Counters and histograms count what this process did: submissions in API processes, finished
jobs, run times and queue waits in worker processes (so ``longjobs serve`` with its in-process
worker shows both). Jobs by status and kind are read from the store at each scrape, so they are
the same whichever process answers.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

_SECONDS = (0.005, 0.05, 0.25, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)

SUBMITTED = Counter(
    "longjobs_jobs_submitted", "Jobs created by this process", ["kind"], registry=REGISTRY
)
FINISHED = Counter(
    "longjobs_attempts_finished",
    "Attempts this process ran to an end, by the status recorded",
    ["kind", "status"],
    registry=REGISTRY,
)
DURATION = Histogram(
    "longjobs_attempt_duration_seconds",
    "How long handlers ran, per attempt",
    ["kind"],
    buckets=_SECONDS,
    registry=REGISTRY,
)
QUEUE_WAIT = Histogram(
    "longjobs_queue_wait_seconds",
    "From a job being due to a worker claiming it",
    ["kind"],
    buckets=_SECONDS,
    registry=REGISTRY,
)
TOKENS = Counter(
    "longjobs_model_tokens",
    "Model tokens the attempts finished by this process spent (type: input or output)",
    ["kind", "type"],
    registry=REGISTRY,
)
WEBHOOK_ATTEMPTS = Counter(
    "longjobs_webhook_attempts",
    "Webhook attempts this process made, by what came of the delivery: succeeded, retried "
    "(it will be sent again), failed (given up, or its endpoint gone or disabled)",
    ["result"],
    registry=REGISTRY,
)
RUNNING = Gauge("longjobs_handlers_running", "Handlers running in this process", registry=REGISTRY)
STREAMS = Gauge("longjobs_streams_open", "Open SSE and WebSocket streams", registry=REGISTRY)
