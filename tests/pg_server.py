"""A throwaway PostgreSQL server for the tests.

The server is the machine's own PostgreSQL (found on ``PATH`` or in Debian's
``/usr/lib/postgresql/*/bin``), initialised in a fresh temporary directory, listening only on
127.0.0.1 on a free port, and never running as root: PostgreSQL refuses to, so a root test run
starts it as the ``postgres`` account (``nobody`` where there is none). ``make services``
installs the binaries when they are missing; ``python -m tests.pg_server`` prints where they are.

    with PostgresServer(find_bindir()) as server:
        dsn = server.dsn()            # postgresql://postgres@127.0.0.1:PORT/postgres
        server.stop("immediate")      # a crash: no checkpoint, recovery on the next start
        server.start()                # the same port and data directory
"""

from __future__ import annotations

import ctypes
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Literal

import asyncpg

DEBIAN_ROOT = Path("/usr/lib/postgresql")
SUPERUSER = "postgres"
StopMode = Literal["smart", "fast", "immediate"]
# The signals pg_ctl sends for each shutdown mode.
STOP_SIGNALS = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}
# Durability against a crash of the server (a commit's WAL is written before it is
# acknowledged, so `stop("immediate")` keeps it) but not against one of the machine.
SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "fsync": "off",
    "full_page_writes": "off",
    "synchronous_commit": "on",
    "max_connections": "300",
    "max_wal_size": "256MB",  # WAL files live in memory too (see `scratch_dir`)
}


class PostgresUnavailable(RuntimeError):
    """The server could not be initialised or started; the message carries its output."""


def find_bindir(path: str | None = None, debian_root: Path = DEBIAN_ROOT) -> Path | None:
    """The directory holding ``initdb`` and ``postgres``: ``PATH`` first, then Debian's
    versioned directories, highest version first; None when there is none."""
    initdb = shutil.which("initdb", path=path if path is not None else os.environ.get("PATH"))
    candidates = [Path(initdb).resolve().parent] if initdb else []
    versions = [d for d in debian_root.glob("*") if re.fullmatch(r"\d+(\.\d+)*", d.name)]
    versions.sort(key=lambda d: tuple(int(n) for n in d.name.split(".")), reverse=True)
    candidates += [d / "bin" for d in versions]
    for bindir in candidates:
        if all(os.access(bindir / name, os.X_OK) for name in ("initdb", "postgres")):
            return bindir
    return None


