"""``Client``: the blocking twin of ``AsyncClient``, sharing its code.

Each ``Client`` runs one ``AsyncClient`` on an event loop of its own, in a thread of its own
(an anyio blocking portal); every method hands the async method's call to that loop and waits
for it. There is one implementation of the protocol logic: retries, long polls and stream
resumption are the async client's.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any, Concatenate, ParamSpec, Self, TypeVar

from anyio import CancelScope
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

        return _call(self._portal, run)

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
            # A step still running (interrupted in a rare spot) is cancelled with the client.
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None and not getattr(iterator, "ag_running", False):
                await aclose()

        try:
            while True:
                more, item = _call(self._portal, step)
                if not more:
                    return
                yield item  # type: ignore[misc]  # T, as step() said there was one
        finally:
            self._portal.call(close)

    functools.update_wrapper(call, method)
    return call


def _call(portal: BlockingPortal, function: Callable[[], Awaitable[T]]) -> T:
    """``function()`` run on the portal's loop. If the waiting thread is interrupted (Ctrl-C),
    the call is cancelled, and has ended, before the interruption goes on: the client can then
    close what the call was using."""
    interrupted, ended = threading.Event(), threading.Event()
    scopes: list[CancelScope] = []

    async def run() -> T:
        try:
            with CancelScope() as scope:
                scopes.append(scope)
                if interrupted.is_set():  # interrupted before the task started
                    scope.cancel()
                return await function()
            raise RuntimeError("cancelled")  # only reached after an interruption
        finally:
            ended.set()

    try:
        future = portal.start_task_soon(run)
        return future.result()
    except BaseException:
        interrupted.set()  # then either run() sees it, or its scope is in scopes already
        if scopes:
            portal.call(scopes[0].cancel)
        # Cancelled, run() ends at once; interrupted before it was scheduled, it never starts.
        ended.wait(timeout=1.0)
        raise


def _shut_down(
    portal: BlockingPortal,
    portal_context: AbstractContextManager[BlockingPortal],
    client: AsyncClient,
) -> None:
    try:
        portal.call(client.aclose)
    finally:
        with contextlib.suppress(RuntimeError):  # the portal stopped already
            portal.call(portal.stop, True)  # cancel any call left running
        portal_context.__exit__(None, None, None)


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
        # Closed by close(), or when the client is collected, or at interpreter exit (while the
        # loop's thread still runs: stopping it later, from a finalizer, would hang the exit).
        self._close = weakref.finalize(
            self, _shut_down, self._portal, self._portal_context, self._async
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections and stop the client's thread (again: nothing)."""
        self._close()

    submit = _blocking(AsyncClient.submit)
    get = _blocking(AsyncClient.get)
    list = _blocking_iterator(AsyncClient.list)
    cancel = _blocking(AsyncClient.cancel)
    delete = _blocking(AsyncClient.delete)
    result = _blocking(AsyncClient.result)
    wait = _blocking(AsyncClient.wait)
    events = _blocking_iterator(AsyncClient.events)
    kinds = _blocking(AsyncClient.kinds)
    create_webhook = _blocking(AsyncClient.create_webhook)
    list_webhooks = _blocking(AsyncClient.list_webhooks)
    get_webhook = _blocking(AsyncClient.get_webhook)
    update_webhook = _blocking(AsyncClient.update_webhook)
    delete_webhook = _blocking(AsyncClient.delete_webhook)
    rotate_webhook_secret = _blocking(AsyncClient.rotate_webhook_secret)
    default_webhook_secret = _blocking(AsyncClient.default_webhook_secret)
    rotate_default_webhook_secret = _blocking(AsyncClient.rotate_default_webhook_secret)
    deliveries = _blocking(AsyncClient.deliveries)
    replay_delivery = _blocking(AsyncClient.replay_delivery)
