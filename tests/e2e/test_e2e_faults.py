"""`pulumi up` SIGKILLed in the middle of a migration, with the real CLI: all or nothing, then the documented
recovery (`pulumi cancel`, `pulumi refresh --clear-pending-creates`, `pulumi up`) completes."""
import json
import os
import signal
import subprocess
import sys

import pytest

from tests.helpers import stacks as h
from tests.helpers.faults import SLOW, backend_gone, make_slow, sleeping_backend

pytestmark = pytest.mark.e2e

PROGRAM = """
import pulumi
from llmemory_db import Migrations, MigrationsArgs
m = Migrations("m", MigrationsArgs(migrations_dir="migrations"))
pulumi.export("applied", m.applied)
"""
FAST = {"001_a.sql": "CREATE TABLE a (id int);\n"}
SLOW_FILE = {"002_b.sql": "CREATE TABLE b (id int);\nINSERT INTO b VALUES (1);\n" + SLOW}


@pytest.fixture
def project(pg_server, bare_db, tmp_path):
    name = bare_db.name
    proj = h.write_project(tmp_path / "proj", PROGRAM, {})
    backend = tmp_path / "backend"
    h.stack(proj, backend, pg_server, name)
    env = dict(os.environ, **h.pulumi_env(backend))
    sessions = []

    class Project:
        root = proj
        dsn = pg_server.dsn(database=name)

        def files(self, files):
            for filename, text in files.items():
                (proj / "migrations" / filename).write_text(text)

        def start(self, *args):
            confirm = [] if args[0] == "preview" else ["--yes"]
            proc = subprocess.Popen(["pulumi", *args, *confirm, "-s", "test"], cwd=proj, env=env, text=True,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
            sessions.append(proc.pid)
            return proc

        def run(self, *args):
            proc = self.start(*args)
            out = proc.communicate(timeout=300)[0]
            return proc.returncode, out

        def pending_operations(self):
            exported = subprocess.run(["pulumi", "stack", "export", "-s", "test"], cwd=proj, env=env,
                                      capture_output=True, text=True, check=True).stdout
            return [op["type"] for op in json.loads(exported)["deployment"].get("pending_operations") or []]

        def recorded(self):
            return [row[0] for row in bare_db.history()]

        def table_exists(self, table):
            return bare_db.sql("SELECT to_regclass(%s) IS NOT NULL", table)[0][0]

    (proj / "migrations").mkdir(exist_ok=True)
    yield Project()
    # the CLI's own language host outlives a SIGKILLed CLI (Pulumi's behaviour): clean up after the test
    for sid in sessions:
        subprocess.run(["pkill", "-9", "-s", str(sid)], capture_output=True)


def kill_cli_mid_migration(project):
    """SIGKILL the pulumi CLI (only the CLI: its plugins live in process groups of their own) while the slow
    migration runs; returns seconds until the server rolled it back."""
    make_slow(project.dsn, 60)
    proc = project.start("up", "--skip-preview")
    pid = sleeping_backend(project.dsn, proc=proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    # the provider notices the engine is gone and exits; the server notices the closed connection and rolls back
    gone = backend_gone(project.dsn, pid, timeout=20)
    make_slow(project.dsn, 0)
    return gone


def test_sigkill_of_pulumi_up_mid_update_then_documented_recovery(project):
    project.files(FAST)
    assert project.run("up", "--skip-preview")[0] == 0
    project.files(SLOW_FILE)
    gone = kill_cli_mid_migration(project)
    print(f"pulumi up SIGKILLed: the server rolled back after {gone:.1f}s")
    assert gone < 10
    assert project.recorded() == ["001_a.sql"] and not project.table_exists("b")  # none of 002
    assert project.pending_operations() == ["updating"]

    code, out = project.run("up", "--skip-preview")
    assert code != 0 and "the stack is currently locked" in out  # the dead CLI's lock
    assert project.run("cancel")[0] == 0
    code, out = project.run("up", "--skip-preview")
    assert code == 0, out
    assert "interrupted while updating" in out and "applied 002_b.sql" in out
    assert project.recorded() == ["001_a.sql", "002_b.sql"]
    assert project.pending_operations() == []


def test_sigkill_of_the_first_pulumi_up_mid_create_then_documented_recovery(project):
    project.files({**FAST, **SLOW_FILE})
    kill_cli_mid_migration(project)
    assert project.recorded() == ["001_a.sql"] and not project.table_exists("b")
    assert project.pending_operations() == ["creating"]

    assert project.run("cancel")[0] == 0
    code, out = project.run("refresh", "--clear-pending-creates", "--skip-preview")
    assert code == 0, out
    assert project.pending_operations() == []
    code, out = project.run("up", "--skip-preview")
    assert code == 0, out
    assert "pending operations" not in out and "applied 002_b.sql" in out
    assert project.recorded() == ["001_a.sql", "002_b.sql"]


def test_interrupted_no_transaction_migration_stops_pulumi_up_until_resolved(project):
    project.files(FAST)
    assert project.run("up", "--skip-preview")[0] == 0
    project.files({"002_idx.sql": "-- pgdbm:no-transaction\nCREATE TABLE IF NOT EXISTS big (id int);\n" + SLOW
                                  + "CREATE INDEX CONCURRENTLY IF NOT EXISTS big_id ON big (id);\n"})
    kill_cli_mid_migration(project)
    assert project.run("cancel")[0] == 0
    code, out = project.run("up", "--skip-preview")
    assert code != 0
    assert "Interrupted migration(s) of module 'aword_memory'" in out
    assert "002_idx.sql (no-transaction)" in out and "1 of 3 statement(s) completed" in out
    assert project.recorded() == ["001_a.sql"]
    # a refresh shows it too, as a change to the migrations resource
    code, out = project.run("preview", "--refresh")
    assert "interrupted:" in out and "002_idx.sql (no-transaction)" in out

    resolved = subprocess.run([sys.executable, "-m", "llmemory_db.migrate", "resolve", "002_idx.sql", "--retry",
                               "--dsn", project.dsn, "--dir", str(project.root / "migrations")],
                              capture_output=True, text=True, cwd=h.ROOT)
    assert resolved.returncode == 0, resolved.stderr
    code, out = project.run("up", "--skip-preview")
    assert code == 0, out
    assert project.recorded() == ["001_a.sql", "002_idx.sql"]
