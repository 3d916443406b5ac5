"""The throwaway PostgreSQL server the backend tests run against: found, started, isolated per
test, never root, and durable across a crash of the server."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import psutil
import pytest

from tests.pg_server import PostgresServer, find_bindir

seen_databases: set[str] = set()


async def test_the_server_answers_on_the_tests_own_database(postgres_dsn: str) -> None:
    connection = await asyncpg.connect(postgres_dsn)
    try:
        version = await connection.fetchval("SELECT version()")
        database = await connection.fetchval("SELECT current_database()")
    finally:
        await connection.close()
    assert version.startswith("PostgreSQL ")
    assert database == urlsplit(postgres_dsn).path.lstrip("/")
    assert database.startswith("t_")


@pytest.mark.parametrize("turn", ["first", "second"])
async def test_each_test_gets_a_database_of_its_own_and_empty(postgres_dsn: str, turn: str) -> None:
    connection = await asyncpg.connect(postgres_dsn)
    try:
        tables = await connection.fetchval(
            "SELECT count(*) FROM pg_tables"
            " WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
        )
        await connection.execute("CREATE TABLE marker (turn text)")  # would clash if shared
        database = await connection.fetchval("SELECT current_database()")
    finally:
        await connection.close()
    assert tables == 0
    assert database not in seen_databases
    seen_databases.add(database)


def test_a_sync_test_gets_a_loopback_dsn_too(
    postgres_dsn: str, postgres_server: PostgresServer
) -> None:
    url = urlsplit(postgres_dsn)
    assert (url.scheme, url.username, url.hostname) == ("postgresql", "postgres", "127.0.0.1")
    assert url.port == postgres_server.port


async def test_a_dropped_database_is_gone(postgres_server: PostgresServer) -> None:
    name = await postgres_server.create_database()
    await postgres_server.drop_database(name)
    connection = await asyncpg.connect(postgres_server.dsn())
    try:
        left = await connection.fetchval("SELECT count(*) FROM pg_database WHERE datname=$1", name)
    finally:
        await connection.close()
    assert left == 0


def test_the_server_never_runs_as_root(postgres_server: PostgresServer) -> None:
    assert postgres_server.pid is not None
    owner = psutil.Process(postgres_server.pid).uids().real
    account = postgres_server.account
    assert owner == (account.pw_uid if account is not None else os.geteuid())
    assert owner != 0


async def test_committed_rows_survive_an_immediate_stop_and_restart(
    private_postgres_server: PostgresServer,
) -> None:
    server = private_postgres_server
    dsn, data_dir = server.dsn(), server.data_dir
    connection = await asyncpg.connect(dsn)
    await connection.execute("CREATE TABLE accepted (id int PRIMARY KEY)")
    await connection.execute("INSERT INTO accepted SELECT generate_series(1, 100)")
    await connection.close()
    server.stop("immediate")
    with pytest.raises(ConnectionRefusedError):
        await asyncpg.connect(dsn)

    server.start()
    assert (server.dsn(), server.data_dir) == (dsn, data_dir)
    connection = await asyncpg.connect(dsn)
    try:
        count = await connection.fetchval("SELECT count(*) FROM accepted")
    finally:
        await connection.close()
    assert count == 100
    assert "database system was interrupted" in server.log_path.read_text()


def make_bindir(directory: Path) -> Path:
    directory.mkdir(parents=True)
    for name in ("initdb", "postgres"):
        (directory / name).write_text("#!/bin/sh\n")
        (directory / name).chmod(0o755)
    return directory


def test_binaries_on_path_win_over_debians(tmp_path: Path) -> None:
    on_path = make_bindir(tmp_path / "opt" / "bin")
    make_bindir(tmp_path / "debian" / "15" / "bin")
    assert find_bindir(path=str(on_path), debian_root=tmp_path / "debian") == on_path


def test_debians_highest_version_is_found_when_path_has_none(tmp_path: Path) -> None:
    debian = tmp_path / "debian"
    for version in ("9.6", "15", "13"):
        make_bindir(debian / version / "bin")
    (debian / "16" / "bin").mkdir(parents=True)  # a client-only install: no server binaries
    assert find_bindir(path=str(tmp_path / "empty"), debian_root=debian) == debian / "15" / "bin"
    assert find_bindir(path="", debian_root=tmp_path / "none") is None
