"""Database helpers shared by the tests: a fresh database, queries, the history and tables, changed DSNs."""
from __future__ import annotations

import os
import subprocess
import uuid
from contextlib import contextmanager
from typing import Iterable, List, Optional, Tuple, Union

import psycopg
from psycopg import conninfo


def with_params(dsn: str, **changes) -> str:
    """``dsn`` with some parameters replaced (user, password, dbname, ...), via psycopg's conninfo."""
    return conninfo.make_conninfo(dsn, **changes)


def url(dsn: str) -> str:
    """The postgresql:// URL of a key=value DSN (pgdbm/asyncpg take URLs)."""
    p = conninfo.conninfo_to_dict(dsn)
    return f"postgresql://{p['user']}:{p['password']}@{p['host']}:{p['port']}/{p['dbname']}"


@contextmanager
def _connection(target: Union[str, psycopg.Connection]):
    if isinstance(target, psycopg.Connection):
        yield target
    else:
        with psycopg.connect(target, autocommit=True) as conn:
            yield conn


def history(target: Union[str, psycopg.Connection], table: str = "public.schema_migrations",
            module: str = "aword_memory", columns: str = "filename, checksum") -> List[tuple]:
    """The module's history rows (``target``: a connection or a DSN)."""
    with _connection(target) as conn:
        return conn.execute(f"SELECT {columns} FROM {table} WHERE module_name = %s ORDER BY filename",
                            (module,)).fetchall()


def tables(target: Union[str, psycopg.Connection], schema: str = "public", exclude: Iterable[str] = ()) -> List[str]:
    """The names of the tables of ``schema``, sorted."""
    with _connection(target) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,)).fetchall()
    return sorted(r[0] for r in rows if r[0] not in set(exclude))


class Database:
    """A database of the test server, dropped by :meth:`drop`."""

    def __init__(self, server, name: str) -> None:
        self.server, self.name = server, name

    @property
    def dsn(self) -> str:
        return self.server.dsn(database=self.name)

    def connect(self, **changes) -> psycopg.Connection:
        return psycopg.connect(with_params(self.dsn, **changes), autocommit=True)

    def sql(self, query: str, *params) -> Optional[List[tuple]]:
        """Run ``query`` as the superuser; its rows, or None for a statement without a result."""
        with self.connect() as conn:
            cur = conn.execute(query, params or None)
            return cur.fetchall() if cur.description else None

    def history(self, table: str = "public.schema_migrations", module: str = "aword_memory",
                columns: str = "filename, checksum") -> List[tuple]:
        return history(self.dsn, table, module, columns)

    def tables(self, schema: str = "public", exclude: Iterable[str] = ()) -> List[str]:
        return tables(self.dsn, schema, exclude)

    def server_sql(self, query: str) -> None:
        """Run ``query`` in the server's maintenance database (roles, other databases)."""
        with psycopg.connect(self.server.dsn(), autocommit=True) as admin:
            admin.execute(query)

    def drop(self) -> None:
        with psycopg.connect(self.server.dsn(), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


_TEMPLATES: dict = {}


def _template(server, extensions: Tuple[str, ...]) -> str:
    """A template database with ``extensions``, made once per server and set of extensions: copying it is faster
    than creating the extensions in every new database."""
    key = (server.root, tuple(sorted(extensions)))
    if key not in _TEMPLATES:
        name = "tpl_" + "_".join(sorted(extensions))[:50]
        with psycopg.connect(server.dsn(), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.execute(f'CREATE DATABASE "{name}"')
        with psycopg.connect(server.dsn(database=name), autocommit=True) as conn:
            for extension in sorted(extensions):
                conn.execute(f'CREATE EXTENSION IF NOT EXISTS "{extension}"')
        _TEMPLATES[key] = name
    return _TEMPLATES[key]


def create(server, prefix: str = "t", owner: Optional[str] = None, extensions: Tuple[str, ...] = ()) -> Database:
    """A new database (``owner``: its owner role; ``extensions``: created in it as the superuser)."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    template = f' TEMPLATE "{_template(server, extensions)}"' if extensions else ""
    with psycopg.connect(server.dsn(), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"' + template + (f' OWNER "{owner}"' if owner else ""))
    return Database(server, name)


def psql_f(server, db, settings):
    """llmemory's files rendered for the schema and run with plain `psql -f`, as a deploy script would (with the
    schema first on search_path, as llmemory's pgdbm sets it: its files name some indexes unqualified)."""
    from llmemory_db.migrate import load, render
    for migration in load(settings.migrations_dir):
        path = f"/tmp/{db.name}-{migration.filename}"
        with open(path, "w") as out:
            out.write(render(migration.sql, settings.schema, migration.filename))
        subprocess.run([str(server.psql), "-v", "ON_ERROR_STOP=1", "-q", "-d", url(db.dsn), "-f", path],
                       check=True, capture_output=True,
                       env={**os.environ, "PGOPTIONS": f"-c search_path={settings.schema},public"})
