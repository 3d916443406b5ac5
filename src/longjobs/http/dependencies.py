"""What routes receive by injection: the App, the API's settings and the caller's tenant."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPBearer
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


class _BearerKey(HTTPBearer):
    """Puts ``Authorization: Bearer <key>`` in the OpenAPI document; the check itself is
    ``tenant_of``'s, which also serves WebSocket upgrades and answers RFC 9457 problems."""

    async def __call__(self, request: Request) -> None:  # type: ignore[override]
        return None


_BEARER = _BearerKey(
    auto_error=False,
    scheme_name="apiKey",
    description="An API key made with `longjobs keys create`. Until the first key is created "
    "the server is open (one tenant, `default`) and no key is needed.",
)


async def _caller_tenant(
    connection: HTTPConnection, _key: Annotated[None, Security(_BEARER)]
) -> str:
    return await tenant_of(connection)


AppDep = Annotated[App, Depends(app_of)]
SettingsDep = Annotated[Settings, Depends(settings_of)]
StateDep = Annotated[APIState, Depends(state_dep)]
TenantDep = Annotated[str, Depends(_caller_tenant)]
