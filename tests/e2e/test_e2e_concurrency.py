"""Many appliers started together on one database: `pulumi up` of separate stacks, the command line and the
real pgdbm. Every migration is recorded exactly once, every applier succeeds, nobody deadlocks."""
import json
import os
import subprocess
import sys
import textwrap
import time

import psycopg
import pytest

from tests.helpers import db as dbs
from tests.helpers import stacks as h
from tests.helpers import write  # noqa
from tests.helpers import ROOT

pytestmark = pytest.mark.e2e

PROGRAM = """
import pulumi
from llmemory_db import Migrations, MigrationsArgs
cfg = pulumi.Config()
m = Migrations("m", MigrationsArgs(migrations_dir=cfg.require("dir"), schema=cfg.get("schema") or None,
                                   module_name=cfg.require("module"), history_table=cfg.require("history")))
pulumi.export("applied", m.applied)
"""

PGDBM = textwrap.dedent("""
    import asyncio, json, sys
    from pgdbm import AsyncDatabaseManager, AsyncMigrationManager, DatabaseConfig
    url, path, schema, module = sys.argv[1:5]
    async def main():
        db = AsyncDatabaseManager(DatabaseConfig(connection_string=url, schema=schema or None,
                                                 min_connections=1, max_connections=2))
        await db.connect()
        try:
            result = await AsyncMigrationManager(db, migrations_path=path, module_name=module).apply_pending_migrations()
            print(json.dumps(result.get("applied", []), default=str))
        finally:
            await db.disconnect()
    asyncio.run(main())
""")


def files(count):
    return {f"{i:03d}_t{i}.sql": f"CREATE TABLE {{{{tables.t{i}}}}} (id serial PRIMARY KEY, body text);\n"
                                 f"SELECT pg_sleep(0.1);\n" for i in range(1, count + 1)}


class Race:
    """Appliers of one (schema, module): prepared first, then all started at once."""

    def __init__(self, pg_server, database, tmp_path):
        self.server, self.database, self.tmp = pg_server, database, tmp_path
        self.dsn = pg_server.dsn(database=database)
        self.url = dbs.url(self.dsn)
        self.project = h.write_project(tmp_path / "proj", PROGRAM, {})
        self.env = dict(os.environ, **h.pulumi_env(tmp_path / "backend"))
        self.commands = []  # (label, argv, cwd)

    def migrations(self, schema, module, count):
        """A migrations folder for (schema, module), whose history table exists (pgdbm creates its table before
        it takes the lock, so pgdbm instances racing on an empty database fail among themselves)."""
        directory = write(self.tmp / f"m_{schema or 'public'}", files(count))
        history = f"{schema}.schema_migrations" if schema else "public.schema_migrations"
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            if schema:
                conn.execute(f"CREATE SCHEMA {schema}")
        warmup = write(self.tmp / f"w_{schema or 'public'}", {"000_init.sql": "SELECT 1;\n"})
        subprocess.run([sys.executable, "-m", "llmemory_db.migrate", "apply", "--dsn", self.dsn, "--dir", str(warmup),
                        "--module", module, "--history-table", history] + (["--schema", schema] if schema else []),
                       cwd=ROOT, check=True, capture_output=True)
        return directory, history

    def pulumi(self, stack_name, directory, schema, module, history):
        h.stack(self.project, self.tmp / "backend", self.server, self.database, stack_name,
                {"dir": str(directory), "schema": schema or "", "module": module, "history": history})
        self.commands.append((f"pulumi:{stack_name}", ["pulumi", "up", "--yes", "--skip-preview", "-s", stack_name],
                              self.project))

    def cli(self, label, directory, schema, module, history):
        self.commands.append((label, [sys.executable, "-m", "llmemory_db.migrate", "apply", "--dsn", self.dsn,
                                      "--dir", str(directory), "--module", module, "--history-table", history,
                                      "--json"] + (["--schema", schema] if schema else []), ROOT))

    def pgdbm(self, label, directory, schema, module):
        self.commands.append((label, [sys.executable, "-c", PGDBM, self.url, str(directory), schema or "", module],
                              ROOT))

    def run(self, timeout=300):
        started = time.monotonic()
        procs = [(label, subprocess.Popen(argv, cwd=cwd, env=self.env, text=True, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE)) for label, argv, cwd in self.commands]
        outputs = {}
        for label, proc in procs:  # stdout: the result (JSON for the command lines); stderr: progress, lock waits
            out, err = proc.communicate(timeout=timeout)
            assert proc.returncode == 0, f"{label} failed:\n{out}\n{err}"
            outputs[label] = out
        return outputs, time.monotonic() - started

    def history(self, table, module):
        """(filename, how many rows) of the module: each file must be recorded once."""
        return dbs.Database(self.server, self.database).sql(
            f"SELECT filename, count(*) FROM {table} WHERE module_name = %s GROUP BY filename ORDER BY filename",
            module)


def test_nine_appliers_on_one_module(pg_server, bare_db, tmp_path):
    race = Race(pg_server, bare_db.name, tmp_path)
    directory, history = race.migrations(None, "aword_memory", 12)
    for i in range(3):
        race.pulumi(f"s{i}", directory, None, "aword_memory", history)
        race.cli(f"cli{i}", directory, None, "aword_memory", history)
        race.pgdbm(f"pgdbm{i}", directory, None, "aword_memory")
    outputs, seconds = race.run()
    expected = [("000_init.sql", 1)] + [(name, 1) for name in sorted(files(12))]
    assert race.history(history, "aword_memory") == expected  # each file recorded exactly once
    # the work was shared out: the command lines and pgdbm report what they applied, together each file once
    applied = [f for i in range(3) for f in json.loads(outputs[f"cli{i}"])["applied"]]
    applied += [entry["filename"] if isinstance(entry, dict) else entry
                for i in range(3) for entry in json.loads(outputs[f"pgdbm{i}"].strip().splitlines()[-1])]
    applied += [name for i in range(3) for line in outputs[f"pulumi:s{i}"].splitlines() if ": applied " in line
                for name in line.split(": applied ", 1)[1].strip().split(", ")]
    assert sorted(set(applied)) == sorted(files(12))
    print(f"9 appliers, 12 files: {seconds:.1f}s")


def test_two_schemas_with_four_appliers_each(pg_server, bare_db, tmp_path):
    race = Race(pg_server, bare_db.name, tmp_path)
    for schema in ("mem_a", "mem_b"):
        module = f"llmemory_{schema}"
        directory, history = race.migrations(schema, module, 8)
        race.pulumi(f"stack_{schema}", directory, schema, module, history)
        race.cli(f"cli1_{schema}", directory, schema, module, history)
        race.cli(f"cli2_{schema}", directory, schema, module, history)
        race.pgdbm(f"pgdbm_{schema}", directory, schema, module)
    _, seconds = race.run()
    expected = [("000_init.sql", 1)] + [(name, 1) for name in sorted(files(8))]
    with psycopg.connect(race.dsn) as conn:
        for schema in ("mem_a", "mem_b"):
            assert race.history(f"{schema}.schema_migrations", f"llmemory_{schema}") == expected
            tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = %s AND tablename ~ '^t[0-9]+$'",
                                  (schema,)).fetchone()[0]
            assert tables == 8  # each schema got its own tables, none leaked into the other or public
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename ~ '^t[0-9]+$'"
                            ).fetchone()[0] == 0
    print(f"2 schemas x 4 appliers, 8 files each: {seconds:.1f}s")
