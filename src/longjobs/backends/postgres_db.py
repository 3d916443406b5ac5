"""PostgreSQL plumbing: the pool, transactions with notifications, the listener, migrations.

Every write runs in its own transaction on a pooled connection and names the keys it changed
("work", "job:<id>", "cancel:<worker>"): one ``pg_notify`` statement sends them to every other
process at commit, and this process's waiters are woken as soon as the commit returns. One
dedicated connection LISTENs; when it is lost it reconnects with backoff, and since
notifications sent meanwhile are gone, everyone is woken to look for themselves.

Errors are mapped at this seam: a lost or refused connection is ``StorageUnavailable`` (the API
answers 503 with ``Retry-After``), any other database error ``StorageError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeAlias, TypeVar

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from longjobs.backends.notify import Notifier
from longjobs.backends.queries import load_queries
from longjobs.backends.rows import JOB_COLUMNS, JOB_SELECT
from longjobs.errors import SchemaVersionError, StorageError, StorageUnavailable

log = logging.getLogger("longjobs.postgres")

T = TypeVar("T")

Q = {
    name: sql.replace("$job_columns_of_jobs", ", ".join("jobs." + c for c in JOB_COLUMNS)).replace(
        "$job_columns", JOB_SELECT
    )
    for name, sql in load_queries("postgres").items()
}
MIGRATIONS = sorted(
    (int(name.removeprefix("migration_")), sql)
    for name, sql in Q.items()
    if name.startswith("migration_")
)
SCHEMA_VERSION = MIGRATIONS[-1][0]
CHANNEL = "longjobs"
_MIGRATION_LOCK = 0x6C6F6E676A6F6273  # "longjobs": one migrating process at a time

_UNAVAILABLE = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
)


_TRANSIENT_CLASSES = ("08", "40", "53", "57")  # connection, rollback, resources, operator
_TRANSIENT_STATES = {"25006", "55P03"}  # read-only (after a failover), lock not available


@contextlib.contextmanager
def mapped_errors() -> Iterator[None]:
    """Database exceptions as longjobs' storage errors: what may pass by itself (a lost
    connection, a deadlock or serialization failure, a full disk, a shutdown, a timeout) is
    ``StorageUnavailable`` (the API answers 503 with Retry-After), the rest ``StorageError``."""
    try:
        yield
    except _UNAVAILABLE as exc:
        raise StorageUnavailable(f"PostgreSQL unavailable: {type(exc).__name__}") from exc
    except asyncpg.PostgresError as exc:
        state = str(getattr(exc, "sqlstate", "") or "")
        if state[:2] in _TRANSIENT_CLASSES or state in _TRANSIENT_STATES:
            raise StorageUnavailable(f"PostgreSQL unavailable: {type(exc).__name__}") from exc
        raise StorageError(f"PostgreSQL error: {exc}") from exc


Conn: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"


class Tx:
    """What a write op sees: its connection (inside a transaction) and the keys to notify."""

    __slots__ = ("conn", "notes")

    def __init__(self, conn: Conn) -> None:
        self.conn = conn
        self.notes: set[str] = set()


class Database:
    """The pool and the listener of one backend instance."""

    def __init__(self, dsn: str, notifier: Notifier, *, pool_size: int) -> None:
        self.dsn = dsn
        self.notifier = notifier
        self.pool_size = pool_size
        self.token = secrets.token_hex(4)  # marks this process's own notifications
        self._pool: asyncpg.Pool | None = None
        self._listener: asyncio.Task[None] | None = None

    async def open(self) -> None:
        with mapped_errors():
            await migrate(self.dsn)
            self._pool = await asyncpg.create_pool(
                self.dsn, min_size=1, max_size=self.pool_size, command_timeout=60
            )
        ready = asyncio.get_running_loop().create_future()
        self._listener = asyncio.create_task(self._listen(ready))
        try:
            await ready
        except BaseException:
            await self.close()  # no pool left behind by a failed open
            raise

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._listener
            self._listener = None
        if self._pool is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._pool.close(), 10)
            self._pool = None

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StorageUnavailable("the PostgreSQL store is closed")
        return self._pool

    async def write(self, op: Callable[[Tx], Awaitable[T]]) -> T:
        """Run ``op`` in a transaction; its notes are sent to other processes at commit and
        wake this process's waiters once it has committed."""
        with mapped_errors():
            async with self.pool.acquire() as conn:
                async with conn.transaction():
                    tx = Tx(conn)
                    result = await op(tx)
                if tx.notes:
                    # After the commit, in a statement of its own: a NOTIFY inside the
                    # transaction takes a cluster-wide lock through the commit's WAL flush,
                    # which would serialize every commit. Lost by a crash right here, it is
                    # made up for by the processes' polling.
                    self.notifier.fire(tx.notes)
                    try:
                        await conn.execute(Q["notify"], payloads(self.token, tx.notes))
                    except (asyncpg.PostgresError, *_UNAVAILABLE) as exc:
                        # Committed all the same: the write must not be reported as failed.
                        log.warning("could not notify other processes: %s", type(exc).__name__)
        return result

    async def read(self, op: Callable[[Conn], Awaitable[T]]) -> T:
        with mapped_errors():
            async with self.pool.acquire() as conn:
                return await op(conn)

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        with mapped_errors():
            rows: list[asyncpg.Record] = await self.pool.fetch(sql, *args)
            return rows

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        with mapped_errors():
            row: asyncpg.Record | None = await self.pool.fetchrow(sql, *args)
            return row

    async def fetchval(self, sql: str, *args: Any) -> Any:
        with mapped_errors():
            return await self.pool.fetchval(sql, *args)

    # -- the listener ----------------------------------------------------------------------
    async def _listen(self, ready: asyncio.Future[None]) -> None:
        pause = 0.1
        give_up = asyncio.get_running_loop().time() + _FIRST_LISTEN_SECONDS
        while True:
            try:
                conn = await self._listening_connection()
            except Exception as exc:  # any failure to listen: try again (for a while, at first)
                if not ready.done() and asyncio.get_running_loop().time() > give_up:
                    ready.set_exception(
                        StorageUnavailable(f"PostgreSQL unavailable: {type(exc).__name__}")
                    )
                    return
                log.warning("cannot listen for notifications (%s); retrying in %.1fs",
                            type(exc).__name__, pause)  # fmt: skip
                await asyncio.sleep(pause * random.uniform(0.5, 1.0))
                pause = min(pause * 2, 5.0)
                continue
            lost = asyncio.Event()
            try:
                conn.add_termination_listener(_setter(lost))
                if conn.is_closed():
                    lost.set()
                if ready.done():
                    self.notifier.fire_all()  # notifications may have been missed meanwhile
                else:
                    ready.set_result(None)
                pause = 0.1
                await lost.wait()
                log.warning("lost the notification connection; reconnecting")
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(conn.close(), 5)

    async def _listening_connection(self) -> asyncpg.Connection[asyncpg.Record]:
        """A new connection that LISTENs, or the error that prevented it (closed again)."""
        conn: asyncpg.Connection[asyncpg.Record] = await asyncpg.connect(self.dsn)
        try:
            await conn.add_listener(CHANNEL, self._on_notification)
        except BaseException:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 5)
            raise
        return conn

    def _on_notification(self, conn: object, pid: int, channel: str, payload: object) -> None:
        token, *keys = str(payload).split("\n")
        if token == self.token:
            return  # ours: already fired when it committed
        jobs = [key for key in keys if key.startswith("job:")]
        if len(jobs) < len(keys):
            self.notifier.fire([key for key in keys if not key.startswith("job:")])
        if jobs:
            self.notifier.fire_jobs(jobs)


