"""Adopting a database that exists already: refuse the unknown, a verified baseline, copying a pgdbm history.

- **Refuse the unknown.** A target schema that already holds objects the migrations would create, for a module
  with no history there, is refused before anything runs (running ``001`` again may fail half-way or silently do
  nothing). In standalone mode only the module's own objects count.
- **Baseline, proven.** ``baseline(VERSION)`` records every file up to that version as applied without running
  it, after proving that the live schema is what those files produce: they are applied, rendered for a scratch
  schema, in a transaction on the same server, fingerprinted like the drift check, and rolled back. A mismatch is
  refused with the differences. ``trust`` skips the proof, loudly.
- **Copy a history.** A pgdbm application that recorded the files under another module name or in another history
  table: its rows are copied, checksums verified, idempotently, in one transaction.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import List, Optional, Sequence

import psycopg
from psycopg import sql

from . import drift, proof
from .errors import BaselineMismatchError, CopyHistoryError, SettingError, UnknownSchemaError
from .events import Event, Sink, ignore
from .files import Migration, load
from .history import HistoryStore
from .render import render
from .settings import Settings
from .spelling import setting


@dataclass
class BaselineResult:
    recorded: List[str] = field(default_factory=list)  # files recorded as applied by this baseline
    proven: bool = False                                # the scratch proof ran and matched
    message: str = ""
    seconds: float = 0.0


def files_up_to(files: Sequence[Migration], version: str) -> List[Migration]:
    """The files up to and including ``version`` (a version such as ``002``, or a file name)."""
    for index, migration in enumerate(files):
        if version in (migration.version, migration.filename) or (
                version.isdigit() and migration.version.isdigit() and int(version) == int(migration.version)):
            return list(files[:index + 1])
    raise SettingError(f"No migration file has version {version!r} ({setting('baseline')}; files: "
                       f"{', '.join(m.filename for m in files) or 'none'})", setting="baseline",
                       remedy="give the version of the last file the existing schema already has, e.g. 002")


def existing_objects(conn: psycopg.Connection, settings: Settings, files: Sequence[Migration]) -> List[str]:
    """Objects that ``files`` would create and that exist already in the target schema (one query; none at all
    when the schema is empty, which is checked first without reading the files)."""
    if not conn.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %(s)s AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid "
            "AND d.deptype = 'e')) OR EXISTS (SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = %(s)s AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = p.oid "
            "AND d.deptype = 'e'))", {"s": settings.schema_name}).fetchone()[0]:
        return []  # nothing of anyone's there (extensions' members aside)
    names = sorted(drift.created_by((render(m.sql, settings.schema, m.filename) for m in files), settings.schema))
    if not names:
        return []
    rows = conn.execute(
        "SELECT CASE c.relkind WHEN 'i' THEN 'index' WHEN 'S' THEN 'sequence' WHEN 'v' THEN 'view' "
        "WHEN 'm' THEN 'view' ELSE 'table' END || ' ' || n.nspname || '.' || c.relname, "
        "       CASE c.relkind WHEN 'r' THEN 1 WHEN 'p' THEN 1 WHEN 'v' THEN 2 WHEN 'm' THEN 2 WHEN 'S' THEN 4 "
        "       ELSE 5 END "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %(schema)s AND c.relname = ANY(%(names)s) "
        "UNION ALL SELECT 'function ' || n.nspname || '.' || p.proname || '()', 3 FROM pg_proc p "
        "JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = %(schema)s AND p.proname = ANY(%(names)s) "
        "ORDER BY 2, 1", {"schema": settings.schema_name, "names": names}).fetchall()
    return [row[0] for row in rows]


def refuse_unknown(conn: psycopg.Connection, settings: Settings, files: Sequence[Migration]) -> None:
    """Raise UnknownSchemaError when the module has no history here but its objects exist already.

    The history and the objects are read in one snapshot: another applier commits a file and its history row
    together, so its work is never mistaken for an unknown schema."""
    if not files:
        return
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    try:
        store = HistoryStore(conn, settings)
        found = [] if store.exists() and store.read() else existing_objects(conn, settings, files)
    finally:
        conn.execute("COMMIT")
    if found:
        shown = ", ".join(found[:12]) + (f" and {len(found) - 12} more" if len(found) > 12 else "")
        raise UnknownSchemaError(
            f"Schema {settings.schema_name} already holds {len(found)} object(s) that the migrations of module "
            f"{settings.module_name!r} create, but {settings.history_display} has no history of that module: "
            f"{shown}; nothing was applied",
            file=files[0].filename,
            remedy="if this schema was made by these files (by hand, psql -f, another tool), adopt it: "
                   f"{setting('baseline', 'VERSION')} records the files up to VERSION as applied once the live "
                   f"schema is proven to match them; or deploy into a different {setting('schema')}")


def prove(conn: psycopg.Connection, settings: Settings, files: Sequence[Migration]) -> List[str]:
    """Differences between the live schema and what ``files`` produce (empty: they match)."""
    return proof.diff_against_files(conn, settings, files)


def verify_baseline(conn: psycopg.Connection, settings: Settings, upto: Sequence[Migration], version: str) -> None:
    """Raise BaselineMismatchError, with the differences, unless the live schema is what ``upto`` produce."""
    differences = prove(conn, settings, upto)
    if differences:
        raise BaselineMismatchError(
            f"Cannot baseline {settings.schema_name} at {version}: the live schema is not what "
            f"{upto[0].filename}…{upto[-1].filename} produce; nothing was recorded:\n  " + "\n  ".join(differences),
            file=upto[-1].filename,
            remedy="make the live schema match (the differences above, in the drift check's words), or baseline at "
                   f"the version it does match; {setting('baseline_trust', True)} records without the proof, at "
                   "your own risk")


def baseline(conn: psycopg.Connection, settings: Settings, version: str, *, trust: bool = False,
             files: Optional[Sequence[Migration]] = None) -> BaselineResult:
    """Record the files up to ``version`` as applied without running them, after the proof (see the module)."""
    started = time.monotonic()
    files = load(settings.migrations_dir) if files is None else list(files)
    upto = files_up_to(files, version)
    store = HistoryStore(conn, settings)
    recorded = store.read() if store.exists() else {}
    if recorded:
        first, last = upto[0].filename, upto[-1].filename
        return BaselineResult(message=f"baseline {version}: module {settings.module_name!r} has a history already "
                                      f"({len(recorded)} file(s) recorded): nothing to do ({first}…{last})",
                              seconds=time.monotonic() - started)
    if not trust:
        verify_baseline(conn, settings, upto, version)
    if not store.exists():
        store.create()
    with_version = store.has_version_column()
    with store.locked():
        if store.read():  # another applier got there first
            return BaselineResult(message=f"baseline {version}: recorded meanwhile by another applier",
                                  seconds=time.monotonic() - started)
        for migration in upto:
            conn.execute(store.insert_sql(migration, with_version))
    span = f"{upto[0].version}…{upto[-1].version}" if len(upto) > 1 else upto[0].version
    how = "TRUSTED WITHOUT PROOF: the live schema was not compared with the files" if trust else "schema matches"
    return BaselineResult([m.filename for m in upto], not trust, f"baselined {span} ({how})",
                          time.monotonic() - started)


def copy_history(conn: psycopg.Connection, settings: Settings, from_module: Optional[str] = None,
                 from_table: Optional[str] = None) -> List[str]:
    """Copy the rows of another module name and/or history table into this module's history: only files on disk,
    with their checksums verified, skipping rows already there; one transaction under the module's lock.
    Returns the files copied."""
    if from_module is None and from_table is None:
        raise CopyHistoryError("copy-history needs the module or the history table to copy from",
                             remedy="--from-module OLD_NAME and/or --from-history-table schema.table")
    source = settings.replace(module_name=from_module or settings.module_name,
                              history_table=from_table or settings.history_table)
    if (source.module_name, source.history_display) == (settings.module_name, settings.history_display):
        raise CopyHistoryError("copy-history: the source is this module's own history", remedy="name another one")
    source_store, store = HistoryStore(conn, source), HistoryStore(conn, settings)
    if not source_store.exists():
        raise CopyHistoryError(f"The history table {source.history_display} does not exist",
                             remedy="name the table pgdbm used, e.g. <schema>.schema_migrations")
    files = {m.filename: m for m in load(settings.migrations_dir)}
    rows = conn.execute(sql.SQL("SELECT filename, checksum FROM {} WHERE module_name = %s ORDER BY filename").format(
        source.history_ident), (source.module_name,)).fetchall()
    if not rows:
        raise CopyHistoryError(f"{source.history_display} has no rows of module {source.module_name!r}",
                             remedy="check the module name pgdbm used (its module_name column)")
    for filename, checksum in rows:
        if filename not in files:
            raise CopyHistoryError(f"{source.history_display} records {filename} (module {source.module_name!r}), "
                                 f"which is not in {settings.migrations_dir}; nothing was copied", file=filename,
                                 remedy="copy from the folder those files came from (--dir / --package)")
        if files[filename].checksum != checksum:
            raise CopyHistoryError(f"{filename} was recorded with checksum {checksum} in {source.history_display}, "
                                 f"but the file has {files[filename].checksum}; nothing was copied", file=filename,
                                 remedy="restore the file as it was applied")
    if not store.exists():
        store.create()
    with_version = store.has_version_column()
    copied = []
    with store.locked():
        present = store.read()
        for filename, _ in rows:
            if filename not in present:
                conn.execute(store.insert_sql(files[filename], with_version))
                copied.append(filename)
    return copied




def decide(conn: psycopg.Connection, settings: Settings, files: Sequence[Migration], *, known: bool = False,
           record: bool = False, on_event: Sink = ignore) -> List[str]:
    """A first deployment of the module here (no history of it): refuse a schema that already holds its objects,
    unless a baseline is set and proven (``record``: record it, as an apply does; else only prove it, as a preview
    does). ``known``: the caller deployed these files here before (a stack's state says so), so objects without a
    history are the spec's development reset, re-run as pgdbm would. Returns the files a baseline recorded."""
    if settings.baseline:
        if record:
            result = baseline(conn, settings, settings.baseline, trust=settings.baseline_trust, files=files)
            on_event(Event("baseline", result.message, "warning" if settings.baseline_trust else "info"))
            return result.recorded
        if settings.baseline_trust:
            on_event(Event("baseline", f"baseline {settings.baseline}: TRUSTED WITHOUT PROOF (the live schema is "
                                       "not compared with the files)", "warning"))
        else:
            upto = files_up_to(files, settings.baseline)
            verify_baseline(conn, settings, upto, settings.baseline)
            on_event(Event("baseline", f"baseline {settings.baseline}: the live schema matches {upto[0].filename}…"
                                       f"{upto[-1].filename}; up records them as applied without running them"))
    elif not known:
        refuse_unknown(conn, settings, files)
    return []
