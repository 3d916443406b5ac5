"""``GET /v1/stats``: the caller's queue at a glance, for the dashboard's overview and for
anyone who wants numbers without Prometheus: jobs by status and kind, what finished and how long
jobs waited in each of the last minutes, and how many workers are alive."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from starlette.responses import Response

from longjobs.backends.stats import MinuteStats
from longjobs.http.dependencies import StateDep, TenantDep
from longjobs.http.jobs import wire_json
from longjobs.http.problems import AUTHENTICATED, documented
from longjobs.models import JSON, Status
from longjobs.schemas import rfc3339

router = APIRouter(responses=AUTHENTICATED)


_EXAMPLE = {
    "object": "queue_stats",
    "now": "2026-12-05T10:15:30Z",
    "workers": 2,
    "counts": {"pending": 3, "running": 2, "completed": 140, "failed": 1, "cancelled": 4},
    "by_kind": {"summarize": {"pending": 3, "running": 2, "completed": 140}},
    "minutes": [
        {
            "start": "2026-12-05T10:15:00Z",
            "completed": 12,
            "failed": 0,
            "cancelled": 1,
            "started": 14,
            "wait_avg_seconds": 0.8,
            "wait_max_seconds": 2.5,
        }
    ],
}


@router.get(
    "/v1/stats",
    operation_id="getQueueStats",
    response_model=None,
    responses={
        200: {"content": {"application/json": {"example": _EXAMPLE}}},
        **documented(422),
    },
)
async def queue_stats(
    state: StateDep,
    tenant: TenantDep,
    minutes: Annotated[int, Query(ge=1, le=60, description="how many minutes back")] = 15,
) -> Response:
    """The caller's jobs by status (``counts``) and by kind and status (``by_kind``); for each
    of the last ``minutes`` minutes, oldest first, how many jobs completed, failed or were
    cancelled, how many started, and their queue wait (from due to started, average and
    longest); and ``workers``, the worker processes alive now (of every tenant: workers are
    shared). One reading of the store answers every request for the same tenant and minutes
    while it runs and for two seconds after, however many dashboards ask; ``now`` says when
    it was made."""
    backend = await state.app.open()
    stats = await state.recent_stats.get(
        (tenant, minutes), lambda: backend.queue_stats(tenant, minutes=minutes)
    )
    counts: dict[str, int] = dict.fromkeys((status.value for status in Status), 0)
    by_kind: dict[str, dict[str, int]] = {}
    for (status, kind), count in sorted(stats.counts.items()):
        counts[status.value] += count
        by_kind.setdefault(kind, {})[status.value] = count
    body: dict[str, JSON] = {
        "object": "queue_stats",
        "now": rfc3339(stats.now),
        "workers": stats.workers,
        "counts": counts,
        "by_kind": by_kind,
        "minutes": [_minute(minute) for minute in stats.minutes],
    }
    return Response(wire_json(body), media_type="application/json")


def _minute(minute: MinuteStats) -> JSON:
    return {
        "start": rfc3339(minute.start),
        "completed": minute.completed,
        "failed": minute.failed,
        "cancelled": minute.cancelled,
        "started": minute.started,
        "wait_avg_seconds": _rounded(minute.wait_avg_seconds),
        "wait_max_seconds": _rounded(minute.wait_max_seconds),
    }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
