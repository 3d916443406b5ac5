"""``/healthz`` (the process answers) and ``/readyz`` (it can serve: the store answers and no
background task has stopped), for load balancers and orchestrators; ``/metrics`` for
Prometheus."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.responses import JSONResponse, Response

from longjobs import metrics
from longjobs.app import DEFAULT_TENANT
from longjobs.http.dependencies import StateDep, TenantDep
from longjobs.http.problems import AUTHENTICATED, documented, problem_response

logger = logging.getLogger("longjobs.http")

router = APIRouter()

_OK: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/json": {"example": {"status": "ok"}}}}
}


@router.get("/healthz", operation_id="healthz", response_model=None, responses=_OK)
async def healthz() -> Response:
    """200 ``{"status": "ok"}`` while the process serves requests; touches nothing else."""
    return JSONResponse({"status": "ok"})


@router.get(
    "/readyz",
    operation_id="readyz",
    response_model=None,
    responses={**_OK, **documented(503)},
)
async def readyz(state: StateDep) -> Response:
    """200 ``{"status": "ok"}`` when the job store answers a one-row listing and every
    background task still runs; 503 problem ``/problems/not-ready`` otherwise."""
    stopped = state.background.stopped
    if stopped:
        return problem_response(
            "not-ready", "background task stopped: " + ", ".join(stopped), retry_after=5
        )
    try:
        await state.app.list(tenant=DEFAULT_TENANT, limit=1)
    except Exception as exc:  # readiness reports any failure of the store, never raises it
        logger.warning("readiness check failed: %s", exc.__class__.__name__)
        return problem_response("not-ready", "the job store does not answer", retry_after=1)
    return JSONResponse({"status": "ok"})


@router.get(
    "/metrics",
    operation_id="metrics",
    response_model=None,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}, **AUTHENTICATED},
)
async def prometheus_metrics(state: StateDep, tenant: TenantDep) -> Response:
    """Prometheus text: this process's counters and histograms, plus jobs by status and kind
    read from the store (all tenants: once API keys exist, any valid key may read it)."""
    backend = await state.app.open()
    counts = await backend.job_counts()
    jobs = GaugeMetricFamily(
        "longjobs_jobs", "Jobs in the store by status and kind", labels=["status", "kind"]
    )
    for (status, kind), count in sorted(counts.items()):
        jobs.add_metric([status, kind], count)
    if state.streams is not None:
        metrics.STREAMS.set(state.streams.open_count)
    scrape = CollectorRegistry()
    scrape.register(_Fixed([jobs]))
    body = generate_latest(metrics.REGISTRY) + generate_latest(scrape)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


class _Fixed(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> list[Metric]:
        return self._families
