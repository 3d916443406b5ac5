"""The dashboard: ``GET /`` serves the page, ``GET /dashboard/{name}`` its scripts and styles.

The files ship inside the package (``longjobs/dashboard/``): no build step, no CDN, nothing
fetched from elsewhere, so the dashboard works offline. The page itself needs no key; its
scripts call the API with the key the user enters, which lives in the tab's ``sessionStorage``
and travels only in the ``Authorization`` header. A strict Content-Security-Policy allows
nothing but this server's own scripts, styles and API.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from longjobs.http.problems import problem_response

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
_SECURITY = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'self'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


@dataclass(frozen=True, slots=True)
class _Asset:
    body: bytes
    media_type: str
    etag: str


def _load() -> dict[str, _Asset]:
    assets = {}
    for entry in resources.files("longjobs").joinpath("dashboard").iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1]
        if entry.is_file() and suffix in _TYPES:
            body = entry.read_bytes()
            etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
            assets[entry.name] = _Asset(body, _TYPES[suffix], etag)
    return assets


_ASSETS = _load()


def _serve(request: Request, name: str) -> Response:
    asset = _ASSETS.get(name)
    if asset is None:
        return problem_response("not-found", f"no dashboard file {request.url.path}")
    # Revalidated on every load (cheap: 304 by ETag), so an upgraded server is seen at once.
    headers = {"ETag": asset.etag, "Cache-Control": "no-cache", **_SECURITY}
    if _matches(request.headers.get("if-none-match", ""), asset.etag):
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)


def _matches(if_none_match: str, etag: str) -> bool:
    """Whether an ``If-None-Match`` list names ``etag`` (weakly, as RFC 9110 compares), or
    is ``*``."""
    tags = [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]
    return "*" in tags or etag in tags


async def _page(request: Request) -> Response:
    return _serve(request, "index.html")


async def _asset(request: Request) -> Response:
    name = str(request.path_params["name"])
    return _serve(request, name if name != "index.html" else "")


routes = [
    Route("/", _page, methods=["GET", "HEAD"]),
    Route("/dashboard/{name}", _asset, methods=["GET", "HEAD"]),
]
