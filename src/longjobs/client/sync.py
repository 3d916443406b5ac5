"""``Client``: the blocking twin of ``AsyncClient``, sharing its code.

Each ``Client`` runs one ``AsyncClient`` on an event loop of its own, in a thread of its own
(an anyio blocking portal); every method hands the async method's call to that loop and waits
for it. There is one implementation of the protocol logic: retries, long polls and stream
resumption are the async client's.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any, Concatenate, ParamSpec, Self, TypeVar

from anyio.from_thread import BlockingPortal, start_blocking_portal

from longjobs.client.aio import AsyncClient

P = ParamSpec("P")
T = TypeVar("T")


def _blocking(
    method: Callable[Concatenate[AsyncClient, P], Awaitable[T]],
) -> Callable[Concatenate[Client, P], T]:
    def call(self: Client, /, *args: P.args, **kwargs: P.kwargs) -> T:
        async def run() -> T:
            return await method(self._async, *args, **kwargs)

        return self._portal.call(run)

    functools.update_wrapper(call, method)
    return call


def _blocking_iterator(
    method: Callable[Concatenate[AsyncClient, P], AsyncIterator[T]],
) -> Callable[Concatenate[Client, P], Iterator[T]]:
    def call(self: Client, /, *args: P.args, **kwargs: P.kwargs) -> Iterator[T]:
        iterator = method(self._async, *args, **kwargs)

        async def step() -> tuple[bool, T | None]:
            try:
                return True, await anext(iterator)
            except StopAsyncIteration:
                return False, None

        async def close() -> None:
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                await aclose()

        try:
            while True:
                more, item = self._portal.call(step)
                if not more:
                    return
                yield item  # type: ignore[misc]  # T, as step() said there was one
        finally:
            self._portal.call(close)

    functools.update_wrapper(call, method)
    return call


class Client:
    """A longjobs server's jobs, from blocking Python code: the methods, arguments, results and
    errors of ``AsyncClient``, without ``await``::

        with Client("http://127.0.0.1:8000") as client:
            job = client.submit("classify_batch", {"texts": ["hello"]}, wait=10)
            for event in client.events(job.id):
                print(event.type, event.get("progress"))
            print(client.result(job.id))
    """

    def __init__(self, server: str | None = None, **options: Any) -> None:
        self._portal_context: AbstractContextManager[BlockingPortal] = start_blocking_portal()
        self._portal = self._portal_context.__enter__()

        async def make() -> AsyncClient:  # httpx's pool belongs to the loop that uses it
            return AsyncClient(server, **options)

        try:
            self._async = self._portal.call(make)
        except BaseException:
            self._portal_context.__exit__(None, None, None)
            raise
        self.server = self._async.server

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections and stop the client's thread."""
        try:
            self._portal.call(self._async.aclose)
        finally:
            self._portal_context.__exit__(None, None, None)

    submit = _blocking(AsyncClient.submit)
    get = _blocking(AsyncClient.get)
    list = _blocking_iterator(AsyncClient.list)
    cancel = _blocking(AsyncClient.cancel)
    delete = _blocking(AsyncClient.delete)
    result = _blocking(AsyncClient.result)
    wait = _blocking(AsyncClient.wait)
    events = _blocking_iterator(AsyncClient.events)
    kinds = _blocking(AsyncClient.kinds)
