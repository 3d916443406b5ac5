"""Configuration: command-line flags over ``LONGJOBS_*`` environment variables over defaults."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


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
        None, description="the key sent to the upstream (default: OPENAI_API_KEY)"
    )
    upstream_max_retries: int = Field(
        4, ge=0, description="retries of an upstream 408/409/429/5xx or lost connection"
    )
    upstream_api: Literal["chat", "responses"] = Field(
        "chat", description="chat completions, or the Responses API in background mode"
    )
    upstream_timeout: float = Field(
        600.0, gt=0, description="longest silence from the upstream before it counts as lost"
    )

    @property
    def heartbeat_interval(self) -> float:
        return self.lease_seconds / 3
