"""``longjobs submit | watch | ls | get | cancel | result | kinds``: a server's jobs from a shell.

They talk to a running server (``--server`` or ``LONGJOBS_SERVER``, default
http://127.0.0.1:8000) with ``--api-key`` or ``LONGJOBS_API_KEY``. ``--json`` prints JSON for
scripts. Exit codes: 0 done (the job completed), 1 the server failed or cannot be reached,
2 bad usage or input, 3 the job failed, 4 the job was cancelled, 5 no such job or kind,
6 not finished yet (a result asked too early, a ``--wait`` that ran out), 7 the result expired.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from longjobs.client import (
    APIError,
    Client,
    ConnectionFailed,
    EventResource,
    InvalidRequest,
    JobCancelled,
    JobFailed,
    JobResource,
    NotFinished,
    NotFound,
    ResultExpired,
    WaitTimeout,
)
from longjobs.models import JSON

F = TypeVar("F", bound=Callable[..., Any])

EXIT_ERROR, EXIT_USAGE, EXIT_FAILED, EXIT_CANCELLED = 1, 2, 3, 4
EXIT_NOT_FOUND, EXIT_NOT_FINISHED, EXIT_EXPIRED = 5, 6, 7
_EXIT_OF_ERROR: list[tuple[type[Exception], int]] = [
    (JobFailed, EXIT_FAILED),
    (JobCancelled, EXIT_CANCELLED),
    (NotFound, EXIT_NOT_FOUND),
    (NotFinished, EXIT_NOT_FINISHED),
    (WaitTimeout, EXIT_NOT_FINISHED),
    (ResultExpired, EXIT_EXPIRED),
    (InvalidRequest, EXIT_USAGE),
]
_EXIT_OF_STATUS = {"completed": 0, "failed": EXIT_FAILED, "cancelled": EXIT_CANCELLED}


class CommandFailed(click.ClickException):
    """One line on stderr and the exit code of what went wrong."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]  # click reads it from the instance


def server_options(command: F) -> F:
    """``--server``, ``--api-key`` and ``--json`` on a command."""
    command = click.option(
        "--json", "as_json", is_flag=True, help="Print JSON (for scripts) instead of text."
    )(command)
    command = click.option(
        "--api-key",
        envvar="LONGJOBS_API_KEY",
        help="The API key (default LONGJOBS_API_KEY; none in open mode).",
    )(command)
    return click.option(
        "--server",
        envvar="LONGJOBS_SERVER",
        default="http://127.0.0.1:8000",
        show_default=True,
        help="The longjobs server (or LONGJOBS_SERVER).",
    )(command)


@contextmanager
def connected(server: str, api_key: str | None) -> Iterator[Client]:
    """A client of ``server``; the client's errors become one line and their exit code."""
    _check_key(api_key)
    try:
        with Client(server, api_key=api_key, retries=2) as client:
            yield client
    except ConnectionFailed as exc:
        raise CommandFailed(str(exc), EXIT_ERROR) from None
    except (APIError, WaitTimeout) as exc:
        code = next((code for cls, code in _EXIT_OF_ERROR if isinstance(exc, cls)), EXIT_ERROR)
        raise CommandFailed(_describe(exc), code) from None


@contextmanager
def webhook_url_checked(url: str | None) -> Iterator[None]:
    """A webhook URL the server refused becomes one line naming it (rather than the field)."""
    try:
        yield
    except InvalidRequest as exc:
        refused = [e for e in exc.problem.errors or [] if e.type == "unsafe_destination"]
        if url is None or not refused:
            raise
        raise CommandFailed(f"{url}: {refused[0].msg}", EXIT_USAGE) from None


def _describe(exc: Exception) -> str:
    if not isinstance(exc, APIError):
        return str(exc)
    problem = exc.problem
    text = problem.detail
    if problem.errors:
        fields = "; ".join(f"{'.'.join(map(str, e.loc))}: {e.msg}" for e in problem.errors)
        text = f"{text} ({fields})"
    if problem.error is not None:
        text = f"{text}: {problem.error.type}: {problem.error.message}"
    return text


def _print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def _job_json(job: JobResource) -> Any:
    return job.model_dump(mode="json")