def server_account() -> pwd.struct_passwd | None:
    """The unprivileged account a root test run starts the server as; None when not root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise PostgresUnavailable("running as root and neither a postgres nor a nobody account exists")


def scratch_dir() -> str | None:
    """Where data directories go: /dev/shm when it has room, the system's temporary directory
    otherwise. On a disk, a new database takes ~80 ms to create instead of ~11 ms."""
    try:
        shm = os.statvfs("/dev/shm")
    except OSError:
        return None
    roomy = shm.f_bavail * shm.f_frsize >= 1 << 30
    return "/dev/shm" if roomy and os.access("/dev/shm", os.W_OK) else None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


if sys.platform == "linux":
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
    _prctl.argtypes = [ctypes.c_int, ctypes.c_ulong]


def _die_with_starting_thread() -> None:
    # Runs in the child between fork and exec: a test run that is killed outright leaves no
    # server behind, as the kernel sends it SIGQUIT (an immediate shutdown).
    _prctl(1, int(signal.SIGQUIT))  # PR_SET_PDEATHSIG


class PostgresServer:
    """One PostgreSQL server in its own temporary directory; `close` removes both.

    The kernel stops the server when the thread that started it ends, so start it from the
    thread that owns its lifetime (pytest's main thread), not from a pool thread.
    """

    def __init__(self, bindir: Path, *, start_timeout: float = 30.0) -> None:
        self.bindir = bindir
        self.start_timeout = start_timeout
        self.account = server_account()
        self.base = Path(tempfile.mkdtemp(prefix="longjobs-pg-", dir=scratch_dir()))
        self.data_dir = self.base / "data"
        self.log_path = self.base / "server.log"
        self.port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        if self.account is not None:
            os.chown(self.base, self.account.pw_uid, self.account.pw_gid)

    def __enter__(self) -> PostgresServer:
        try:
            self.initdb()
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def pid(self) -> int | None:
        """The postmaster's process id while it runs."""
        running = self._process is not None and self._process.poll() is None
        return self._process.pid if running and self._process else None

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    async def create_database(self, template: str = "template0") -> str:
        """Create a database copied from ``template`` (by default an empty one); its name."""
        name = f"t_{secrets.token_hex(6)}"
        connection = await asyncpg.connect(self.dsn())
        try:
            # FILE_COPY copies the files and checkpoints: faster than WAL_LOG (PostgreSQL 15's
            # default), which writes the whole template into the WAL.
            copy = " STRATEGY FILE_COPY" if connection.get_server_version().major >= 15 else ""
            await connection.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"{copy}')
        finally:
            await connection.close()
        return name

    async def drop_database(self, name: str) -> None:
        """Drop a database, disconnecting whoever is still connected to it."""
        connection = await asyncpg.connect(self.dsn())
        try:
            await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await connection.close()

    def initdb(self) -> None:
        """Create the cluster: trust authentication, UTF8, the C locale (present everywhere)."""
        done = self._run(
            [str(self.bindir / "initdb"), "-D", str(self.data_dir), "-U", SUPERUSER,
             "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync", "--no-instructions"],
        )  # fmt: skip
        if done.returncode != 0:
            raise PostgresUnavailable(f"initdb failed:\n{done.stdout.decode(errors='replace')}")

    def start(self) -> None:
        """Start the server, on the port it had before if it ran already, and wait until it
        accepts connections (after crash recovery, following an immediate stop)."""
        if self.pid is not None:
            raise RuntimeError("the server is already running")
        for _ in range(3):
            pinned = self.port is not None
            self.port = self.port or free_port()
            log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
            self._process = self._spawn()
            if self._wait_until_ready():
                return
            log = self._read_log(log_start)
            self._stop_process(signal.SIGQUIT)
            if pinned or "could not bind" not in log:  # another process took a free port
                raise PostgresUnavailable(f"PostgreSQL did not start; its log:\n{log}")
            self.port = None
        raise PostgresUnavailable("PostgreSQL found no free port in three tries")

    def stop(self, mode: StopMode = "fast") -> None:
        """Stop as ``pg_ctl stop -m MODE`` would; ``immediate`` is a crash without checkpoint."""
        self._stop_process(STOP_SIGNALS[mode])

    def close(self) -> None:
        self._stop_process(signal.SIGINT)
        shutil.rmtree(self.base, ignore_errors=True)

    def _run(self, argv: list[str]) -> subprocess.CompletedProcess[bytes]:
        uid, gid, groups = self._ids()
        return subprocess.run(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False,
            cwd=self.base, env=self._env(), user=uid, group=gid, extra_groups=groups,
        )  # fmt: skip

    def _spawn(self) -> subprocess.Popen[bytes]:
        argv = [str(self.bindir / "postgres"), "-D", str(self.data_dir), "-p", str(self.port)]
        settings = {**SETTINGS, "unix_socket_directories": str(self.base)}
        argv += [arg for name, value in settings.items() for arg in ("-c", f"{name}={value}")]
        uid, gid, groups = self._ids()
        with self.log_path.open("ab") as log:
            return subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                process_group=0,  # a Ctrl-C reaches pytest, which stops the server itself
                preexec_fn=_die_with_starting_thread if sys.platform == "linux" else None,
                cwd=self.base, env=self._env(), user=uid, group=gid, extra_groups=groups,
            )  # fmt: skip

    def _ids(self) -> tuple[int | None, int | None, list[int] | None]:
        """User, group and supplementary groups to run as: the account's, or ours unchanged."""
        if self.account is None:
            return None, None, None
        return self.account.pw_uid, self.account.pw_gid, []

    @staticmethod
    def _env() -> dict[str, str]:
        # Nothing from the caller's environment (PGDATA, PGPORT, a locale that may not exist).
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "TZ": "UTC"}

    def _wait_until_ready(self) -> bool:
        # The postmaster writes "ready" as the 8th line of postmaster.pid once it accepts
        # connections, as pg_ctl checks; the pid guards against a file left by a killed server.
        deadline = time.monotonic() + self.start_timeout
        assert self._process is not None
        while self._process.poll() is None and time.monotonic() < deadline:
            try:
                lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
            except FileNotFoundError:
                lines = []
            ours = lines[:1] == [str(self._process.pid)]
            if ours and len(lines) >= 8 and lines[7].strip() == "ready":
                return True
            time.sleep(0.01)
        return False

    def _stop_process(self, signum: signal.Signals) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signum)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def _read_log(self, offset: int) -> str:
        with self.log_path.open("rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")


if __name__ == "__main__":
    found = find_bindir()
    if found is None:
        sys.exit("PostgreSQL's initdb and postgres were found neither on PATH nor in "
                 f"{DEBIAN_ROOT}/*/bin")  # fmt: skip
    print(found)
