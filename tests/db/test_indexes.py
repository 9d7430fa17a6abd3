"""Concurrent index builds that survive (issue 20), against the real server and the real command line:

- a build SIGKILLed half-way is finished by the next run, or after `resolve --retry`: one valid index, one row;
- a UNIQUE build over duplicate rows fails naming the key, and leaves nothing INVALID and nothing recorded;
- `status` and `drift` report an INVALID index made by hand, with the SQL that rebuilds it;
- engine appliers and a pgdbm that start while a build runs: no deadlock, every file recorded once;
- progress lines while a build runs; REINDEX CONCURRENTLY's leftovers cleaned up; lock waits that name the holder.
"""
import asyncio
import json
import os
import subprocess
import sys
import threading
import time

import psycopg
import pytest

from llmemory_db import migrate
from llmemory_db.migrate import Settings, errors, index_builds, indexes, progress
from tests.helpers import ROOT, write
from tests.helpers import db as dbs
from tests.helpers.faults import backend_gone, cli, cli_run, kill_group, wait_for_build


INIT = {"001_init.sql": "CREATE TABLE IF NOT EXISTS app (id serial PRIMARY KEY, v int);\n"}
CIC = {"002_cic.sql": "-- pgdbm:no-transaction\nCREATE INDEX CONCURRENTLY IF NOT EXISTS idx_big_t ON big (t);\n"}
ROWS = 1_000_000  # about 2 s to build on the test machine: long enough to be killed half-way


def fill(db, rows=ROWS, distinct=None):
    """A table ``big`` of ``rows`` rows (``distinct``: that many different keys, i.e. duplicates)."""
    key = f"g % {distinct}" if distinct else "g"
    db.sql("CREATE TABLE IF NOT EXISTS big (id int, t text)")
    db.sql(f"INSERT INTO big SELECT g, md5(({key})::text) FROM generate_series(1, {rows}) g")
    db.sql("VACUUM ANALYZE big")


def index_states(db, table="big"):
    return db.sql("SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                  "WHERE i.indrelid = %s::regclass ORDER BY 1", table)


def inflight(db):
    if not db.sql("SELECT to_regclass('public.schema_migrations_inflight') IS NOT NULL")[0][0]:
        return []
    return db.sql("SELECT filename FROM public.schema_migrations_inflight")


async def pgdbm_apply(dsn, path, lock_timeout_ms=None):
    """pgdbm 0.5 at an application's start-up. Its default lock_timeout (5 s) ends its wait for the migration lock
    on its own; the tests that assert what happens at the end of a build let it wait (None), as a longer setting
    would."""
    from pgdbm import AsyncDatabaseManager, AsyncMigrationManager, DatabaseConfig
    db = AsyncDatabaseManager(DatabaseConfig(connection_string=dbs.url(dsn), min_connections=1, max_connections=2,
                                             lock_timeout_ms=lock_timeout_ms))
    await db.connect()
    try:
        return await AsyncMigrationManager(db, migrations_path=str(path), module_name="aword_memory") \
            .apply_pending_migrations()
    finally:
        await db.disconnect()


class Writer:
    """The application: an insert every 10 ms (transaction ids move on, so a build's last phase waits for the
    snapshots taken before it)."""

    def __init__(self, db):
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(db,), daemon=True)
        self.thread.start()

    def _run(self, db):
        with db.connect() as conn:
            while not self.stop.is_set():
                conn.execute("INSERT INTO app (v) VALUES (1)")
                time.sleep(0.01)

    def close(self):
        self.stop.set()
        self.thread.join()


class Pgdbm(threading.Thread):
    def __init__(self, dsn, path, lock_timeout_ms=None):
        super().__init__(daemon=True)
        self.args_, self.result, self.error = (dsn, path, lock_timeout_ms), None, None
        self.start()

    def run(self):
        try:
            self.result = asyncio.run(pgdbm_apply(*self.args_))
        except Exception as exc:  # noqa: BLE001 - asserted by the tests
            self.error = exc


