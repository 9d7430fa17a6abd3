"""A fleet over three PostgreSQL servers (three embedded servers on this machine): a pool per server, a server
that is down or goes down mid-run fails only its own tenants (named), and the next run retries only them."""
import threading
import time

import psycopg

from llmemory_db import migrate
from llmemory_db.migrate import Settings
from llmemory_db.migrate import fleet as fleet_mod
from llmemory_db.migrate.fleet import apply_fleet
from llmemory_db.migrate.fleet_settings import FleetSettings, Tenant
from tests.helpers import write
from tests.helpers.faults import SLOW, make_slow
from tests.helpers.servers import three_dbs, three_servers  # noqa: F401 - fixtures

FILES = {"001_docs.sql": "CREATE TABLE {{tables.docs}} (id bigserial PRIMARY KEY, body text);\n",
         "002_tags.sql": "CREATE TABLE {{tables.tags}} (name text PRIMARY KEY);\n"}
PER_SERVER = 6


def layout(databases):
    """Tenants s<server>_<i>, PER_SERVER per server; (tenants, connect, server_of, server names)."""
    keys = {f"db{n}": database for n, database in enumerate(databases)}
    names = {key: f"127.0.0.1:{database.server.port}" for key, database in keys.items()}
    tenants = [Tenant(f"s{n}_{i}", f"db{n}") for n in range(len(databases)) for i in range(PER_SERVER)]
    return tenants, (lambda key: migrate.connect(keys[key].dsn, retries=1, backoff=0.1)), names.__getitem__, names


def run(folder, databases, **kwargs):
    tenants, connect, server_of, _ = layout(databases)
    settings = FleetSettings(Settings(folder, module_name="memory"), **{"on_error": "continue", **kwargs})
    events = []
    result = apply_fleet(settings, tenants, connect, on_event=lambda e: events.append(e.text), server_of=server_of)
    return result, events


def recorded_once(database, schema):
    return database.sql(f"SELECT filename, count(*) FROM {schema}.schema_migrations GROUP BY 1 ORDER BY 1")


class Peaks:
    """Peak engine sessions per server, and at once over all of them."""

    def __init__(self, databases):
        self.databases, self.each, self.total, self._stop = databases, [0] * len(databases), 0, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        conns = [d.connect() for d in self.databases]
        try:
            while not self._stop.is_set():
                counts = []
                for conn in conns:
                    try:
                        counts.append(conn.execute(
                            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                            "AND application_name = 'llmemory-db-migrate'").fetchone()[0])
                    except psycopg.Error:
                        counts.append(0)
                self.each = [max(a, b) for a, b in zip(self.each, counts)]
                self.total = max(self.total, sum(counts))
                time.sleep(0.005)
        finally:
            for conn in conns:
                conn.close()

    def stop(self):
        self._stop.set()
        self.thread.join()
        return self


def test_three_servers_a_pool_each_and_a_summary_per_server(three_dbs, tmp_path):
    folder = write(tmp_path / "m", {**FILES, "003_slow.sql": "SELECT pg_sleep(0.05);\n"})
    peaks = Peaks(three_dbs)
    result, _ = run(folder, three_dbs, max_parallel=2, canary=0)
    peaks.stop()
    _, _, _, names = layout(three_dbs)
    assert result.summary() == f"{3 * PER_SERVER} tenants: {3 * PER_SERVER} up to date"
    assert result.servers() == {name: {"tenants": PER_SERVER, "at_head": PER_SERVER, "failed": 0}
                                for name in names.values()}
    assert max(peaks.each) <= 2 and peaks.total > 2  # a pool of 2 per server, the servers at once
    for n, database in enumerate(three_dbs):
        assert recorded_once(database, f"s{n}_3") == [(name, 1) for name in sorted(FILES) + ["003_slow.sql"]]


def test_max_parallel_total_bounds_the_tenants_migrating_at_once(three_dbs, tmp_path):
    folder = write(tmp_path / "m", {"001_slow.sql": "SELECT pg_sleep(0.1);\n"})
    run(folder, three_dbs, canary=0)  # the tenants exist: what follows is one file per tenant
    write(folder, {"002_slow.sql": "SELECT pg_sleep(0.1);\n"})
    active, peak, lock = [0], [0], threading.Lock()
    real = fleet_mod.apply_tenant

    def counted(*args, **kwargs):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        try:
            return real(*args, **kwargs)
        finally:
            with lock:
                active[0] -= 1

    fleet_mod.apply_tenant = counted
    try:
        result, _ = run(folder, three_dbs, max_parallel=3, max_parallel_total=4, canary=0)
    finally:
        fleet_mod.apply_tenant = real
    assert result.failed == [] and peak[0] == 4


