"""What routes receive by injection: the App, the API's settings and the caller's tenant."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends
from starlette.requests import HTTPConnection

from longjobs.app import App
from longjobs.http.auth import tenant_of
from longjobs.http.lifespan import BackgroundTasks
from longjobs.settings import Settings


@dataclass(frozen=True, slots=True)
class APIState:
    """Everything one API instance serves with; kept as ``api.state.longjobs``."""

    app: App
    settings: Settings
    keepalive_seconds: float
    background: BackgroundTasks = field(default_factory=BackgroundTasks)
    closing: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when the server is shutting down: open event streams end, clients reconnect."""


def state_of(connection: HTTPConnection) -> APIState:
    """The state of the API that received the request (the mounted one, when mounted)."""
    state = getattr(connection.app.state, "longjobs", None)
    if not isinstance(state, APIState):
        raise RuntimeError("this route must be served by an API made with create_api()")
    return state


# The dependencies are coroutines on purpose: FastAPI runs a plain ``def`` dependency in a
# thread pool, a thread hop per dependency per request.


async def state_dep(connection: HTTPConnection) -> APIState:
    return state_of(connection)


async def app_of(connection: HTTPConnection) -> App:
    """The App whose jobs the API serves."""
    return state_of(connection).app


async def settings_of(connection: HTTPConnection) -> Settings:
    """The API's settings (body limit, wait cap, inline result size)."""
    return state_of(connection).settings


AppDep = Annotated[App, Depends(app_of)]
SettingsDep = Annotated[Settings, Depends(settings_of)]
StateDep = Annotated[APIState, Depends(state_dep)]
TenantDep = Annotated[str, Depends(tenant_of)]
