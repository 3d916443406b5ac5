"""What the client's modules share to read the server's answers: paths and parsed bodies."""

from __future__ import annotations

from typing import TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError

from longjobs.client.errors import ConnectionFailed

M = TypeVar("M", bound=BaseModel)


def resource_path(collection: str, resource_id: str, *rest: str) -> str:
    """``collection/<resource_id>/<rest...>``, the id escaped (it may hold ``/`` or ``?``)."""
    return "/".join((collection, quote(resource_id, safe=""), *rest))


def parse(model: type[M], response: httpx.Response) -> M:
    """``response``'s body as ``model``; ConnectionFailed when it is not one (the URL reaches
    some other server, a proxy's error page, a captive portal)."""
    try:
        return model.model_validate_json(response.content)
    except ValidationError:
        raise ConnectionFailed(
            f"{response.request.url} answered {response.status_code} with something that is "
            "not a longjobs answer: is the server URL right?"
        ) from None
