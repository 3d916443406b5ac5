"""SQLite plumbing: one writer thread with group commit, a small pool of reader threads.

Every write is a function ``op(tx) -> T`` queued to the writer thread. The thread takes all queued
ops, runs each inside its own savepoint of one ``BEGIN IMMEDIATE`` transaction and commits once,
so a thousand concurrent finishes cost one commit (group commit) while a lone write still commits
at once. An op that raises rolls back its savepoint only; its caller gets the exception. When the
write lock is held by another process the thread retries with short sleeps instead of SQLite's
coarse busy handler, so "database is locked" never reaches a caller before ``lock_timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from longjobs.errors import StorageUnavailable

T = TypeVar("T")

_BATCH = 1024
_NOW = "SELECT (julianday('now') - 2440587.5) * 86400.0"


@dataclass(slots=True)
class Tx:
    """What a write op sees: the connection, the store's clock, and keys to notify on commit."""

    conn: sqlite3.Connection
    now: float
    notes: set[str] = field(default_factory=set)


@dataclass(slots=True)
class _Item(Generic[T]):
    op: Callable[[Tx], T]
    future: asyncio.Future[T]
    loop: asyncio.AbstractEventLoop
    result: Any = None
    error: BaseException | None = None


def connect(path: str, *, synchronous: str, timeout: float) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=timeout)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA temp_store=MEMORY")
    conn.execute("PRAGMA cache_size=-16000")
    return conn


def is_busy(exc: sqlite3.OperationalError) -> bool:
    return "locked" in str(exc) or "busy" in str(exc)


def unavailable(exc: sqlite3.Error) -> StorageUnavailable:
    return StorageUnavailable(f"SQLite store unavailable: {exc}", retry_after=1.0)


class Writer:
    """The writer thread of one backend instance."""

    def __init__(
        self,
        path: str,
        *,
        synchronous: str,
        lock_timeout: float,
        on_commit: Callable[[set[str]], None],
    ) -> None:
        self._conn = connect(path, synchronous=synchronous, timeout=0.0)
        self._lock_timeout = lock_timeout
        self._on_commit = on_commit
        self._queue: queue.SimpleQueue[_Item[Any] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(
            target=self._run, name="longjobs-sqlite-writer", daemon=True
        )
        self._thread.start()

    def submit(self, op: Callable[[Tx], T]) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put(_Item(op, future, loop))
        return future

    async def run(self, op: Callable[[Tx], T]) -> T:
        return await self.submit(op)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        self._conn.close()

    # -- the thread ----------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < _BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            self._commit_batch(batch)
            if stop:
                return

    def _commit_batch(self, batch: list[_Item[Any]]) -> None:
        notes: set[str] = set()
        try:
            self._begin()
            tx = Tx(self._conn, self._conn.execute(_NOW).fetchone()[0])
            for item in batch:
                if self._apply(tx, item):
                    notes |= tx.notes
            self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            notes = set()
            error = unavailable(exc)
            for item in batch:
                item.error, item.result = error, None
        self._settle(batch, notes)

    def _begin(self) -> None:
        deadline = time.monotonic() + self._lock_timeout
        pause = 0.0001
        while True:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if not is_busy(exc) or time.monotonic() > deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, 0.005)

    @staticmethod
    def _apply(tx: Tx, item: _Item[Any]) -> bool:
        """Run one op in its own savepoint; True when it succeeded."""
        tx.conn.execute("SAVEPOINT op")
        tx.notes = set()
        try:
            item.result = item.op(tx)
        except sqlite3.OperationalError as exc:
            if is_busy(exc):
                raise
            item.error = unavailable(exc)
        except Exception as exc:
            item.error = exc
        if item.error is not None:
            tx.conn.execute("ROLLBACK TO op")
        tx.conn.execute("RELEASE op")
        return item.error is None

    def _settle(self, batch: list[_Item[Any]], notes: set[str]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[_Item[Any]]] = {}
        for item in batch:
            by_loop.setdefault(item.loop, []).append(item)
        for loop, items in by_loop.items():
            # A closed loop raises RuntimeError: nobody is waiting any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_resolve, items, notes, self._on_commit)


def _resolve(
    items: list[_Item[Any]], notes: set[str], on_commit: Callable[[set[str]], None]
) -> None:
    for item in items:
        if item.future.done():
            continue
        if item.error is not None:
            item.future.set_exception(item.error)
        else:
            item.future.set_result(item.result)
    if notes:
        on_commit(notes)


class Readers:
    """A few threads, each with its own read connection (WAL readers never block the writer)."""

    def __init__(self, path: str, *, threads: int, synchronous: str) -> None:
        self._path = path
        self._synchronous = synchronous
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="longjobs-sqlite-reader")

    async def run(self, op: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._call, op)

    def _call(self, op: Callable[[sqlite3.Connection], T]) -> T:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self._path, synchronous=self._synchronous, timeout=10.0)
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        try:
            return op(conn)
        except sqlite3.OperationalError as exc:
            raise unavailable(exc) from exc

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
