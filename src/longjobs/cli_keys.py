"""``longjobs keys``: create, list and revoke API keys in the job store."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import Any, TypeVar

import click

from longjobs.app import App
from longjobs.backends.base import ApiKey
from longjobs.errors import LongjobsError

T = TypeVar("T")


def run_command(main: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine; a LongjobsError becomes one line and exit 1."""
    try:
        return asyncio.run(main)
    except LongjobsError as exc:
        raise click.ClickException(str(exc)) from None


# -- API keys ----------------------------------------------------------------------------
@click.group()
def keys() -> None:
    """Create, list and revoke API keys (stored only as hashes) in the job store."""


keys_database_option = click.option(
    "--database-url",
    envvar="LONGJOBS_DATABASE_URL",
    default="sqlite:///longjobs.db",
    show_default=True,
    help="The store the server uses.",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


@keys.command("create")
@click.option("--tenant", required=True, help="The tenant whose jobs the key reaches.")
@click.option("--name", default=None, help="A label to recognise the key by.")
@keys_database_option
@json_option
def keys_create(tenant: str, name: str | None, database_url: str, as_json: bool) -> None:
    """Create a key and print it (alone, or as JSON with --json). It is shown only once."""
    if not tenant.strip() or len(tenant) > 200:
        raise click.BadParameter("a tenant is a non-empty name of at most 200 characters")

    async def create() -> tuple[str, str]:
        async with App(database_url) as app:
            record, secret = await app.create_api_key(tenant, name=name)
            return record.id, secret

    key_id, secret = run_command(create())
    if as_json:
        click.echo(json.dumps({"id": key_id, "tenant": tenant, "key": secret}))
    else:
        click.echo(secret)


@keys.command("ls")
@keys_database_option
@json_option
def keys_ls(database_url: str, as_json: bool) -> None:
    """List every key: id, tenant, name, created, revoked (never the keys themselves)."""

    async def listing() -> list[ApiKey]:
        async with App(database_url) as app:
            return await app.backend.list_api_keys()

    rows = [
        {
            "id": key.id,
            "tenant": key.tenant,
            "name": key.name,
            "created_at": _iso(key.created_at),
            "revoked_at": None if key.revoked_at is None else _iso(key.revoked_at),
        }
        for key in run_command(listing())
    ]
    if as_json:
        click.echo(json.dumps(rows))
        return
    for row in rows:
        state = f"revoked {row['revoked_at']}" if row["revoked_at"] else "active"
        click.echo(f"{row['id']}  {row['tenant']}  {row['name'] or '-'}  {row['created_at']}  "
                   f"{state}")  # fmt: skip


@keys.command("revoke")
@click.argument("key_id")
@keys_database_option
def keys_revoke(key_id: str, database_url: str) -> None:
    """Revoke a key: requests with it are refused from the next one on."""

    async def revoke() -> bool:
        async with App(database_url) as app:
            return await app.backend.revoke_api_key(key_id)

    if not run_command(revoke()):
        raise click.ClickException(f"no active key {key_id!r}")
    click.echo(f"revoked {key_id}")


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