def waiting_for_lock(dsn, timeout=30.0):
    """Wait until a session waits for the module's advisory lock (pgdbm's start-up); returns its pid."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(dsn, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND NOT granted").fetchone()
            if row:
                return row[0]
            time.sleep(0.02)
    raise AssertionError("nobody waits for the migration lock")


def killed_mid_build(db, migrations):
    """Apply 001 then the CIC file with the CLI, SIGKILLed before the index is valid, whatever the machine's speed:
    a transaction holding an older snapshot keeps the build in its last phase until the applier is killed."""
    assert cli_run("apply", "--dir", str(write(migrations, INIT)), dsn=db.dsn).returncode == 0
    write(migrations, CIC)
    with db.connect() as snapshot:
        snapshot.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        snapshot.execute("SELECT count(*) FROM app")
        proc = cli("apply", "--dir", str(migrations), dsn=db.dsn)
        pid = wait_for_build(db.dsn, proc, phase="waiting for old snapshots")
        kill_group(proc)
        backend_gone(db.dsn, pid)  # the server ended the build (it noticed the client gone within 1 s)
        snapshot.execute("ROLLBACK")
    return pid


# --------------------------------------------------------------------------- SIGKILL, both recovery paths
def test_sigkill_mid_build_then_the_plain_next_run_resumes_it(db, tmp_path):
    fill(db)
    killed_mid_build(db, tmp_path / "m")
    assert [r[0] for r in db.history()] == ["001_init.sql"]
    # the next run starts right away: the killed run's backend may still be alive for a second (it is waited for)
    result = cli_run("apply", "--dir", str(tmp_path / "m"), dsn=db.dsn)
    assert result.returncode == 0, result.stderr
    print(result.stderr)
    assert "index-resume: 002_cic.sql:2: resuming the run that was interrupted" in result.stderr
    assert "statement 1 of 1, a concurrent index statement (CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_big_t" \
        in result.stderr
    # the killed build left an INVALID index (IF NOT EXISTS would have accepted it): dropped, said, rebuilt
    assert "index-cleanup: 002_cic.sql:2: dropped the INVALID index public.idx_big_t on public.big" in result.stderr
    assert index_states(db) == [("idx_big_t", True)]
    assert [r[0] for r in db.history()] == ["001_init.sql", "002_cic.sql"]
    assert inflight(db) == []


def test_sigkill_mid_build_then_resolve_retry(db, tmp_path):
    fill(db)
    backend_gone(db.dsn, killed_mid_build(db, tmp_path / "m"))  # the server ended the build (1 s)
    status = cli_run("status", "--dir", str(tmp_path / "m"), dsn=db.dsn)
    assert status.returncode == 1 and "002_cic.sql (no-transaction)" in status.stderr
    assert "index public.idx_big_t on public.big: INVALID" in status.stdout  # what the killed build left
    resolved = cli_run("resolve", "002_cic.sql", "--retry", "--dir", str(tmp_path / "m"), dsn=db.dsn)
    assert resolved.returncode == 0, resolved.stderr
    result = cli_run("apply", "--dir", str(tmp_path / "m"), dsn=db.dsn)
    assert result.returncode == 0, result.stderr
    assert "index-cleanup: 002_cic.sql:2: dropped the INVALID index public.idx_big_t" in result.stderr
    assert "index-resume" not in result.stderr  # resolved: a fresh run of the file
    assert index_states(db) == [("idx_big_t", True)]
    assert [r[0] for r in db.history()] == ["001_init.sql", "002_cic.sql"]
    assert inflight(db) == []


def test_a_failed_run_is_not_resumed_by_itself(conn, db, tmp_path):
    """A recorded failure (not a death) waits for a decision: its cause is still there."""
    fill(db, rows=2000, distinct=1000)
    files = {**INIT, "002_two.sql": "-- pgdbm:no-transaction\nCREATE TABLE IF NOT EXISTS t2 (id int);\n"
                                    "CREATE UNIQUE INDEX CONCURRENTLY idx_u ON big (t);\n"}
    target = Settings(write(tmp_path, files))
    with pytest.raises(errors.IndexBuildError) as info:
        migrate.apply(conn, target)
    text = str(info.value)
    assert "the statements of 002_two.sql before line 3 stayed committed" in text and "resolve 002_two.sql" in text
    with pytest.raises(migrate.InterruptedMigrationError, match="failed: line 3"):
        migrate.apply(conn, target)
    assert index_states(db) == []


# --------------------------------------------------------------------------- a failing UNIQUE build
def test_unique_build_over_duplicates_fails_names_the_key_and_leaves_nothing(db, tmp_path):
    fill(db, rows=200_000, distinct=150_000)
    migrations = write(tmp_path, {**INIT, "002_unique.sql": "-- pgdbm:no-transaction\n"
                                  "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS idx_big_t_u ON big (t);\n"})
    result = cli_run("apply", "--dir", str(migrations), dsn=db.dsn)
    assert result.returncode == 2
    err = result.stderr
    assert "Migration 002_unique.sql failed at line 2: could not create unique index \"idx_big_t_u\" " \
           "(SQLSTATE 23505)" in err
    assert "detail: Key (t)=(" in err and ") is duplicated." in err  # the duplicated key, from the server
    assert "index public.idx_big_t_u on public.big: the build left it INVALID; it was dropped" in err
    assert "Remedy: the table holds rows with the same key" in err
    assert "SELECT t, count(*) FROM public.big GROUP BY t HAVING count(*) > 1" in err
    assert index_states(db) == []                           # nothing INVALID left
    assert [r[0] for r in db.history()] == ["001_init.sql"]  # nothing recorded
    assert inflight(db) == []                                # and no trace: the next run runs it
    # once the duplicates are gone, the next run builds it
    db.sql("DELETE FROM big WHERE id > 150000")
    result = cli_run("apply", "--dir", str(migrations), dsn=db.dsn)
    assert result.returncode == 0, result.stderr
    assert index_states(db) == [("idx_big_t_u", True)]


# --------------------------------------------------------------------------- status and drift
def test_status_and_drift_report_an_invalid_index_made_by_hand(db, tmp_path):
    migrations = write(tmp_path, {"001_big.sql": "CREATE TABLE IF NOT EXISTS big (id int, t text);\n"})
    assert cli_run("apply", "--dir", str(migrations), dsn=db.dsn).returncode == 0
    fill(db, rows=20_000, distinct=10_000)
    assert cli_run("status", "--dir", str(migrations), dsn=db.dsn).returncode == 0
    with db.connect() as conn, pytest.raises(psycopg.errors.UniqueViolation):
        conn.execute("CREATE UNIQUE INDEX CONCURRENTLY by_hand ON big (t)")  # by hand, fails: INVALID
    assert index_states(db) == [("by_hand", False)]
    rebuild = ('DROP INDEX CONCURRENTLY IF EXISTS "public"."by_hand"; '
               "CREATE UNIQUE INDEX CONCURRENTLY by_hand ON public.big USING btree (t);")
    status = cli_run("status", "--dir", str(migrations), dsn=db.dsn)
    assert status.returncode == 1
    assert f"index public.by_hand on public.big: INVALID (never used by the planner, enforces nothing); " \
           f"rebuild: {rebuild}" in status.stdout
    as_json = json.loads(cli_run("status", "--dir", str(migrations), "--json", dsn=db.dsn).stdout)
    assert as_json["invalid_indexes"] == [{"index": "public.by_hand", "table": "public.big", "leftover": False,
                                           "definition": "CREATE UNIQUE INDEX by_hand ON public.big USING btree (t)",
                                           "building": "", "rebuild": rebuild}]
    drift = cli_run("drift", "--dir", str(migrations), dsn=db.dsn)
    assert drift.returncode == 1, drift.stderr
    assert "schema drift in public" in drift.stdout and "index public.by_hand on public.big: INVALID" in drift.stdout
    db.sql("DROP INDEX by_hand")
    assert cli_run("drift", "--dir", str(migrations), dsn=db.dsn).returncode == 0


def test_an_index_being_built_is_reported_as_such_not_as_drift(db, conn):
    fill(db)
    done = threading.Event()

    def build():
        with db.connect() as other:
            other.execute("CREATE INDEX CONCURRENTLY building_now ON big (t)")
        done.set()

    thread = threading.Thread(target=build)
    thread.start()
    wait_for_build(db.dsn)
    found = indexes.invalid_indexes(conn, ["public"])
    thread.join()
    assert done.is_set()
    assert [(i.name, i.building.startswith("pid ")) for i in found] == [("building_now", True)]
    assert "being built now by pid" in found[0].describe()


# --------------------------------------------------------------------------- REINDEX CONCURRENTLY
def test_reindex_concurrently_leftovers_are_dropped_before_and_the_result_checked(db, conn, tmp_path):
    fill(db, rows=300_000)
    db.sql("CREATE INDEX idx_big_t ON big (t)")
    with db.connect() as other:  # a REINDEX CONCURRENTLY cancelled half-way leaves idx_big_t_ccnew INVALID
        other.execute("SET statement_timeout = '150ms'")
        with pytest.raises(psycopg.errors.QueryCanceled):
            other.execute("REINDEX INDEX CONCURRENTLY idx_big_t")
    assert index_states(db) == [("idx_big_t", True), ("idx_big_t_ccnew", False)]
    events = []
    target = Settings(write(tmp_path, {**INIT, "002_reindex.sql": "-- pgdbm:no-transaction\n"
                                       "REINDEX INDEX CONCURRENTLY idx_big_t;\n"}))
    migrate.apply(conn, Settings(write(tmp_path / "init", INIT)))
    assert migrate.apply(conn, target, on_event=events.append).applied == ["002_reindex.sql"]
    cleanup = [e for e in events if getattr(e, "kind", "") == "index-cleanup"]
    assert len(cleanup) == 1 and "dropped the INVALID index public.idx_big_t_ccnew on public.big" in cleanup[0].text
    assert cleanup[0].file == "002_reindex.sql" and cleanup[0].line == 2
    assert index_states(db) == [("idx_big_t", True)]


def test_build_outside_a_file_cleans_up_and_checks_the_same_way(db, conn):
    """What a resource that builds an index (issue 22's embedding provider) calls."""
    fill(db, rows=20_000, distinct=10_000)
    with pytest.raises(psycopg.errors.UniqueViolation):
        conn.execute("CREATE UNIQUE INDEX CONCURRENTLY idx_t ON big (t)")
    events = []
    with pytest.raises(errors.IndexBuildError, match=r"(?s)provider p1 failed at line 1.*detail: Key \(t\)"):
        index_builds.build(conn, Settings(), "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS idx_t ON big (t)",
                      "provider p1", events.append)
    assert [e.kind for e in events] == ["index-cleanup"] and index_states(db) == []
    index_builds.build(conn, Settings(), "CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_t ON big (t)", "provider p1")
    assert index_states(db) == [("idx_t", True)]


def test_a_concurrent_statement_in_a_transactional_file_is_a_lint_error(tmp_path):
    target = Settings(write(tmp_path, {"001_x.sql": "CREATE TABLE x (id int);\n"
                                                    "CREATE INDEX CONCURRENTLY x_id ON x (id);\n"}))
    with pytest.raises(migrate.LintError) as info:
        migrate.lint_pending(migrate.load(target.migrations_dir), target)
    assert "001_x.sql:2:1: error: a CONCURRENTLY statement cannot run inside a transaction block" in str(info.value)
    assert "'-- pgdbm:no-transaction'" in str(info.value)


# --------------------------------------------------------------------------- progress
def test_progress_lines_while_an_index_is_built(db, tmp_path):
    fill(db)
    migrations = write(tmp_path, {**INIT, **CIC, "003_wait.sql": "SELECT pg_sleep(1.2);\n"})
    env = dict(os.environ, **{progress.ENV_INTERVAL: "0.3"})
    result = subprocess.run([sys.executable, "-m", "llmemory_db.migrate", "apply", "--dir", str(migrations),
                             "--dsn", db.dsn], cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("progress: ")]
    print("\n".join(lines))
    build = [line for line in lines if line.startswith("progress: 002_cic.sql:2 CREATE INDEX CONCURRENTLY IF NOT "
                                                       "EXISTS idx_big_t ON big (t): phase: ")]
    assert len(build) >= 2, result.stderr
    assert any(("blocks " in line or "tuples " in line) and "%" in line for line in build), build
    assert any(line.startswith("progress: 003_wait.sql (in one transaction): running for ") for line in lines)


def test_progress_lines_are_at_most_every_interval(conn, db, tmp_path):
    events = []
    target = Settings(write(tmp_path, {"001_wait.sql": "SELECT pg_sleep(1.3);\n"}))
    os.environ[progress.ENV_INTERVAL] = "0.5"
    try:
        migrate.apply(conn, target, on_event=events.append)
    finally:
        del os.environ[progress.ENV_INTERVAL]
    ticks = [e for e in events if getattr(e, "kind", "") == "progress"]
    assert 1 <= len(ticks) <= 3, ticks  # at 0.5, 1.0 s (and maybe 1.3): never more often than the interval
    assert ticks[0].file == "001_wait.sql" and ticks[0].data["elapsed_s"] >= 0.4
    assert "waiting (Timeout: PgSleep)" in ticks[0].text


# --------------------------------------------------------------------------- appliers during a build
def test_engine_appliers_and_pgdbm_started_during_a_build_never_deadlock(db, tmp_path):
    fill(db)
    migrations = write(tmp_path, INIT)
    assert cli_run("apply", "--dir", str(migrations), dsn=db.dsn).returncode == 0
    write(migrations, {**CIC, "003_after.sql": "CREATE TABLE IF NOT EXISTS after_cic (id int);\n"})
    app = Writer(db)
    first = cli("apply", "--dir", str(migrations), dsn=db.dsn)
    wait_for_build(db.dsn, first)
    started = time.monotonic()
    others = [cli("apply", "--dir", str(migrations), dsn=db.dsn) for _ in range(3)]
    pgdbm = Pgdbm(db.dsn, migrations)
    results = [(p, *p.communicate(timeout=120)) for p in [first, *others]]
    pgdbm.join(120)
    app.close()
    print(f"all done in {time.monotonic() - started:.1f}s")
    for proc, out, err in results:
        assert proc.returncode == 0, err
    first_err = results[0][2]
    print(first_err)
    # pgdbm waited for the module's lock during the build, and the build's last phase then waited for pgdbm's
    # snapshot: the lock was handed over (the file recorded, then the lock released) instead of a deadlock
    assert pgdbm.error is None, pgdbm.error
    assert "lock-handoff: 002_cic.sql:2: the index is built and validated and waits for the transactions older " \
           "than it, and pid " in first_err
    assert pgdbm.result["status"] in ("success", "up_to_date")
    assert "002_cic.sql" not in [a["filename"] for a in pgdbm.result["applied"]]  # never run by pgdbm
    rows = db.sql("SELECT filename, count(*) FROM schema_migrations GROUP BY 1 ORDER BY 1")
    assert rows == [("001_init.sql", 1), ("002_cic.sql", 1), ("003_after.sql", 1)]
    assert index_states(db) == [("idx_big_t", True)]
    assert inflight(db) == []


def test_with_more_statements_after_the_build_a_waiting_pgdbm_is_cancelled_not_deadlocked(db, tmp_path):
    fill(db)
    migrations = write(tmp_path, INIT)
    assert cli_run("apply", "--dir", str(migrations), dsn=db.dsn).returncode == 0
    write(migrations, {"002_two.sql": "-- pgdbm:no-transaction\n"
                                      "CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_big_t ON big (t);\n"
                                      "CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_big_id ON big (id);\n"})
    app = Writer(db)
    proc = cli("apply", "--dir", str(migrations), dsn=db.dsn)
    wait_for_build(db.dsn, proc)
    pgdbm = Pgdbm(db.dsn, migrations)
    out, err = proc.communicate(timeout=120)
    pgdbm.join(120)
    app.close()
    assert proc.returncode == 0, err
    assert "lock-cancel: 002_two.sql:2: the index build waits for pid" in err
    assert "canceling statement due to user request" in str(pgdbm.error)  # its start-up fails, and can retry
    assert [r[0] for r in db.history()] == ["001_init.sql", "002_two.sql"]
    assert index_states(db) == [("idx_big_id", True), ("idx_big_t", True)]


def test_killed_after_handing_the_lock_over_the_next_run_finishes_the_index(db, tmp_path):
    """The hand-off records the file while the build waits for old snapshots: if the applier dies in that wait,
    the history says applied and the index is INVALID, and the in-flight record says so: the next run rebuilds
    it (without a second row)."""
    fill(db)
    migrations = write(tmp_path, INIT)
    assert cli_run("apply", "--dir", str(migrations), dsn=db.dsn).returncode == 0
    write(migrations, CIC)
    app = Writer(db)
    report = db.connect(application_name="long-report")  # an old snapshot the build's last phase also waits for
    report.autocommit = False
    report.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    report.execute("SELECT count(*) FROM app")
    proc = cli("apply", "--dir", str(migrations), dsn=db.dsn)
    wait_for_build(db.dsn, proc)
    pgdbm = Pgdbm(db.dsn, migrations)
    waiting_for_lock(db.dsn)
    for line in proc.stderr:  # the CLI prints events as they happen
        if line.startswith("lock-handoff: 002_cic.sql:2"):
            break
    pgdbm.join(30)
    assert pgdbm.error is None and pgdbm.result["status"] == "up_to_date"  # it went on: the file is recorded
    wait_for_build(db.dsn, phase="waiting for old snapshots")  # still waiting for the report
    kill_group(proc)
    assert [r[0] for r in db.history()] == ["001_init.sql", "002_cic.sql"]
    time.sleep(1.5)  # the server notices the dead client (client_connection_check_interval) and ends the build
    report.close()
    app.close()
    assert index_states(db) == [("idx_big_t", False)] and inflight(db) == [("002_cic.sql",)]
    status = cli_run("status", "--dir", str(migrations), dsn=db.dsn)
    assert status.returncode == 1 and "index public.idx_big_t on public.big: INVALID" in status.stdout
    result = cli_run("apply", "--dir", str(migrations), dsn=db.dsn)
    assert result.returncode == 0, result.stderr
    assert "index-resume: 002_cic.sql:2: resuming the run that was interrupted" in result.stderr
    assert index_states(db) == [("idx_big_t", True)] and inflight(db) == []
    assert db.sql("SELECT filename, count(*) FROM schema_migrations GROUP BY 1 ORDER BY 1") == \
        [("001_init.sql", 1), ("002_cic.sql", 1)]


def test_a_lock_wait_timeout_names_the_holders_statement(db, conn, tmp_path):
    migrate.apply(conn, Settings(write(tmp_path / "init", INIT)))
    holder = db.connect(application_name="other-applier")
    holder.execute("SELECT pg_advisory_lock(hashtext('pgdbm_migration_' || 'aword_memory'))")
    holder.execute("SELECT 'the holder is busy' AS doing")
    try:
        started = time.monotonic()
        with pytest.raises(migrate.LockTimeoutError) as info:
            migrate.apply(conn, Settings(write(tmp_path, {**INIT, "002_x.sql": "SELECT 1;\n"}),
                                         lock_wait_timeout=0.6))
        assert 0.5 < time.monotonic() - started < 3
        text = str(info.value)
        assert f"pid {holder.info.backend_pid}" in text and "application other-applier" in text
        assert "statement: \"SELECT 'the holder is busy' AS doing\"" in text
    finally:
        holder.close()


# --------------------------------------------------------------------------- pure parts
@pytest.mark.parametrize("text, expected", [
    ("CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS i ON s.t (a, b)",
     indexes.IndexOp("create", "t", "s", "i", True, True, ("a", "b"))),
    ("create index concurrently on t (lower(a))", indexes.IndexOp("create", "t", None, None, False, False, ())),
    ("REINDEX (VERBOSE, CONCURRENTLY) INDEX s.i", indexes.IndexOp("reindex-index", "i", "s")),
    ("REINDEX TABLE CONCURRENTLY t", indexes.IndexOp("reindex-table", "t")),
    ("REINDEX (CONCURRENTLY false) INDEX i", None),
    ("REINDEX INDEX i", None),
    ("CREATE INDEX i ON t (a)", None),
    ("REINDEX SCHEMA CONCURRENTLY s", None),
])
def test_concurrent_statements_are_parsed(text, expected):
    assert indexes.concurrent_op(text) == expected


def test_progress_text_of_an_index_build():
    row = ("active", None, None, "CREATE INDEX CONCURRENTLY", "building index: scanning table", 1000, 250, 0, 0,
           0, 0, "idx_big_t", "big", None, None, None, None, None, None, None)
    text, data = progress.describe(row, 12.4)
    assert text == ("CREATE INDEX CONCURRENTLY idx_big_t on big, phase: building index: scanning table, "
                    "blocks 250/1,000, 25%, 12s elapsed")
    assert progress.describe(row, 3.21, named=True)[0] == ("phase: building index: scanning table, blocks 250/1,000, "
                                                           "25%, 3.2s elapsed")
    assert data["percent"] == 25.0 and data["phase"] == "building index: scanning table"
    idle = ("idle",) + (None,) * 19  # a transactional file polling for the module's lock
    assert progress.describe(idle, 12.0)[0] == "waiting for the module's migration lock (another applier), 12s elapsed"
    event = progress.Event("progress: f.sql:2 x: " + text, "progress", "f.sql", 2, **data)
    assert event.text.startswith("progress: f.sql:2") and event.as_dict()["kind"] == "progress"
