"""The text of a transactional migration's round trip, composed once per history store.

What every file's transaction carries besides the file (pgdbm's lock key, the same history table, the file and
its row committed together; unchanged in meaning):

    BEGIN;
    SELECT CASE WHEN <try-lock> THEN 1 ELSE <busy marker> END;
    SELECT (SELECT <applied marker> FROM <history> WHERE filename = ...),   -- re-plan under the lock: a statement
           set_config('lock_timeout', ..., true), ...;                      -- of its own (its snapshot follows
    <the file>                                                              -- the lock), then the settings
    ; INSERT INTO <history> (...) VALUES (...); COMMIT

Before, the settings were three or four ``SET LOCAL`` statements of their own (``set_config(name, value, true)``
is the same transaction-local setting, in the re-check's statement: three fewer statements for the server to parse
and run per file), and the constant parts (the lock, the settings, the history's name, the module) were composed
with ``psycopg.sql`` for every file (about 0.2 ms of client CPU per file); here they are composed once, and a
file adds its three literals.

The settings come from the executor's one list (``executor.settings_sql``, passed in: the executor imports this
module, not the other way round).
"""
from __future__ import annotations

from typing import List, Sequence

from psycopg import sql

from .files import Migration
from .history import APPLIED_MARK, HistoryStore

ELAPSED = "greatest(1, (extract(epoch FROM clock_timestamp() - statement_timestamp()) * 1000)::int)"


def settings_select(store: HistoryStore, statements: Sequence[sql.Composable]) -> List[sql.Composable]:
    """The executor's ``SET LOCAL`` statements (``statements``) as ``set_config(name, value, true)`` calls (SET
    LOCAL's equivalent)."""
    conn = store.conn
    out: List[sql.Composable] = []
    for statement in statements:
        text = statement.as_string(conn)
        name, _, value = text[len("SET LOCAL "):].partition(" ")
        value = value[len("= "):] if value.startswith("= ") else value[len("TO "):]
        if name == "search_path":  # TO "schema", public: the list as SET shows it (quoted only where needed)
            schema = store.settings.schema
            if value != sql.SQL("{}, public").format(sql.Identifier(schema)).as_string(conn):
                raise AssertionError(f"unexpected setting {text!r}")
            value = sql.SQL("quote_ident({}) || ', public'").format(sql.Literal(schema)).as_string(conn)
        elif not value.startswith("'"):
            raise AssertionError(f"unexpected setting {text!r}")
        out.append(sql.SQL("set_config({}, {}, true)").format(sql.Literal(name), sql.SQL(value)))
    return out


class FileSQL:
    """The constant parts of one store's file round trips, composed once (see the module's docstring)."""

    def __init__(self, store: HistoryStore, with_version: bool, statements: Sequence[sql.Composable]) -> None:
        conn, s = store.conn, store.settings
        self.conn, self.with_version = conn, with_version
        settings = sql.SQL(", ").join(settings_select(store, statements)).as_string(conn)
        self.first = f"BEGIN; {store.try_lock_sql().as_string(conn)}; "
        history = s.history_ident.as_string(conn)
        module = sql.Literal(s.module_name).as_string(conn)
        marker = sql.Literal(APPLIED_MARK + " ").as_string(conn)
        # the settings ride on the re-check; the history's lock is taken when the statement is analyzed, before
        # they are set, as when they were SET LOCALs after it
        self.check = (f"SELECT (SELECT ({marker} || checksum)::int FROM {history} WHERE filename = {{}} "
                      f"AND (module_name = {module} OR module_name IS NULL)), {settings};\n")
        columns = '"filename", "checksum", "module_name", "execution_time_ms"' + (', "version"' if with_version
                                                                                  else "")
        self.insert = f"\n; INSERT INTO {history} ({columns}) VALUES ({{}}, {{}}, {module}, {ELAPSED}{{}}); COMMIT"

    def literal(self, value: str) -> str:
        return sql.Literal(value).as_string(self.conn)

    def head(self, migration: Migration, waited: bool = False) -> str:
        """What comes before the file: BEGIN and try-lock (``waited``: not those), the re-check with the settings."""
        return ("" if waited else self.first) + self.check.format(self.literal(migration.filename))

    def tail(self, migration: Migration) -> str:
        """After the file: its history row (execution time measured by the server), COMMIT."""
        version = f", {self.literal(migration.version)}" if self.with_version else ""
        return self.insert.format(self.literal(migration.filename), self.literal(migration.checksum), version)
