"""Where models are called: ``Upstream`` (base URL, key, API, retries) and the SDK clients
each event loop keeps for it."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fnmatch
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from longjobs.errors import ConfigurationError
from longjobs.settings import Settings

if TYPE_CHECKING:
    from openai import AsyncOpenAI


@dataclass(frozen=True, slots=True)
class Upstream:
    """Where models are called: an OpenAI-compatible base URL and its key."""

    base_url: str | None = None
    """``None``: OpenAI's API."""
    api_key: str | None = field(default=None, repr=False)
    """``None``: ``OPENAI_API_KEY`` for OpenAI's API; another server gets a placeholder (an
    OpenAI key is never sent to a host that is not OpenAI's unless configured as its key)."""
    max_retries: int = 4
    timeout: float = 600.0
    api: Literal["auto", "chat", "responses"] = "auto"
    """``chat``: Chat Completions, which every OpenAI-compatible server speaks. ``responses``:
    the Responses API in background mode (OpenAI): the upstream response id is checkpointed, so a
    retried attempt re-attaches to the same generation instead of paying for a second one.
    ``auto``: ``responses`` for OpenAI's API (no ``base_url``, or api.openai.com), ``chat`` for
    any other."""
    continuation: Literal["prefill", "vllm"] = "prefill"
    """How a ``chat`` upstream continues the text of an earlier attempt: ``prefill`` sends it as
    a last, unfinished assistant message (llama.cpp, Ollama and most servers continue it);
    ``vllm`` adds the ``continue_final_message`` flags vLLM needs for that."""

    @property
    def uses_responses(self) -> bool:
        return self.api == "responses" or (self.api == "auto" and self.is_openai)

    @property
    def is_openai(self) -> bool:
        """OpenAI's own API: the SDK's default, or its address given explicitly."""
        return self.base_url is None or urlsplit(self.base_url).hostname == "api.openai.com"

    @classmethod
    def from_settings(cls, settings: Settings) -> Upstream:
        key = settings.upstream_api_key
        return cls(
            base_url=settings.upstream_base_url,
            api_key=key.get_secret_value() if key is not None else None,
            max_retries=settings.upstream_max_retries,
            timeout=settings.upstream_timeout,
            api=settings.upstream_api,
            continuation=settings.upstream_continuation,
        )

    @classmethod
    def for_model(cls, settings: Settings, model: str) -> Upstream:
        """The upstream of ``model``: the first of ``settings.upstream_routes`` whose pattern
        matches its name, else the default one."""
        upstream = cls.from_settings(settings)
        for pattern, route in settings.upstream_routes.items():
            if fnmatch.fnmatchcase(model, pattern):
                key = upstream.api_key if route.base_url is None else None
                if route.api_key_env is not None:
                    key = os.environ.get(route.api_key_env)
                return dataclasses.replace(
                    upstream,
                    base_url=route.base_url or upstream.base_url,
                    api_key=key,
                    api=route.api or upstream.api,
                    continuation=route.continuation or upstream.continuation,
                )
        return upstream

    def client(self) -> AsyncOpenAI:
        """The SDK client for this upstream, one per event loop (its connections belong to it)."""
        loop = asyncio.get_running_loop()
        clients = _CLIENTS.setdefault(loop, {})
        client = clients.get(self)
        if client is None:
            client = clients[self] = self._new_client()
        return client

    def _new_client(self) -> AsyncOpenAI:
        try:
            from openai import AsyncOpenAI
        except ImportError:
            raise ConfigurationError(
                "calling models needs the openai package: pip install 'longjobs[openai]'"
            ) from None
        key = self.api_key
        if key is None and self.is_openai:
            key = os.environ.get("OPENAI_API_KEY")
        if key is None:
            if self.base_url is None:
                raise ConfigurationError(
                    "no upstream configured: set LONGJOBS_UPSTREAM_BASE_URL (and "
                    "LONGJOBS_UPSTREAM_API_KEY), or OPENAI_API_KEY to call OpenAI"
                )
            key = "none"  # self-hosted servers without keys still get a syntactically valid one
        return AsyncOpenAI(
            base_url=self.base_url,
            api_key=key,
            max_retries=self.max_retries,
            timeout=self.timeout,
            http_client=_aiohttp_client(),
        )


def _aiohttp_client() -> Any:
    """The SDK's aiohttp transport when aiohttp is installed (``longjobs[openai]`` installs it),
    else None (the SDK's default). The SDK recommends it for many concurrent requests: a worker
    following hundreds of token streams spends ~45 µs a token with it, ~80 µs without."""
    import openai

    try:
        return openai.DefaultAioHttpClient()
    except (AttributeError, RuntimeError):  # an older SDK, or no aiohttp
        return None


_CLIENTS: dict[asyncio.AbstractEventLoop, dict[Upstream, AsyncOpenAI]] = {}


async def aclose() -> None:
    """Close the upstream clients this event loop opened (their connections and sessions); a
    later call opens new ones. ``Worker.run`` calls it as it stops."""
    clients = _CLIENTS.pop(asyncio.get_running_loop(), {})
    for client in clients.values():
        with contextlib.suppress(Exception):
            await client.close()