# -- commands --------------------------------------------------------------------------------
@click.command()
@click.argument("kind")
@click.option(
    "--input",
    "input_text",
    default=None,
    metavar="JSON|@FILE|-",
    help="The job's input: JSON text, @path of a JSON file, or - for standard input.",
)
@click.option("--wait", type=click.FloatRange(min=0), help="Wait up to N s for the job to end.")
@click.option("--watch", is_flag=True, help="Show a live progress bar until the job ends.")
@click.option("--priority", type=int, default=None, help="Higher runs first (default 0).")
@click.option("--idempotency-key", default=None, help="The same key never makes two jobs.")
@click.option(
    "--webhook",
    "webhook_url",
    default=None,
    metavar="URL",
    help="POST the job's end to URL (signed: see 'longjobs webhooks secret').",
)
@server_options
def submit(
    kind: str,
    input_text: str | None,
    wait: float | None,
    watch: bool,
    priority: int | None,
    idempotency_key: str | None,
    webhook_url: str | None,
    server: str,
    api_key: str | None,
    as_json: bool,
) -> None:
    """Submit a job of KIND; prints its id (or the job with --json)."""
    payload = _read_input(input_text)
    with connected(server, api_key) as client, webhook_url_checked(webhook_url):
        job = client.submit(
            kind,
            payload,
            wait=wait,
            priority=priority,
            idempotency_key=idempotency_key,
            webhook_url=webhook_url,
        )
        if watch:
            _watch(client, job, as_json=as_json, cancel_on_interrupt=False)
            return
        if as_json:
            _print_json(_job_json(job))
        elif wait is not None:
            click.echo(f"{job.id} {job.status}")
        else:
            click.echo(job.id)
        if wait is not None:
            _exit_for(job, wait_ran_out=not job.is_terminal)


@click.command()
@click.argument("job_id")
@click.option(
    "--cancel-on-interrupt", is_flag=True, help="Cancel the job on Ctrl-C without asking."
)
@server_options
def watch(
    job_id: str, cancel_on_interrupt: bool, server: str, api_key: str | None, as_json: bool
) -> None:
    """Follow JOB_ID with a live progress bar (stage, message, percentage, elapsed, ETA) and its
    streamed output until it ends; exits 0 if it completed. With --json, one event per line."""
    with connected(server, api_key) as client:
        _watch(client, client.get(job_id), as_json=as_json, cancel_on_interrupt=cancel_on_interrupt)


@click.command("ls")
@click.option(
    "--status", type=click.Choice(["pending", "running", "completed", "failed", "cancelled"])
)
@click.option("--kind", default=None)
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@server_options
def list_jobs(
    status: str | None,
    kind: str | None,
    limit: int,
    server: str,
    api_key: str | None,
    as_json: bool,
) -> None:
    """List jobs, newest first."""
    with connected(server, api_key) as client:
        jobs = []
        for job in client.list(status=status, kind=kind, page_size=min(limit, 100)):
            jobs.append(job)
            if len(jobs) >= limit:
                break
    if as_json:
        _print_json([_job_json(job) for job in jobs])
        return
    table = Table(box=None)
    table.add_column("id", no_wrap=True, min_width=36)
    table.add_column("kind", min_width=8, overflow="fold")
    table.add_column("status", no_wrap=True)
    table.add_column("done", justify="right", no_wrap=True)
    table.add_column("stage", min_width=5, overflow="ellipsis")
    table.add_column("age", justify="right", no_wrap=True, min_width=4)
    now = datetime.now(UTC)
    for job in jobs:
        table.add_row(
            job.id,
            job.kind,
            job.status,
            f"{job.progress:.0%}",
            job.stage or "",
            _age(now - job.created_at),
        )
    Console().print(table)


@click.command()
@click.argument("job_id")
@server_options
def get(job_id: str, server: str, api_key: str | None, as_json: bool) -> None:
    """Show JOB_ID as JSON."""
    with connected(server, api_key) as client:
        _print_json(_job_json(client.get(job_id)))


@click.command()
@click.argument("job_id")
@server_options
def cancel(job_id: str, server: str, api_key: str | None, as_json: bool) -> None:
    """Cancel JOB_ID: a pending job at once, a running one as soon as its handler stops."""
    with connected(server, api_key) as client:
        job = client.cancel(job_id)
    if as_json:
        _print_json(_job_json(job))
    elif job.cancel_requested and not job.is_terminal:
        click.echo(f"{job.id} cancel requested")
    else:
        click.echo(f"{job.id} {job.status}")


@click.command()
@click.argument("job_id")
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True, path_type=Path))
@server_options
def result(
    job_id: str, output: Path | None, server: str, api_key: str | None, as_json: bool
) -> None:
    """Print JOB_ID's result (or write it to --output); exits 6 if it is not finished."""
    with connected(server, api_key) as client:
        value = client.result(job_id)
    if isinstance(value, bytes):
        data = value
    else:
        data = (json.dumps(value, indent=2, ensure_ascii=False) + "\n").encode()
    if output is None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    try:
        output.write_bytes(data)
    except OSError as exc:
        raise CommandFailed(f"cannot write {output}: {exc.strerror}", EXIT_ERROR) from None


