"""Shared fixtures: the embedded PostgreSQL (its own data folder for tests) and a fresh database per test."""
from __future__ import annotations

import asyncio
import os
from pathlib import Path

import psycopg
import pytest

from tests.helpers import ROOT
from tests.helpers import db as dbs
from tools.pgbouncer import Bouncer
from tools.pgserver import Server

TEST_PG_DIR = Path(os.environ.get("LLMEMORY_TEST_PG_DIR", ROOT / ".state" / "pg-test"))


@pytest.fixture(autouse=True)
def event_loop_for_pulumi():
    """Pulumi's Python SDK uses the current event loop; a test that ran asyncio.run() (pgdbm) leaves none."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield
    loop.close()


@pytest.fixture(scope="session")
def pg_server() -> Server:
    return Server(TEST_PG_DIR.resolve()).start()


@pytest.fixture(scope="session")
def bouncer(pg_server: Server) -> Bouncer:
    """PgBouncer in transaction-pooling mode in front of the test server."""
    pooler = Bouncer(TEST_PG_DIR.resolve().parent / "pgbouncer-test", pg_server).start()
    yield pooler
    pooler.stop()


@pytest.fixture
def db(pg_server: Server):
    """A fresh database with pgvector (a tests.db.Database: .dsn, .sql(), .history(), .tables()); dropped after."""
    database = dbs.create(pg_server, extensions=("vector",))
    yield database
    database.drop()


@pytest.fixture
def bare_db(pg_server: Server):
    """A fresh database without any extension (what a stack starts from); dropped afterwards."""
    database = dbs.create(pg_server, prefix="e2e")
    yield database
    database.drop()


@pytest.fixture
def database(db):
    """The conninfo string of a fresh database with pgvector."""
    return db.dsn


@pytest.fixture
def conn(database):
    with psycopg.connect(database, autocommit=True) as connection:
        yield connection
