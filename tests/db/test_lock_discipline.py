"""Lock discipline on a live table: a migration that waits for a table lock gives up after lock_timeout instead
of queueing the application behind it, names the session it waited for, and is retried whole until it applies."""
import threading
import time

import psycopg
import pytest

from llmemory_db import migrate
from llmemory_db.migrate import LockRetryError, Settings
from tests.helpers import write

ALTER = {"001_alter.sql": "ALTER TABLE busy ADD COLUMN extra int;\n"}


@pytest.fixture
def busy(db):
    db.sql("CREATE TABLE busy (id serial PRIMARY KEY, body text); INSERT INTO busy (body) "
           "SELECT 'x' FROM generate_series(1, 1000)")
    return db


def reader(db, seconds):
    """A session that reads the table in a transaction it keeps open for ``seconds`` (a report, a long export)."""
    conn = psycopg.connect(db.dsn, application_name="long-report")
    conn.execute("SELECT count(*) FROM busy")
    conn.pid = conn.info.backend_pid
    threading.Timer(seconds, conn.close).start()
    return conn


class Application:
    """Inserts a row every 20 ms and records each insert's latency (the application during the migration)."""

    def __init__(self, db):
        self.conn = psycopg.connect(db.dsn, autocommit=True)
        self.latencies, self.errors, self._stop = [], [], threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.conn.execute("INSERT INTO busy (body) VALUES ('app')")
            except psycopg.Error as exc:
                self.errors.append(exc)
            self.latencies.append(time.monotonic() - started)
            time.sleep(0.02)

    def stop(self):
        self._stop.set()
        self.thread.join()
        self.conn.close()
        return max(self.latencies)


def test_retried_until_the_reader_ends_naming_it_and_the_application_never_queues_long(busy, tmp_path):
    events = []
    holder = reader(busy, 1.6)
    app = Application(busy)
    time.sleep(0.2)
    started = time.monotonic()
    with migrate.connect(busy.dsn) as conn:  # as the command line and the provider connect
        result = migrate.apply(conn, Settings(write(tmp_path, ALTER), lock_timeout=0.4, lock_retry_timeout=30),
                               on_event=lambda e: e.kind == "lock-wait" and events.append(e.text))
    took = time.monotonic() - started
    worst = app.stop()
    assert result.applied == ["001_alter.sql"] and took >= 1.2  # applied once the reader ended, no manual step
    assert events and all("001_alter.sql" in e and "gave up after 0.4s" in e for e in events)
    assert f"pid {holder.pid}" in events[0] and "long-report" in events[0]
    assert "SELECT count(*) FROM busy" in events[0]
    assert app.errors == [] and worst < 0.4 + 0.5  # each attempt made inserts wait at most lock_timeout
    # and only once per attempt (locating the failing line does not queue them behind a second lock request)
    slow = sum(latency for latency in app.latencies if latency > 0.1)
    assert slow < (len(events) + 1) * 0.4 + 0.5, (slow, len(events))
    assert busy.sql("SELECT count(*) FROM information_schema.columns WHERE table_name = 'busy' "
                    "AND column_name = 'extra'") == [(1,)]


def test_without_a_lock_timeout_the_application_queues_behind_the_waiting_migration(busy, tmp_path):
    """The pile-up the default lock_timeout prevents (what pgdbm and this engine did before): measured here so
    that the test above cannot pass by accident."""
    reader(busy, 1.5)
    app = Application(busy)
    time.sleep(0.2)
    with psycopg.connect(busy.dsn, autocommit=True) as conn:
        migrate.apply(conn, Settings(write(tmp_path, ALTER), lock_timeout=0))
    assert app.stop() > 1.0


def test_gives_up_after_lock_retry_timeout_naming_the_blocker(busy, tmp_path):
    holder = reader(busy, 4)
    started = time.monotonic()
    with psycopg.connect(busy.dsn, autocommit=True) as conn, pytest.raises(LockRetryError) as info:
        migrate.apply(conn, Settings(write(tmp_path, ALTER), lock_timeout=0.2, lock_retry_timeout=1))
    assert 0.4 < time.monotonic() - started < 3  # gave up before the budget of 1 s would be overrun
    text = str(info.value)
    assert "001_alter.sql failed at line 1" in text and "gave up after" in text and info.value.attempts >= 2
    assert f"pid {holder.pid}" in text and "pg_terminate_backend" in text
    assert busy.history() == []


def test_a_no_transaction_file_is_never_retried(busy, tmp_path):
    """Its first statement ran and committed: retrying blindly could leave half of it twice (a failed CREATE INDEX
    CONCURRENTLY leaves an INVALID index). It is reported as interrupted, as any failed no-transaction file."""
    files = {"001_idx.sql": "-- pgdbm:no-transaction\nSET lock_timeout = '300ms';\n"
                            "CREATE INDEX CONCURRENTLY IF NOT EXISTS busy_body ON busy (body);\n"
                            "ALTER TABLE busy ADD COLUMN extra int;\n"}
    events = []
    settings = Settings(write(tmp_path, files), lock_timeout=0.3, pool_mode="session")
    with psycopg.connect(busy.dsn, autocommit=True) as conn:
        migrate.apply(conn, Settings(write(tmp_path / "warm", {"000_warm.sql": "SELECT 1;"})))
        holder = reader(busy, 4)
        time.sleep(0.1)
        with pytest.raises(migrate.StatementError) as info:
            migrate.apply(conn, settings, on_event=lambda e: events.append(e.text))
        assert info.value.sqlstate == "55P03" and info.value.line == 4
        assert events == []  # not retried
        assert [i.filename for i in migrate.status(conn, settings).interrupted] == ["001_idx.sql"]
    holder.close()