@click.command()
@server_options
def kinds(server: str, api_key: str | None, as_json: bool) -> None:
    """List the job kinds the server runs."""
    with connected(server, api_key) as client:
        found = client.kinds()
    if as_json:
        _print_json([kind.model_dump(mode="json") for kind in found])
        return
    table = Table("kind", "description", "timeout", "attempts", box=None)
    for kind in found:
        timeout = kind.defaults.timeout_seconds
        table.add_row(
            kind.name,
            (kind.description or "").split("\n")[0],
            "-" if timeout is None else f"{timeout:g} s",
            str(kind.defaults.max_attempts),
        )
    Console().print(table)


JOB_COMMANDS = [submit, watch, list_jobs, get, cancel, result, kinds]


# -- helpers ---------------------------------------------------------------------------------
def _read_input(text: str | None) -> JSON:
    if text is None:
        return None
    source = "--input"
    if text == "-":
        text, source = sys.stdin.read(), "standard input"
    elif text.startswith("@"):
        path = Path(text[1:])
        try:
            text, source = path.read_text(encoding="utf-8"), str(path)
        except OSError as exc:
            raise click.BadParameter(
                f"cannot read {path}: {exc.strerror}", param_hint="--input"
            ) from None
        except UnicodeError:
            raise click.BadParameter(f"{path} is not UTF-8 text", param_hint="--input") from None
    try:
        value: JSON = json.loads(text, parse_constant=_no_constant, parse_float=_finite)
    except ValueError as exc:
        message = f"{source} is not valid JSON: {exc}"
        raise click.BadParameter(message, param_hint="--input") from None
    return value


def _finite(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"{text} is too large for a JSON number")
    return number


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def _check_key(api_key: str | None) -> None:
    if api_key is not None and not (api_key.isascii() and api_key.isprintable()):
        raise click.BadParameter("an API key is printable ASCII", param_hint="--api-key")


def _age(elapsed: timedelta) -> str:
    """``elapsed`` in the largest whole unit, as ``kubectl`` shows ages: 45s, 12m, 3h, 9d."""
    seconds = max(0, int(elapsed.total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _exit_for(job: JobResource, *, wait_ran_out: bool = False) -> None:
    if wait_ran_out:
        raise CommandFailed(f"{job.id} is still {job.status}", EXIT_NOT_FINISHED)
    code = _EXIT_OF_STATUS.get(job.status, 0)
    if code:
        reason = f": {job.error.type}: {job.error.message}" if job.error else ""
        raise CommandFailed(f"{job.id} {job.status}{reason}", code)


def _watch(client: Client, job: JobResource, *, as_json: bool, cancel_on_interrupt: bool) -> None:
    try:
        if as_json:
            for event in client.events(job.id):
                click.echo(json.dumps(event.model_dump(mode="json"), ensure_ascii=False))
        else:
            _show_progress(client, job)
    except KeyboardInterrupt:
        if cancel_on_interrupt or (
            sys.stdin.isatty() and click.confirm(f"\ncancel {job.id}?", default=False, err=True)
        ):
            client.cancel(job.id)
            click.echo(f"{job.id} cancel requested", err=True)
        raise CommandFailed("interrupted", 130) from None
    finished = client.get(job.id)
    if not as_json and finished.status == "completed":
        click.echo(f"{finished.id} completed")
    _exit_for(finished)


def _show_progress(client: Client, job: JobResource) -> None:
    console = Console(stderr=False)
    columns = (
        SpinnerColumn(finished_text="•"),
        TextColumn("[bold]{task.fields[status]}[/] {task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[eta]}"),
    )
    pending_text = ""
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(escape(job.kind), total=1.0, status=job.status, eta="")
        for event in client.events(job.id):
            if event.type == "progress":
                progress.update(
                    task, completed=event.get("progress") or 0.0, **_progress_text(event)
                )
            elif event.type == "status":
                progress.update(task, status=escape(str(event.get("status"))))
                if event.get("status") == "completed":
                    progress.update(task, completed=1.0, eta="")
            elif event.type == "output" and isinstance(event.get("delta"), str):
                pending_text += event.get("delta")
                *lines, pending_text = pending_text.split("\n")
                for line in lines:
                    progress.console.print(line, markup=False, highlight=False)
        if pending_text:
            progress.console.print(pending_text, markup=False, highlight=False)


def _progress_text(event: EventResource) -> dict[str, Any]:
    parts = [part for part in (event.get("stage"), event.get("message")) if part]
    eta = event.get("eta_seconds")
    fields: dict[str, Any] = {"eta": "" if eta is None else f"ETA {eta:.0f}s"}
    if parts:
        fields["description"] = escape(" · ".join(str(part) for part in parts))
    return fields
