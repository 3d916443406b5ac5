"""``POST /v1/jobs`` straight from the server to its handler, around the middleware stack.

A submission passes through about ten layers of ASGI middleware on its way to the route (error
pages, exception handlers, FastAPI's exit stack and body limit), each adding a frame to every
request and to every message it sends: a fifth of a submission's cost. The route reads its own
body with its own limit and needs none of them, so the API answers it here and turns errors into
problems with the same handlers. Any other request, a mounted API, and an API to which its user
added middleware of their own take the usual way.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from longjobs.http.jobs import submit_job
from longjobs.http.problems import problem_handlers

logger = logging.getLogger("longjobs.http")


def install(api: FastAPI) -> None:
    """Put submissions of ``api`` on the short path (when its middleware stack is built)."""
    build = api.build_middleware_stack

    def build_middleware_stack() -> ASGIApp:
        stack = build()
        return stack if api.user_middleware else _Submissions(stack)

    api.build_middleware_stack = build_middleware_stack  # type: ignore[method-assign]


class _Submissions:
    def __init__(self, stack: ASGIApp) -> None:
        self.stack = stack
        self.handlers = {k: h for k, h in problem_handlers().items() if isinstance(k, type)}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and scope["path"] == "/v1/jobs"
            and not scope.get("root_path")
        ):
            request = Request(scope, receive)
            try:
                response = await submit_job(request)
            except Exception as exc:
                response = await self._problem(request, exc)
            await response(scope, receive, send)
        else:
            await self.stack(scope, receive, send)

    async def _problem(self, request: Request, exc: Exception) -> Response:
        for kind in type(exc).__mro__:
            handler = self.handlers.get(kind)
            if handler is not None:
                if kind is Exception:  # what ServerErrorMiddleware would log
                    logger.error("exception in POST /v1/jobs", exc_info=exc)
                return await handler(request, exc)
        raise exc
