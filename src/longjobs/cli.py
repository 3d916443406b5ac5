"""The ``longjobs`` command: ``serve`` (API + in-process worker), ``worker``, ``keys``, and the
client commands of ``cli_jobs`` (``submit``, ``watch``, ``ls``, ``get``, ``cancel``, ``result``,
``kinds``).

Bad input gets one readable line on stderr and a non-zero exit, never a traceback:
exit 2 for usage errors (a bad APP path or option), 1 for failures at run time.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import ipaddress
import logging
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from longjobs.app import App
from longjobs.cli_jobs import JOB_COMMANDS
from longjobs.cli_keys import keys, run_command
from longjobs.cli_store import migrate
from longjobs.cli_webhooks import webhooks
from longjobs.errors import LongjobsError

log = logging.getLogger("longjobs")


def load_app(path: str, database_url: str | None) -> App:
    """Import ``module:attribute`` from the current directory; the attribute must be an App."""
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise click.BadParameter(f"{path!r} is not of the form module:attribute", param_hint="APP")
    if database_url:
        os.environ["LONGJOBS_DATABASE_URL"] = database_url
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:  # the module exists; something it imports does not
            raise click.ClickException(f"importing {module_name!r} failed: {exc}") from None
        raise click.BadParameter(
            f"cannot import {module_name!r}: {exc}", param_hint="APP"
        ) from None
    except ValidationError as exc:  # App() read a LONGJOBS_* setting that is not valid
        raise click.ClickException(_settings_problem(exc)) from None
    except Exception as exc:
        message = f"importing {module_name!r} failed: {type(exc).__name__}: {exc}"
        raise click.ClickException(message) from None
    app = getattr(module, attribute, None)
    if not isinstance(app, App):
        raise click.BadParameter(f"{path!r} is not a longjobs App", param_hint="APP")
    if database_url:
        app.database_url = database_url
    return app


def _settings_problem(exc: ValidationError) -> str:
    first = exc.errors()[0]
    name = "LONGJOBS_" + "_".join(str(part) for part in first["loc"]).upper()
    return f"invalid setting {name}: {first['msg']}"


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything else starts: a port in use is one line."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP, else asyncio does not set TCP_NODELAY on the accepted connections
    # and every small answer waits ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise click.ClickException(f"cannot serve on {host}:{port}: {exc.strerror}") from None
    sock.set_inheritable(True)
    return sock


def _run(main: Coroutine[Any, Any, None]) -> None:
    """Run on uvloop when it is installed (it comes with uvicorn[standard]): the same asyncio
    API, with a faster event loop and faster sockets."""
    tune_gc()
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main)


def tune_gc() -> None:
    """Keep the cycle collector from pausing a busy server. A process holding thousands of
    connections, streams and jobs has many live objects, and with the default thresholds the
    collector walks all of them every few seconds: a pause of 100-300 ms that every open event
    stream feels. Objects made at start-up (modules, the app) are moved out of its way, and
    collections run less often; garbage without cycles is still freed at once."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def _has_api_keys(app: App) -> bool:
    if app.database_url.startswith("sqlite:"):  # do not create a file just to look inside
        from longjobs.backends.sqlite import parse_sqlite_url

        if not Path(parse_sqlite_url(app.database_url)[0]).exists():
            return False

    async def look() -> bool:
        async with app:
            return await app.backend.has_api_keys()

    return run_command(look())


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # One INFO line per upstream model request is noise at any scale; failures still show.
    for name in ("httpx", "httpx2", "openai"):
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger().level))


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@click.group(
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="Exit codes: 0 done (the job completed), 1 the server failed or cannot be reached, "
    "2 bad usage or input, 3 the job failed, 4 the job was cancelled, 5 no such job or kind, "
    "6 not finished yet, 7 the result expired, 130 interrupted.",
)
@click.version_option(package_name="longjobs")
def cli() -> None:
    """Durable background jobs for long AI operations."""


def main(args: list[str] | None = None) -> None:
    """The ``longjobs`` entry point: a usage error is one line on stderr and exit code 2."""
    try:
        cli.main(args=args, prog_name="longjobs", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.ctx.get_help() if exc.ctx else str(exc), err=True)
        raise SystemExit(2) from None
    except click.ClickException as exc:
        click.echo(f"longjobs: {exc.format_message()}", err=True)
        raise SystemExit(exc.exit_code) from None
    except click.exceptions.Abort:
        raise SystemExit(130) from None


app_argument = click.argument("app_path", metavar="APP")
database_option = click.option(
    "--database-url",
    envvar="LONGJOBS_DATABASE_URL",
    help="Where jobs are stored (default sqlite:///longjobs.db).",
)
concurrency_option = click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=None,
    help="Handlers run at once by the worker (default LONGJOBS_CONCURRENCY or 32).",
)
log_level_option = click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
)


