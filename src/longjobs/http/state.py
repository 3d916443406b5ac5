"""The state one API instance serves with, kept as ``api.state.longjobs``."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from starlette.requests import HTTPConnection

from longjobs.app import App
from longjobs.backends.stats import QueueStats
from longjobs.http.lifespan import BackgroundTasks
from longjobs.http.limits import PendingGate, RateLimiter, StreamSlots
from longjobs.http.reuse import Reused
from longjobs.settings import Settings

STATS_FRESH_SECONDS = 2.0
"""For how long after it finished one reading of a tenant's stats answers every request."""


@dataclass(frozen=True, slots=True)
class APIState:
    """Everything one API instance serves with; kept as ``api.state.longjobs``."""

    app: App
    settings: Settings
    keepalive_seconds: float
    background: BackgroundTasks = field(default_factory=BackgroundTasks)
    closing: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when the server is shutting down: open event streams end, clients reconnect."""
    rate_limiter: RateLimiter | None = None
    streams: StreamSlots | None = None
    pending: PendingGate | None = None
    recent_stats: Reused[tuple[str, int], QueueStats] = field(
        default_factory=lambda: Reused(STATS_FRESH_SECONDS)
    )
    """``GET /v1/stats`` readings by ``(tenant, minutes)``, each reused for a moment."""


def state_of(connection: HTTPConnection) -> APIState:
    """The state of the API that received the request (the mounted one, when mounted)."""
    state = getattr(connection.app.state, "longjobs", None)
    if not isinstance(state, APIState):
        raise RuntimeError("this route must be served by an API made with create_api()")
    return state
