"""SQLite plumbing: one writer thread with group commit, a small pool of reader threads.

Every write is a function ``op(tx) -> T`` queued to the writer thread. The thread takes all queued
ops, runs each inside its own savepoint of one ``BEGIN IMMEDIATE`` transaction and commits once,
so a thousand concurrent finishes cost one commit (group commit) while a lone write still commits
at once. An op that raises rolls back its savepoint only; its caller gets the exception. When the
write lock is held by another process the thread retries with short sleeps instead of SQLite's
coarse busy handler, so "database is locked" never reaches a caller before ``lock_timeout``.

Fast path: when nothing is queued, the thread is idle and the file's write lock is free at once,
a write runs right on the calling event-loop thread (a WAL commit without fsync takes tens of
microseconds, less than the two thread hops it saves). Anything else goes through the thread.
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

from longjobs.errors import StorageError, StorageUnavailable

T = TypeVar("T")

_BATCH = 1024
_CHECKPOINT_SECONDS = 0.25
_NOW = "SELECT (julianday('now') - 2440587.5) * 86400.0"


@dataclass(slots=True)
class Tx:
    """What a write op sees: the connection, the store's clock, keys to notify on commit, and
    what the op wrote that followers in this process may take as it is (``published``: events
    by key, handed to the notifier with the keys once committed)."""

    conn: sqlite3.Connection
    now: float
    notes: set[str] = field(default_factory=set)
    published: dict[str, list[Any]] = field(default_factory=dict)
    unhanded: set[str] = field(default_factory=set)  # over the whole batch, not one op

    def wrote(self, key: str) -> None:
        """Note ``key`` for events that are not handed over: its followers will read (whatever
        else the batch hands over for it)."""
        self.notes.add(key)
        self.unhanded.add(key)


OnCommit = Callable[[set[str], dict[str, list[Any]]], None]


@dataclass(slots=True)
class _Item(Generic[T]):
    op: Callable[[Tx], T]
    future: asyncio.Future[T]
    loop: asyncio.AbstractEventLoop
    result: Any = None
    error: BaseException | None = None


def connect(path: str, *, synchronous: str, timeout: float) -> sqlite3.Connection:
    """A connection in autocommit mode whose busy timeout is ``timeout`` once set up (setting it
    up waits up to 30 s: another process may be creating the schema)."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA temp_store=MEMORY")
    conn.execute("PRAGMA cache_size=-16000")
    conn.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
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
        on_commit: OnCommit,
        on_foreign_commit: Callable[[], None],
        poll_interval: float,
    ) -> None:
        self._conn = connect(path, synchronous=synchronous, timeout=0.0)
        # Checkpoints run on this thread between batches (_checkpoint_if_due), never inside a
        # commit that may be running inline on the event loop.
        self._conn.execute("PRAGMA wal_autocheckpoint=0")
        self._commits = 0
        self._checkpointed_at = time.monotonic()
        self._lock_timeout = lock_timeout
        self._on_commit = on_commit
        self._on_foreign_commit = on_foreign_commit
        self._poll_interval = poll_interval
        self._data_version = self._read_data_version()
        self._queue: queue.SimpleQueue[_Item[Any] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()  # one transaction at a time on self._conn
        self._inline = synchronous.lower() in ("off", "normal")  # no fsync on the loop thread
        self._closed = False
        self._thread = threading.Thread(
            target=self._run, name="longjobs-sqlite-writer", daemon=True
        )
        self._thread.start()

    def submit(self, op: Callable[[Tx], T], *, inline: bool = True) -> asyncio.Future[T]:
        if self._closed:
            raise StorageUnavailable("the SQLite store is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        item = _Item(op, future, loop)
        inline = inline and self._inline and self._queue.empty()
        if inline and self._lock.acquire(blocking=False):
            try:
                done = not self._closed and self._commit_batch([item], inline=True)
            finally:
                self._lock.release()
            if done:
                return future
        self._queue.put(item)
        return future

    async def run(self, op: Callable[[Tx], T], *, inline: bool = True) -> T:
        """Run a write op; ``inline=False`` keeps a large one off the event loop thread."""
        return await self.submit(op, inline=inline)

    def close(self) -> None:
        self._closed = True
        self._queue.put(None)
        self._thread.join()
        with self._lock:
            self._conn.close()

    # -- the thread ----------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._serve_queue()
        finally:  # whatever is still queued gets an answer, never silence
            self._fail_queued(StorageUnavailable("the SQLite store is closed"))

    def _fail_queued(self, error: Exception) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                item.error = error
                self._settle([item], set(), {})

    def _serve_queue(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=self._poll_interval)
            except queue.Empty:
                with self._lock:
                    self._check_foreign_commits()
                    self._checkpoint_if_due()
                continue
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
            with self._lock:
                self._commit_batch(batch)
                self._check_foreign_commits()
                self._checkpoint_if_due()
            if stop:
                return

    def _checkpoint_if_due(self) -> None:
        """Copy the WAL back into the database a few times a second while there are writes, so
        that it restarts from the beginning and stays small: a long WAL slows every read."""
        if not self._commits or time.monotonic() - self._checkpointed_at < _CHECKPOINT_SECONDS:
            return
        with contextlib.suppress(sqlite3.OperationalError):  # busy: next time
            self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        self._commits, self._checkpointed_at = 0, time.monotonic()

    def _read_data_version(self) -> int:
        version: int = self._conn.execute("PRAGMA data_version").fetchone()[0]
        return version

    def _check_foreign_commits(self) -> None:
        """``data_version`` of this connection changes only when another connection, in this
        process or another, commits: that is how we learn of other processes' writes."""
        try:
            version = self._read_data_version()
        except sqlite3.OperationalError:
            return
        if version != self._data_version:
            self._data_version = version
            self._on_foreign_commit()

    def _commit_batch(self, batch: list[_Item[Any]], *, inline: bool = False) -> bool:
        """Run and commit ``batch``; False, with nothing done, when ``inline`` and the file's
        write lock is taken (the caller then queues it for the thread)."""
        notes: set[str] = set()
        published: dict[str, list[Any]] = {}
        try:
            if inline:
                if not self._try_begin():
                    return False
            else:
                self._begin()
            tx = Tx(self._conn, self._conn.execute(_NOW).fetchone()[0])
            notes, published = self._apply_all(tx, batch)
            self._conn.execute("COMMIT")
            self._commits += 1
        except sqlite3.Error as exc:
            if self._conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("ROLLBACK")
            notes, published = set(), {}
            error = unavailable(exc)
            for item in batch:
                item.error, item.result = error, None
        if inline:
            _resolve(batch, notes, published, self._on_commit)
        else:
            self._settle(batch, notes, published)
        return True

    def _try_begin(self) -> bool:
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if is_busy(exc):
                return False
            raise
        return True

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

    @classmethod
    def _apply_all(cls, tx: Tx, batch: list[_Item[Any]]) -> tuple[set[str], dict[str, list[Any]]]:
        """Run every op of ``batch``: the keys they noted and the events they handed over."""
        notes: set[str] = set()
        published: dict[str, list[Any]] = {}
        for item in batch:
            if cls._apply(tx, item):
                notes |= tx.notes
                for key, events in tx.published.items():
                    published.setdefault(key, []).extend(events)
        for key in tx.unhanded.intersection(published) if published else ():
            del published[key]  # some of its events were not handed over: read them all
        return notes, published

    @staticmethod
    def _apply(tx: Tx, item: _Item[Any]) -> bool:
        """Run one op in its own savepoint; True when it succeeded."""
        tx.conn.execute("SAVEPOINT op")
        tx.notes = set()
        if tx.published:
            tx.published = {}
        try:
            item.result = item.op(tx)
        except sqlite3.OperationalError as exc:
            if is_busy(exc):
                raise
            item.error = unavailable(exc)
        except sqlite3.Error as exc:
            item.error = StorageError(f"SQLite store error: {exc}")
        except Exception as exc:
            item.error = exc
        if item.error is not None:
            tx.conn.execute("ROLLBACK TO op")
        tx.conn.execute("RELEASE op")
        return item.error is None

    def _settle(
        self, batch: list[_Item[Any]], notes: set[str], published: dict[str, list[Any]]
    ) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[_Item[Any]]] = {}
        for item in batch:
            by_loop.setdefault(item.loop, []).append(item)
        for loop, items in by_loop.items():
            # A closed loop raises RuntimeError: nobody is waiting any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_resolve, items, notes, published, self._on_commit)


def _resolve(
    items: list[_Item[Any]],
    notes: set[str],
    published: dict[str, list[Any]],
    on_commit: OnCommit,
) -> None:
    for item in items:
        if item.future.done():
            continue
        if item.error is not None:
            item.future.set_exception(item.error)
        else:
            item.future.set_result(item.result)
    if notes:
        on_commit(notes, published)


class Readers:
    """A few threads, each with its own read connection (WAL readers never block the writer)."""

    def __init__(self, path: str, *, threads: int, synchronous: str) -> None:
        self._path = path
        self._synchronous = synchronous
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="longjobs-sqlite-reader")
        self._inline: sqlite3.Connection | None = None

    async def run(self, op: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._call, op)

    async def run_point(self, op: Callable[[sqlite3.Connection], T]) -> T:
        """Run a read of a few rows on the calling (event loop) thread: a WAL read of an indexed
        row takes microseconds, far less than a hop to a thread and back. Should the read ever
        meet a lock (WAL recovery), it goes to a reader thread instead of blocking the loop."""
        if self._inline is None:
            self._inline = connect(self._path, synchronous=self._synchronous, timeout=0.0)
            self._connections.append(self._inline)
        try:
            return op(self._inline)
        except sqlite3.OperationalError as exc:
            if not is_busy(exc):
                raise unavailable(exc) from exc
        except sqlite3.Error as exc:
            raise StorageError(f"SQLite store error: {exc}") from exc
        return await self.run(op)

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
        except sqlite3.Error as exc:
            raise StorageError(f"SQLite store error: {exc}") from exc

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        self._inline = None
