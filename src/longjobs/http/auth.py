"""Who is calling: the tenant every route scopes its work to.

Until API keys land (open mode), every request belongs to the one tenant ``default``. Routes get
the tenant only through ``tenant_of``, so authentication replaces this one function.
"""

from __future__ import annotations

from starlette.requests import HTTPConnection

from longjobs.app import DEFAULT_TENANT


async def tenant_of(connection: HTTPConnection) -> str:
    """The tenant of the request (or WebSocket): always ``"default"`` in open mode."""
    return DEFAULT_TENANT
