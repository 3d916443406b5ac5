"""The HTTP API of API.md as an ASGI app: ``create_api(app)``.

Serve it on its own (``uvicorn mymodule:api``) or mount it in your FastAPI app. Starlette does not
run the lifespan of a mounted app, so run it from yours; it opens and closes the App's backend and
runs the background tasks::

    longjobs_api = create_api(app)

    @asynccontextmanager
    async def lifespan(main: FastAPI) -> AsyncIterator[None]:
        async with longjobs_api.router.lifespan_context(longjobs_api):
            yield

    main = FastAPI(lifespan=lifespan)
    main.mount("/jobs", longjobs_api)   # links and Location headers then start with /jobs
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from starlette.routing import Route

from longjobs.app import App
from longjobs.http import dashboard, fastpath, openapi
from longjobs.http.events import router as events_router
from longjobs.http.feed import router as feed_router
from longjobs.http.jobs import router as jobs_router
from longjobs.http.jobs import submit_job
from longjobs.http.lifespan import BackgroundFunction, BackgroundTasks
from longjobs.http.limits import PendingGate, RateLimiter, StreamSlots
from longjobs.http.probes import router as probes_router
from longjobs.http.problems import problem_handlers
from longjobs.http.responses import router as responses_router
from longjobs.http.state import APIState
from longjobs.http.stats import router as stats_router
from longjobs.http.webhooks import router as webhooks_router
from longjobs.http.websocket import router as websocket_router
from longjobs.settings import Settings

__all__ = ["BackgroundFunction", "LifespanHook", "close_streams", "create_api"]

LifespanHook = Callable[[], AbstractAsyncContextManager[object]]
"""A factory of an async context manager entered at startup and exited at shutdown."""


def create_api(
    app: App,
    *,
    settings: Settings | None = None,
    background: Sequence[BackgroundFunction] = (),
    lifespan_hooks: Sequence[LifespanHook] = (),
    keepalive_seconds: float = 15.0,
) -> FastAPI:
    """A FastAPI app serving ``app``'s jobs under ``/v1`` plus ``/healthz`` and ``/readyz``.

    ``settings`` (default: ``app.settings``) gives the body size limit, the cap on ``Prefer:
    wait`` and ``?wait=``, and the inline result size. ``keepalive_seconds`` is the longest
    silence on an event stream before a ``: keepalive`` comment is sent.

    The lifespan opens the App's backend, then enters each of ``lifespan_hooks`` in order, then
    starts each of ``background`` as an asyncio task. Shutdown goes in reverse: the tasks are
    cancelled and awaited, the hooks exited, the backend closed. A background task that stops
    while the API serves is logged and makes ``/readyz`` answer 503. A background task is
    stopped by cancellation; to stop an in-process worker gracefully instead (running jobs get
    ``shutdown_grace`` to finish), run it from a hook::

        worker = Worker(app, concurrency=8)

        @asynccontextmanager
        async def running_worker() -> AsyncIterator[None]:
            task = asyncio.create_task(worker.run())
            yield
            worker.stop()
            await task

        api = create_api(app, lifespan_hooks=[running_worker])
        api = create_api(app, background=[worker.run])  # the same, stopped by cancellation
    """
    if keepalive_seconds <= 0:
        raise ValueError("keepalive_seconds must be positive")
    settings = settings or app.settings
    state = APIState(
        app=app,
        settings=settings,
        keepalive_seconds=keepalive_seconds,
        background=BackgroundTasks(background),
        rate_limiter=RateLimiter(settings.rate_limit_per_second, settings.rate_limit_burst),
        streams=StreamSlots(settings.max_streams_per_key),
        pending=PendingGate(settings.max_pending_jobs),
    )

    @asynccontextmanager
    async def lifespan(api: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            await app.open()
            stack.push_async_callback(app.close)
            for hook in lifespan_hooks:
                await stack.enter_async_context(hook())
            await stack.enter_async_context(state.background)
            yield

    # FastAPIOffline: /docs (Swagger UI) and /redoc from packaged assets, not a CDN, so the
    # docs work on machines without internet access.
    api = FastAPIOffline(
        title="longjobs",
        version="1",
        lifespan=lifespan,
        exception_handlers=problem_handlers(),
        redirect_slashes=False,
        # FastAPI's native OpenTelemetry hooks ask, on every request, whether a provider is
        # configured (a few percent of a submission's CPU); wrap the app in OpenTelemetry's ASGI
        # middleware to trace it.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
        # The routes themselves rather than include_router(): the 405 handler lists every
        # method allowed on a path by matching the app's routes.
        routes=[
            # Submissions skip FastAPI's request handling (the route reads its request itself);
            # the APIRoute of the same path and method stays for the OpenAPI document.
            Route("/v1/jobs", submit_job, methods=["POST"]),
            *jobs_router.routes,
            *events_router.routes,
            *feed_router.routes,
            *websocket_router.routes,
            *responses_router.routes,
            *webhooks_router.routes,
            *stats_router.routes,
            *probes_router.routes,
            *dashboard.routes,
        ],
    )
    openapi.install(api, app)
    fastpath.install(api)
    api.state.longjobs = state
    return api


def close_streams(api: FastAPI) -> None:
    """End every open event stream of ``api`` now; call it when shutdown begins (``longjobs
    serve`` does on SIGTERM), since servers wait for open connections before the lifespan ends.
    Clients reconnect with ``Last-Event-ID`` and miss nothing."""
    state = getattr(api.state, "longjobs", None)
    if not isinstance(state, APIState):
        raise ValueError("not an API made with create_api()")
    state.closing.set()
