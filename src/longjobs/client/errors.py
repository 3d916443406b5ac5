"""What the client raises: one exception class per problem a caller may want to handle.

Each carries the server's RFC 9457 problem (``problem``), its HTTP ``status`` and, where the
server said so, ``retry_after`` seconds. Catch ``APIError`` for all of them.
"""

from __future__ import annotations

from longjobs.errors import LongjobsError
from longjobs.schemas import Problem


class APIError(LongjobsError):
    """The server answered with a problem (any non-2xx status)."""

    def __init__(self, problem: Problem, *, retry_after: float | None = None) -> None:
        super().__init__(f"{problem.status} {problem.title}: {problem.detail}")
        self.problem = problem
        self.status = problem.status
        self.retry_after = retry_after if retry_after is not None else problem.retry_after


class NotFound(APIError):
    """404: no such job (or another tenant's), unknown kind, or no such route."""


class InvalidRequest(APIError):
    """400, 413 or 422: the request was refused; ``problem.errors`` lists the fields at fault."""


class Unauthorized(APIError):
    """401: the API key is missing, unknown or revoked."""


class NotFinished(APIError):
    """409: the job has no result yet; ask again after ``retry_after`` seconds."""


class JobFailed(APIError):
    """409: the job failed; ``problem.error`` says why (``type``, ``message``, ``retryable``)."""


class JobCancelled(APIError):
    """409: the job was cancelled, so it has no result."""


class ResultExpired(APIError):
    """410: the job completed, but its result was kept for less time than has passed."""


class RateLimited(APIError):
    """429: too many requests, streams or pending jobs; retried by the client before raising."""


class Unavailable(APIError):
    """503 (or another 5xx): the server or its store cannot answer now; retried before raising."""


class ConnectionFailed(LongjobsError):
    """The server could not be reached (or the connection broke) after every retry."""


class WaitTimeout(LongjobsError):
    """``wait()`` gave up: the job was still not finished when its ``timeout`` ran out."""


_BY_TYPE: dict[str, type[APIError]] = {
    "/problems/result-not-ready": NotFinished,
    "/problems/job-failed": JobFailed,
    "/problems/job-cancelled": JobCancelled,
    "/problems/result-expired": ResultExpired,
}
_BY_STATUS: dict[int, type[APIError]] = {
    400: InvalidRequest,
    401: Unauthorized,
    404: NotFound,
    413: InvalidRequest,
    422: InvalidRequest,
    429: RateLimited,
}


def error_for(problem: Problem, retry_after: float | None) -> APIError:
    """The exception for ``problem``: by its ``type`` first, then by its status."""
    cls = _BY_TYPE.get(problem.type) or _BY_STATUS.get(problem.status)
    if cls is None:
        cls = Unavailable if problem.status >= 500 else APIError
    return cls(problem, retry_after=retry_after)