_FIRST_LISTEN_SECONDS = 5.0  # how long open() retries before it reports the store unavailable
_PAYLOAD_BYTES = 7000  # PostgreSQL refuses a payload of 8000 bytes or more


def storable(value: str) -> bool:
    """PostgreSQL text cannot hold NUL: a name with one names nothing stored."""
    return "\x00" not in value


def text(value: str | None) -> str | None:
    """``value`` for a text column: a NUL (which PostgreSQL text cannot hold) becomes U+FFFD."""
    return value.replace("\x00", "\ufffd") if value and "\x00" in value else value


def payloads(token: str, keys: set[str]) -> list[str]:
    """The notifications that carry ``keys``: each the token, then keys one per line."""
    found: list[str] = []
    lines, size = [token], len(token)
    for key in keys:
        if size + len(key) + 1 > _PAYLOAD_BYTES and len(lines) > 1:
            found.append("\n".join(lines))
            lines, size = [token], len(token)
        lines.append(key)
        size += len(key.encode()) + 1
    found.append("\n".join(lines))
    return found


async def _version(conn: asyncpg.Connection[asyncpg.Record]) -> int | None:
    """The schema version, or None before the first migration."""
    if await conn.fetchval("SELECT to_regclass('longjobs_schema')") is None:
        return None
    version = await conn.fetchval("SELECT max(version) FROM longjobs_schema")
    if version is not None and version > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"the database has longjobs schema version {version}; this longjobs knows "
            f"only {SCHEMA_VERSION}: upgrade longjobs"
        )
    return None if version is None else int(version)


def _setter(event: asyncio.Event) -> Callable[[object], None]:
    return lambda _: event.set()


async def migrate(dsn: str) -> int:
    """Bring the schema to ``SCHEMA_VERSION`` (one process at a time); the version now. A
    database made by a newer longjobs is refused, never touched."""
    conn = await asyncpg.connect(dsn)
    try:
        current = await _version(conn)
        if current == SCHEMA_VERSION:
            return current  # up to date: no lock, no DDL (nor the privileges it needs)
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS longjobs_schema (version integer NOT NULL)"
            )
            version = await conn.fetchval("SELECT max(version) FROM longjobs_schema") or 0
            if version > SCHEMA_VERSION:
                raise SchemaVersionError(
                    f"the database has longjobs schema version {version}; this longjobs knows "
                    f"only {SCHEMA_VERSION}: upgrade longjobs"
                )
            for number, script in MIGRATIONS:
                if number > version:
                    await conn.execute(script)
                    await conn.execute("INSERT INTO longjobs_schema VALUES ($1)", number)
                    log.info("applied schema migration %d", number)
                    version = number
            return int(version)
    finally:
        await conn.close()
