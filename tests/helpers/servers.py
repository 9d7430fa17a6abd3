"""Three embedded PostgreSQL servers on this machine (each its data folder in .state/ and a port of its own), for
fleets that span servers; a test may stop one and must leave it running (``ensure_running``)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, List

import pytest

from tests.helpers import ROOT
from tests.helpers import db as dbs
from tools.pgserver import Server

FOLDERS = [Path(os.environ.get("LLMEMORY_FLEET_PG_DIR", ROOT / ".state")) / f"pg-fleet-{n}" for n in "abc"]


def ensure_running(servers: List[Server]) -> None:
    for server in servers:
        if not (server.running_pid() and server.ready()):
            server.start()


@pytest.fixture(scope="session")
def three_servers() -> Iterator[List[Server]]:
    """Started for the session's fleet tests, stopped after them (unlike the main test server, which the next run
    reuses: these serve a few tests only)."""
    servers = [Server(folder.resolve()).start() for folder in FOLDERS]
    yield servers
    for server in servers:
        server.stop()


@pytest.fixture
def three_dbs(three_servers):
    """A fresh database on each of the three servers (tests.helpers.db.Database); every server running again and
    the databases dropped afterwards."""
    databases = [dbs.create(server, prefix="fleet") for server in three_servers]
    yield databases
    ensure_running(three_servers)
    for database in databases:
        database.drop()