def test_a_server_down_fails_its_tenants_naming_it_and_the_next_run_retries_only_them(three_dbs, three_servers,
                                                                                    tmp_path):
    folder = write(tmp_path / "m", FILES)
    run(folder, three_dbs)
    write(folder, {"003_note.sql": "ALTER TABLE {{tables.tags}} ADD COLUMN note text;\n"})
    three_servers[1].stop()
    started = time.monotonic()
    result, events = run(folder, three_dbs)
    took = time.monotonic() - started
    _, _, _, names = layout(three_dbs)
    down = names["db1"]
    failed = {t.schema: t.error["message"] for t in result.failed}
    assert sorted(failed) == [f"s1_{i}" for i in range(PER_SERVER)]
    assert all(message.startswith(f"server {down}: Cannot connect to PostgreSQL") for message in failed.values())
    assert result.servers()[down] == {"tenants": PER_SERVER, "at_head": 0, "failed": PER_SERVER}
    assert result.servers()[names["db0"]] == {"tenants": PER_SERVER, "at_head": PER_SERVER, "failed": 0}
    assert sum(f"server {down}" in e and "the other servers go on" in e for e in events) == 1  # tried once
    assert took < 20
    assert [r[0] for r in three_dbs[2].history("s2_4.schema_migrations", "memory")][-1] == "003_note.sql"

    three_servers[1].start()
    again, _ = run(folder, three_dbs)
    assert again.failed == [] and again.summary() == f"{3 * PER_SERVER} tenants: {3 * PER_SERVER} up to date"
    assert {t.schema for t in again.tenants.values() if t.applied} == {f"s1_{i}" for i in range(PER_SERVER)}
    assert recorded_once(three_dbs[1], "s1_2") == [(name, 1) for name in sorted(FILES) + ["003_note.sql"]]


def test_a_server_stopped_mid_run_fails_only_its_tenants_then_every_tenant_reaches_head(three_dbs, three_servers,
                                                                                       tmp_path):
    """Server 1 is stopped while its tenants migrate (slow files): some of its tenants may have committed files,
    the rest fail naming it, servers 0 and 2 finish; once it is back, one more run brings every tenant to head,
    each file recorded once, each table there exactly when its row is."""
    folder = write(tmp_path / "m", {f"00{i}_t{i}.sql": f"CREATE TABLE {{{{tables.t{i}}}}} (id int);\n{SLOW}"
                                    for i in range(1, 4)})
    for database in three_dbs:
        make_slow(database.dsn, 0.15)
    outcome = {}
    runner = threading.Thread(target=lambda: outcome.update(result=run(folder, three_dbs, max_parallel=2,
                                                                       canary=0)[0]))
    runner.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not three_dbs[1].sql(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'llmemory-db-migrate' "
            "AND state = 'active'")[0][0]:
        time.sleep(0.02)
    three_servers[1].stop()  # fast shutdown: its sessions are terminated, their transactions rolled back
    runner.join(timeout=120)
    result = outcome["result"]
    _, _, _, names = layout(three_dbs)
    assert {t.server for t in result.failed} == {names["db1"]} and result.failed
    assert all(f"server {names['db1']}" in t.error["message"] for t in result.failed)
    assert result.servers()[names["db0"]]["at_head"] == result.servers()[names["db2"]]["at_head"] == PER_SERVER

    three_servers[1].start()
    for database in three_dbs:
        make_slow(database.dsn, 0)
    again, _ = run(folder, three_dbs, max_parallel=2)
    assert again.failed == [] and all(row["at_head"] == PER_SERVER for row in again.servers().values())
    for n, database in enumerate(three_dbs):
        for i in range(PER_SERVER):
            schema = f"s{n}_{i}"
            assert recorded_once(database, schema) == [(f"00{j}_t{j}.sql", 1) for j in range(1, 4)]
            assert database.tables(schema, exclude=("schema_migrations",)) == ["t1", "t2", "t3"]


def test_a_slow_server_does_not_hold_the_other_servers_waves(three_dbs, tmp_path):
    """Waves of 2 tenants: server 0's files take 0.4 s each, the others' none; servers 1 and 2 finish all their
    waves while server 0 is still in its first ones."""
    folder = write(tmp_path / "m", {"001_a.sql": "CREATE TABLE {{tables.a}} (id int);\n" + SLOW})
    for n, database in enumerate(three_dbs):
        make_slow(database.dsn, 0.4 if n == 0 else 0)
    result, _ = run(folder, three_dbs, max_parallel=1, wave_size=2, canary=0)
    assert result.failed == []
    finished = {n: database.sql(f"SELECT max(applied_at) FROM ({' UNION ALL '.join(f'SELECT applied_at FROM s{n}_{i}.schema_migrations' for i in range(PER_SERVER))}) x")[0][0]
                for n, database in enumerate(three_dbs)}
    first_of_slow = three_dbs[0].sql("SELECT min(applied_at) FROM s0_2.schema_migrations")[0][0]  # its 2nd wave
    assert finished[1] < first_of_slow and finished[2] < first_of_slow
