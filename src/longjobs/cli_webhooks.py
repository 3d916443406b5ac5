"""``longjobs webhooks ...``: a server's webhook endpoints, secrets and deliveries from a shell.

The options, ``--json`` and exit codes are those of the job commands (``cli_jobs``): 0 done,
1 the server failed or cannot be reached, 2 bad usage or input (a URL the server may not call),
5 no such endpoint, job or delivery.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import get_args

import click
from rich.console import Console
from rich.table import Table

from longjobs.cli_jobs import (
    _age,
    _print_json,
    connected,
    server_options,
    webhook_url_checked,
)
from longjobs.client import DeliveryResource
from longjobs.schemas import EventType

PIPED_WIDTH = 240
SECRET_NOTE = "the secret is shown only once: keep it to verify the webhooks' signatures"


@click.group()
def webhooks() -> None:
    """Webhook endpoints (every job's end, POSTed and signed), their secrets and deliveries."""


@webhooks.command()
@click.argument("url")
@click.option(
    "--event",
    "event_types",
    multiple=True,
    type=click.Choice(get_args(EventType)),
    metavar="TYPE",
    help=f"An event type to send: {', '.join(get_args(EventType))} (repeat for more; "
    "default: every type).",
)
@click.option("--description", default=None, help="A note for people: what receives them.")
@server_options
def create(
    url: str,
    event_types: tuple[str, ...],
    description: str | None,
    server: str,
    api_key: str | None,
    as_json: bool,
) -> None:
    """Register URL to receive the tenant's job events; prints its id and secret."""
    with connected(server, api_key) as client, webhook_url_checked(url):
        endpoint = client.create_webhook(
            url, event_types=list(event_types) or None, description=description
        )
    if as_json:
        _print_json(endpoint.model_dump(mode="json"))
        return
    click.echo(endpoint.id)
    click.echo(endpoint.secret)
    click.echo(SECRET_NOTE, err=True)


@webhooks.command("ls")
@server_options
def list_webhooks(server: str, api_key: str | None, as_json: bool) -> None:
    """List the endpoints, oldest first."""
    with connected(server, api_key) as client:
        found = client.list_webhooks()
    if as_json:
        _print_json([endpoint.model_dump(mode="json") for endpoint in found])
        return
    table = Table(box=None)
    table.add_column("id", no_wrap=True, min_width=35)
    table.add_column("status", no_wrap=True)
    table.add_column("url", overflow="fold")
    table.add_column("events", overflow="fold")
    table.add_column("created", justify="right", no_wrap=True)
    now = datetime.now(UTC)
    for endpoint in found:
        table.add_row(
            endpoint.id,
            endpoint.status,
            endpoint.url,
            ", ".join(endpoint.event_types) or "all",
            _age(now - endpoint.created_at),
        )
    _console().print(table, markup=False, highlight=False)


@webhooks.command()
@click.argument("webhook_id", metavar="ID")
@server_options
def get(webhook_id: str, server: str, api_key: str | None, as_json: bool) -> None:
    """Show endpoint ID as JSON (without its secret)."""
    with connected(server, api_key) as client:
        _print_json(client.get_webhook(webhook_id).model_dump(mode="json"))


@webhooks.command("rm")
@click.argument("webhook_id", metavar="ID")
@server_options
def remove(webhook_id: str, server: str, api_key: str | None, as_json: bool) -> None:
    """Remove endpoint ID; its deliveries not yet made fail."""
    with connected(server, api_key) as client:
        client.delete_webhook(webhook_id)
    if as_json:
        _print_json({"id": webhook_id, "object": "webhook_endpoint", "deleted": True})
    else:
        click.echo(f"{webhook_id} deleted")


@webhooks.command()
@click.argument("webhook_id", metavar="ID")
@server_options
def rotate(webhook_id: str, server: str, api_key: str | None, as_json: bool) -> None:
    """Give endpoint ID a new secret and print it; the old one still signs for a while
    (24 h by default), so receivers can switch without missing a webhook."""
    with connected(server, api_key) as client:
        endpoint = client.rotate_webhook_secret(webhook_id)
    if as_json:
        _print_json(endpoint.model_dump(mode="json"))
        return
    click.echo(endpoint.secret)
    click.echo(SECRET_NOTE, err=True)


@webhooks.command()
@click.argument("webhook_id", metavar="ID")
@server_options
def enable(webhook_id: str, server: str, api_key: str | None, as_json: bool) -> None:
    """Send webhooks to endpoint ID again (after 'disable', or the receiver's 410 Gone)."""
    _set_enabled(webhook_id, True, server, api_key, as_json)


@webhooks.command()
@click.argument("webhook_id", metavar="ID")
@server_options
def disable(webhook_id: str, server: str, api_key: str | None, as_json: bool) -> None:
    """Stop sending webhooks to endpoint ID, until 'enable'."""
    _set_enabled(webhook_id, False, server, api_key, as_json)


def _set_enabled(
    webhook_id: str, enabled: bool, server: str, api_key: str | None, as_json: bool
) -> None:
    with connected(server, api_key) as client:
        endpoint = client.update_webhook(webhook_id, enabled=enabled)
    if as_json:
        _print_json(endpoint.model_dump(mode="json"))
    else:
        click.echo(f"{endpoint.id} {endpoint.status}")


@webhooks.command()
@click.option("--rotate", is_flag=True, help="Make a new one (the old one signs for a while).")
@server_options
def secret(rotate: bool, server: str, api_key: str | None, as_json: bool) -> None:
    """Print the secret that signs the webhooks of jobs submitted with --webhook URL."""
    with connected(server, api_key) as client:
        if rotate:
            value = client.rotate_default_webhook_secret()
        else:
            value = client.default_webhook_secret()
    if as_json:
        _print_json({"object": "webhook_secret", "secret": value})
    else:
        click.echo(value)


@webhooks.command()
@click.argument("job_id")
@server_options
def deliveries(job_id: str, server: str, api_key: str | None, as_json: bool) -> None:
    """List the webhook deliveries of JOB_ID's events, with their attempts."""
    with connected(server, api_key) as client:
        found = client.deliveries(job_id)
    if as_json:
        _print_json([delivery.model_dump(mode="json") for delivery in found])
        return
    table = Table(box=None)
    table.add_column("id", no_wrap=True, min_width=36)
    table.add_column("type", no_wrap=True)
    table.add_column("endpoint", overflow="fold")
    table.add_column("status", no_wrap=True)
    table.add_column("attempts", justify="right", no_wrap=True)
    table.add_column("last", overflow="fold")
    table.add_column("next", justify="right", no_wrap=True)
    now = datetime.now(UTC)
    for delivery in found:
        table.add_row(
            delivery.id,
            delivery.type,
            delivery.endpoint_id,
            delivery.status,
            str(len(delivery.attempts)),
            _last_answer(delivery),
            _next_attempt(delivery, now),
        )
    _console().print(table, markup=False, highlight=False)


@webhooks.command()
@click.argument("job_id")
@click.argument("delivery_id")
@server_options
def replay(job_id: str, delivery_id: str, server: str, api_key: str | None, as_json: bool) -> None:
    """Send DELIVERY_ID of JOB_ID again now (the same webhook-id: receivers that dedupe see it
    once)."""
    with connected(server, api_key) as client:
        delivery = client.replay_delivery(job_id, delivery_id)
    if as_json:
        _print_json(delivery.model_dump(mode="json"))
    else:
        click.echo(f"{delivery.id} {delivery.status}")


def _console() -> Console:
    """The terminal's width; piped (and no COLUMNS), wide enough that no id or URL is cut."""
    console = Console()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = PIPED_WIDTH
    return console


def _last_answer(delivery: DeliveryResource) -> str:
    if not delivery.attempts:
        return "-"
    last = delivery.attempts[-1]
    if last.status_code is not None:
        return str(last.status_code)
    return last.error or "-"


def _next_attempt(delivery: DeliveryResource, now: datetime) -> str:
    if delivery.next_attempt_at is None or delivery.status != "pending":
        return "-"
    if delivery.next_attempt_at <= now:
        return "now"
    return f"in {_age(delivery.next_attempt_at - now)}"
