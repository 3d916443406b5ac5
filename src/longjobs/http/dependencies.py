"""What routes receive by injection: the App, the API's settings and the caller's tenant."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from starlette.requests import HTTPConnection

from longjobs.app import App
from longjobs.http.auth import tenant_of
from longjobs.http.state import APIState, state_of
from longjobs.settings import Settings

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