@cli.command()
@app_argument
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--no-worker", is_flag=True, help="Serve the API only; run workers elsewhere.")
@click.option(
    "--insecure-open-on-public-address",
    is_flag=True,
    help="Allow serving without API keys on a non-loopback address (anyone can submit jobs).",
)
@concurrency_option
@database_option
@log_level_option
def serve(
    app_path: str,
    host: str,
    port: int,
    no_worker: bool,
    insecure_open_on_public_address: bool,
    concurrency: int | None,
    database_url: str | None,
    log_level: str,
) -> None:
    """Serve the HTTP API (and, unless --no-worker, a worker) for APP (module:attribute)."""
    _configure_logging(log_level)
    app = load_app(app_path, database_url)
    public = not _is_loopback(host) and not insecure_open_on_public_address
    if public and not _has_api_keys(app):
        raise click.UsageError(
            f"refusing to serve without authentication on {host}: no API key exists yet; "
            "create one with `longjobs keys create --tenant NAME`, bind to 127.0.0.1, or "
            "pass --insecure-open-on-public-address"
        )
    sock = _bind(host, port)
    try:
        _run(_serve(app, sock, not no_worker, concurrency, log_level))
    except LongjobsError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        sock.close()


class _Server:
    """uvicorn's server, with our own signal handling: SIGTERM or Ctrl-C starts a graceful
    shutdown (a second one forces it) and the process then exits 0, where uvicorn would re-raise
    the signal and die by it."""

    def __init__(self, config: Any, on_shutdown: Callable[[], None]) -> None:
        import uvicorn

        class Server(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self) -> Any:
                loop = asyncio.get_running_loop()

                def on_signal() -> None:
                    if self.should_exit:
                        self.force_exit = True
                    self.should_exit = True
                    on_shutdown()

                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.add_signal_handler(sig, on_signal)
                try:
                    yield
                finally:
                    for sig in (signal.SIGTERM, signal.SIGINT):
                        loop.remove_signal_handler(sig)

        self.server = Server(config)

    @property
    def started(self) -> bool:
        return bool(self.server.started)

    async def serve(self, sockets: list[socket.socket]) -> None:
        await self.server.serve(sockets=sockets)


async def _serve(
    app: App, sock: socket.socket, with_worker: bool, concurrency: int | None, log_level: str
) -> None:
    import uvicorn

    from longjobs.http import close_streams, create_api
    from longjobs.worker import Worker

    hooks = []
    if with_worker:
        worker = Worker(app, concurrency=concurrency)

        @contextlib.asynccontextmanager
        async def running_worker() -> AsyncIterator[None]:
            task = asyncio.create_task(worker.run(), name="longjobs-worker")
            try:
                yield
            finally:
                worker.stop()
                await task

        hooks.append(running_worker)
    api = create_api(app, lifespan_hooks=hooks)
    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(
        api,
        log_level=log_level,
        lifespan="on",
        timeout_graceful_shutdown=5,
        access_log=log_level == "debug",
    )
    # Open event streams end at once (clients reconnect), or uvicorn would wait for them.
    server = _Server(config, on_shutdown=lambda: close_streams(api))
    await app.open()  # fail fast, with one line, on a bad database URL or schema
    log.info(
        "longjobs serving %s on http://%s:%d (%s)",
        app.database_url,
        host,
        port,
        "with a worker" if with_worker else "API only",
    )
    await server.serve(sockets=[sock])
    if not server.started:
        raise SystemExit(1)


@cli.command()
@app_argument
@concurrency_option
@database_option
@log_level_option
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Serve this worker's Prometheus metrics (attempts, run times, queue waits, handlers "
    "running) at http://METRICS-HOST:PORT/metrics.",
)
@click.option("--metrics-host", default="127.0.0.1", show_default=True)
def worker(
    app_path: str,
    concurrency: int | None,
    database_url: str | None,
    log_level: str,
    metrics_port: int | None,
    metrics_host: str,
) -> None:
    """Run a worker for APP (module:attribute) until SIGTERM or Ctrl-C; then stop gracefully."""
    _configure_logging(log_level)
    app = load_app(app_path, database_url)
    if metrics_port is not None:
        _serve_metrics(metrics_host, metrics_port)
    try:
        _run(_work(app, concurrency))
    except LongjobsError as exc:
        raise click.ClickException(str(exc)) from None


def _serve_metrics(host: str, port: int) -> None:
    """The process's metrics over HTTP from a daemon thread (what the API's ``/metrics`` shows
    for its own process; jobs by status come from the API, which reads them from the store)."""
    from prometheus_client import start_http_server

    from longjobs.metrics import REGISTRY

    try:
        server, _ = start_http_server(port, addr=host, registry=REGISTRY)
    except OSError as exc:
        raise click.ClickException(
            f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}"
        ) from None
    bound_host, bound_port = server.server_address[:2]
    log.info("metrics on http://%s:%d/metrics", bound_host, bound_port)


async def _work(app: App, concurrency: int | None) -> None:
    from longjobs.worker import Worker

    await app.open()
    worker = Worker(app, concurrency=concurrency)
    loop = asyncio.get_running_loop()
    signals = {"count": 0}

    def on_signal(*_: Any) -> None:
        signals["count"] += 1
        if signals["count"] > 1:
            log.warning("second signal: exiting at once; leases expire and jobs rerun")
            os._exit(130)
        log.info("stopping: no new jobs; running ones get %ss", app.settings.shutdown_grace)
        worker.stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    try:
        await worker.run()
    finally:
        await app.close()


cli.add_command(keys)  # longjobs keys ...
cli.add_command(migrate)  # longjobs migrate
cli.add_command(webhooks)  # longjobs webhooks ...
for command in JOB_COMMANDS:  # longjobs submit | watch | ls | get | cancel | result | kinds
    cli.add_command(command)


if __name__ == "__main__":  # pragma: no cover
    main()
