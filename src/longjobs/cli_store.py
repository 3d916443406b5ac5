"""``longjobs migrate``: bring a job store's schema up to this version of longjobs."""

from __future__ import annotations

from urllib.parse import urlsplit

import click

from longjobs.app import App
from longjobs.backends import schema_version
from longjobs.cli_keys import keys_database_option, run_command


def shown(url: str) -> str:
    """``url`` without its password, for printing."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(":" + parts.password + "@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


@click.command()
@keys_database_option
def migrate(database_url: str) -> None:
    """Create or upgrade the store's schema (servers and workers also do it when they start;
    several processes doing it at once take turns). A store made by a newer longjobs is left
    untouched and reported."""

    async def run() -> None:
        async with App(database_url):
            pass

    run_command(run())
    click.echo(f"{shown(database_url)}: schema version {schema_version(database_url)}")
