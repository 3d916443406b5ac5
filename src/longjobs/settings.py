"""Configuration: command-line flags over ``LONGJOBS_*`` environment variables over defaults."""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class UpstreamRoute(BaseModel):
    """Where the models whose names match one pattern are called (``upstream_routes``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    base_url: str | None = None
    """``None``: the default upstream's."""
    api_key_env: str | None = None
    """The environment variable holding this upstream's key (the key itself stays out of the
    setting). Without it, a route to another base URL sends no key."""
    api: Literal["auto", "chat", "responses"] | None = None
    continuation: Literal["prefill", "vllm"] | None = None


class Settings(BaseSettings):
    """Every setting longjobs reads. Each one can be set as ``LONGJOBS_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="LONGJOBS_", frozen=True, extra="ignore")

    database_url: str = "sqlite:///longjobs.db"
    concurrency: int = Field(32, ge=1, description="handlers run at once per worker process")
    lease_seconds: float = Field(
        15.0, gt=0, description="a worker that stops heartbeating loses its jobs after this"
    )
    sweep_interval: float = Field(
        1.0, gt=0, description="how often expired leases and results are swept"
    )
    flush_interval: float = Field(0.05, gt=0, description="how often handler reports are written")
    poll_interval: float = Field(
        0.05, gt=0, description="idle polling for work made by other processes"
    )
    shutdown_grace: float = Field(
        10.0, ge=0, description="on SIGTERM, time running jobs get to finish"
    )
    cancel_grace: float = Field(
        5.0, ge=0, description="time a cancelled handler gets for its cleanup"
    )
    result_ttl_seconds: float = Field(86400.0, gt=0, description="default time a result is kept")
    inline_result_bytes: int = Field(
        256 * 1024, ge=0, description="larger results are served only by /result"
    )
    max_wait_seconds: float = Field(60.0, ge=0, description="cap on Prefer: wait and ?wait=")
    max_body_bytes: int = Field(1024 * 1024, gt=0, description="largest request body accepted")
    rate_limit_per_second: float = Field(100.0, gt=0, description="requests per API key")
    rate_limit_burst: int = Field(200, ge=1, description="requests per API key at once")
    max_streams_per_key: int = Field(20, ge=1, description="open event streams per API key")
    max_pending_jobs: int = Field(100_000, ge=1, description="pending jobs per tenant")
    stream_send_timeout: float = Field(
        10.0, gt=0, description="a stream client this slow is dropped"
    )

    upstream_base_url: str | None = Field(
        None, description="OpenAI-compatible endpoint models are called at (default: OpenAI's)"
    )
    upstream_api_key: SecretStr | None = Field(
        None, description="the key sent to the upstream (default: OPENAI_API_KEY, for OpenAI's API)"
    )
    upstream_max_retries: int = Field(
        4, ge=0, description="retries of an upstream 408/409/429/5xx or lost connection"
    )
    upstream_api: Literal["auto", "chat", "responses"] = Field(
        "auto",
        description="chat completions, or the Responses API in background mode; auto: the "
        "Responses API for OpenAI's own, chat for any other",
    )
    upstream_continuation: Literal["prefill", "vllm"] = Field(
        "prefill", description="how a chat upstream continues an earlier attempt's text"
    )
    upstream_routes: dict[str, UpstreamRoute] = Field(
        default_factory=dict,
        description="per-model upstreams, JSON: model pattern (* and ?) → base_url, api_key_env, "
        "api; the first match wins, other models use the default upstream",
    )
    upstream_timeout: float = Field(
        600.0, gt=0, description="longest silence from the upstream before it counts as lost"
    )

    webhook_delivery: bool = Field(
        True, description="this process's workers send webhooks (off: leave them to others)"
    )
    webhook_allow_networks: list[str] = Field(
        default_factory=list,
        description="JSON list of networks webhooks may go to although they are not public "
        '(e.g. ["127.0.0.0/8"] for tests, a private range for private deployments)',
    )
    webhook_timeout: float = Field(
        15.0, gt=0, le=30, description="longest time one webhook attempt may take"
    )
    webhook_retry_schedule: list[float] = Field(
        default_factory=lambda: [5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0],
        min_length=0,
        max_length=50,
        description="seconds before each retry of a failed webhook (±20 % jitter); a "
        "delivery fails once they are used up (default: about 27 h in 8 attempts)",
    )
    webhook_concurrency: int = Field(16, ge=1, description="webhooks sent at once per process")
    webhook_poll_interval: float = Field(
        1.0, gt=0, description="how often due webhooks made by other processes are looked for"
    )
    webhook_rotation_overlap: float = Field(
        86400.0, ge=0, description="after a rotation, how long the old signing key signs too"
    )

    @field_validator("webhook_retry_schedule")
    @classmethod
    def _non_negative(cls, schedule: list[float]) -> list[float]:
        if any(not 0 <= step <= 7 * 86400 for step in schedule):
            raise ValueError("every step is a number of seconds in [0, 604800]")
        return schedule

    @field_validator("webhook_allow_networks")
    @classmethod
    def _networks(cls, networks: list[str]) -> list[str]:
        for network in networks:
            ipaddress.ip_network(network.strip())  # ValueError names the bad one
        return networks

    @property
    def heartbeat_interval(self) -> float:
        return self.lease_seconds / 3
