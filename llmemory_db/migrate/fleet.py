"""Fleets: one module's migrations over many tenant schemas, possibly on several databases, in one run.

The per-tenant work is the single-schema engine's (the same one-round-trip transaction per file, the same
history rows, pgdbm's layout ``<tenant>.schema_migrations`` by default); what a fleet adds:

- **one read per database** of every tenant's history (and of which new tenants' schemas hold the module's objects
  already), never one per tenant;
- **a bounded pool**: at most ``max_parallel`` worker connections, plus the one coordinator connection;
- **a canary** (the first ``canary`` tenants that have work) goes first, alone; if it fails nothing else runs;
- **waves** of ``wave_size`` tenants (default: all the rest) after it; ``on_error``: ``stop`` (finish the
  tenants running, start no new ones) or ``continue``;
- **locking that stays pgdbm-compatible**: pgdbm's module key is taken *shared* with an exclusive key per
  (module, schema) (``Settings.lock_scope = "schema"``): tenants migrate in parallel, while an application's
  pgdbm on any tenant of the module waits for them and is waited for;
- **no per-tenant copy of the SQL**: each file is loaded and linted once; its text is rendered for a tenant just
  before it is sent;
- **per-tenant set-up in the same pass**: a new tenant's schema, its history table and the runtime roles' grants
  are created in one round trip (the history table before the default privileges, so they never cover it).

No Pulumi import here: the ``MigratedTenants`` component calls :func:`apply_fleet` from its dynamic provider.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import psycopg
from psycopg import sql

from . import drift, executor
from .connection import pooler
from .errors import ChecksumMismatchError, MigrationError, PoolerError, UnknownSchemaError
from .events import Event, Sink, ignore
from .files import Migration, load
from .history import BUSY_MARK, HistoryStore, marked, rollback
from .fleet_settings import FleetSettings, Tenant, check_tenants
from .fleet_state import TenantState, read_fleet
from .lint import lint_pending
from .render import render
from .settings import Settings

@dataclass
class TenantResult:
    schema: str
    database: str = ""
    applied: List[str] = field(default_factory=list)   # applied by this run
    recorded: int = 0                                    # files recorded for the tenant after the run
    last: str = ""                                       # its last recorded file
    pending: List[str] = field(default_factory=list)
    error: Optional[Dict[str, object]] = None            # {file, line, message} of a failure
    new: bool = False                                    # its schema/history did not exist before this run

    def as_dict(self) -> dict:
        out: dict = {"recorded": self.recorded, "last": self.last, "pending": self.pending}
        if self.database:
            out["database"] = self.database
        if self.error:
            out["error"] = self.error
        return out


@dataclass
class FleetResult:
    tenants: "OrderedDict[str, TenantResult]"
    checksums: Dict[str, str]
    seconds: float = 0.0
    skipped: List[str] = field(default_factory=list)  # tenants not started (on_error stop, a failed canary)

    @property
    def failed(self) -> List[TenantResult]:
        return [t for t in self.tenants.values() if t.error]

    def summary(self) -> str:
        total = len(self.tenants)
        done = sum(1 for t in self.tenants.values() if not t.error and not t.pending)
        parts = [f"{done} up to date"]
        if self.failed:
            parts.append(f"{len(self.failed)} failed")
        waiting = total - done - len(self.failed)
        if waiting:
            parts.append(f"{waiting} with pending files")
        return f"{total} tenants: " + ", ".join(parts)


# --------------------------------------------------------------------------- applying

def _setup_sql(settings: Settings, roles: Sequence[str]) -> sql.Composed:
    """A new tenant in one round trip: schema, history table (before the default privileges: they never cover it),
    the runtime roles' usage, SELECT on the history, and default privileges for the tables to come."""
    schema, table = settings.history_parts
    target = sql.Identifier(settings.schema_name)
    parts = [sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(target)]
    if schema != settings.schema_name:
        parts.append(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
    parts += [sql.SQL("CREATE TABLE IF NOT EXISTS {} (id SERIAL PRIMARY KEY, filename VARCHAR(255) NOT NULL, "
                      "checksum VARCHAR(64) NOT NULL, module_name VARCHAR(100), applied_at TIMESTAMP NOT NULL "
                      "DEFAULT CURRENT_TIMESTAMP, applied_by VARCHAR(100) DEFAULT CURRENT_USER, "
                      "execution_time_ms INTEGER, version VARCHAR(255), UNIQUE(filename, module_name))").format(
                          settings.history_ident),
              sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (module_name, filename)").format(
                  sql.Identifier(f"idx_{table}_module"), settings.history_ident)]
    for role in roles:
        who = sql.Identifier(role)
        parts += [sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(target, who),
                  sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(schema), who),
                  sql.SQL("GRANT SELECT ON {} TO {}").format(settings.history_ident, who),
                  sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA {} GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES "
                          "TO {}").format(target, who),
                  sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA {} GRANT USAGE, SELECT ON SEQUENCES TO {}").format(
                      target, who)]
    return sql.SQL("; ").join(parts)


def _error_of(exc: Exception) -> Dict[str, object]:
    message = getattr(exc, "message", None) or str(exc)
    return {"file": getattr(exc, "file", None) or "", "line": getattr(exc, "line", None) or 0,
            "message": message.splitlines()[0] if message else type(exc).__name__}


def apply_tenant(conn: psycopg.Connection, fleet: FleetSettings, tenant: Tenant, files: Sequence[Migration],
                 state: TenantState, on_event: Sink) -> TenantResult:
    """One tenant: set-up if new, then each pending file with the single-schema engine's transaction."""
    settings = fleet.for_tenant(tenant)
    result = TenantResult(tenant.schema, tenant.database, new=not state.history_exists)
    store = HistoryStore(conn, settings)
    if not state.history_exists:
        if state.holds_objects:
            raise UnknownSchemaError(f"Tenant {tenant.key}: schema {tenant.schema} already holds objects of module "
                                 f"{settings.module_name!r} but has no history of it",
                                 remedy="baseline that schema (python -m llmemory_db.migrate baseline VERSION "
                                        f"--schema {tenant.schema} ...), or leave it out of the fleet")
        setup = _setup_sql(settings, fleet.runtime_roles)
        try:  # one round trip when the tenant's lock is free (it is, but for pgdbm on that tenant)
            conn.execute(sql.SQL("BEGIN; {}; {}; COMMIT").format(store.try_lock_sql(), setup))
        except psycopg.Error as exc:
            rollback(conn)
            if not marked(exc, BUSY_MARK):
                raise
            store.begin_locked()  # busy: wait for it (bounded), then the same set-up
            try:
                conn.execute(setup)
                conn.execute("COMMIT")
            except BaseException:
                rollback(conn)
                raise
    with_version = state.has_version or not state.history_exists
    recorded = dict(state.recorded)
    for migration in files:
        if migration.filename in recorded:
            continue
        done = executor.apply_file(store, migration, render(migration.sql, tenant.schema, migration.filename),
                                        result.applied, with_version, on_event)
        recorded[migration.filename] = migration.checksum
        if done:
            result.applied.append(migration.filename)
    result.recorded = len(recorded)
    result.last = max(recorded) if recorded else ""
    return result


def apply_fleet(fleet: FleetSettings, tenants: Sequence[Tenant], connect: Callable[[str], psycopg.Connection],
                on_event: Sink = ignore) -> FleetResult:
    """Apply the module to every tenant (see the module's docstring); ``connect(database key)`` opens a connection.

    Raises for what concerns the whole fleet before anything runs (bad files, an applied file edited); a failure
    in one tenant is recorded in its result (and, with on_error 'stop', no new tenant starts)."""
    started = time.monotonic()
    tenants = check_tenants(tenants)
    files = load(fleet.base.migrations_dir)
    checksums = {m.filename: m.checksum for m in files}
    probe = tenants[0].schema if tenants else "tenant"
    lint_pending(files, fleet.base.replace(schema=probe))  # once: a tenant's name changes no syntax
    objects = sorted(drift.created_by((render(m.sql, probe, m.filename) for m in files), probe))
    by_database: "OrderedDict[str, List[Tenant]]" = OrderedDict()
    for tenant in tenants:
        by_database.setdefault(tenant.database, []).append(tenant)
    states: Dict[str, TenantState] = {}
    for database, group in by_database.items():  # the coordinator: one connection at a time
        with connect(database) as conn:
            for schema, state in read_fleet(conn, fleet, group, objects).items():
                states[f"{database}/{schema}" if database else schema] = state
            if any(m.no_transaction for m in files):
                why = pooler(conn, fleet.base)
                if why:
                    raise PoolerError(f"No-transaction migrations cannot run through a transaction-pooling "
                                         f"endpoint ({why}); nothing was applied",
                                         remedy="apply over a direct connection, or declare pool mode 'session'")
    mismatched = sorted({(name, checksum, checksums[name]) for key, state in states.items()
                         for name, checksum in state.recorded.items() if name in checksums and
                         checksums[name] != checksum})
    if mismatched:
        first = mismatched[0]
        raise ChecksumMismatchError([first], fleet.base.module_name,
                                    f"{fleet.history_template} of every tenant that recorded it")
    results: "OrderedDict[str, TenantResult]" = OrderedDict()
    work: List[Tenant] = []
    for tenant in tenants:
        state = states[tenant.key]
        pending = [m.filename for m in files if m.filename not in state.recorded]
        recorded = [name for name in state.recorded if name in checksums]
        results[tenant.key] = TenantResult(tenant.schema, tenant.database, recorded=len(recorded),
                                           last=max(recorded) if recorded else "", pending=pending,
                                           new=not state.history_exists)
        if pending or not state.history_exists:
            work.append(tenant)
    skipped: List[str] = []
    stop = threading.Event()
    local = threading.local()
    opened: List[psycopg.Connection] = []
    lock = threading.Lock()

    def worker_conn(database: str) -> psycopg.Connection:
        current = getattr(local, "conn", None)
        if current is not None and getattr(local, "database", None) == database and not current.closed:
            return current
        if current is not None:
            current.close()
        local.conn, local.database = connect(database), database
        with lock:
            opened.append(local.conn)
        return local.conn

    def run(tenant: Tenant) -> None:
        if stop.is_set():
            skipped.append(tenant.key)
            return
        try:
            conn = worker_conn(tenant.database)
            result = apply_tenant(conn, fleet, tenant, files, states[tenant.key], on_event)
            result.pending = []
        except (MigrationError, psycopg.Error) as exc:
            result = results[tenant.key]
            result.error = _error_of(exc)
            on_event(Event("tenant", f"tenant {tenant.key}: failed: {result.error['message']}", "warning"))
            if fleet.on_error == "stop":
                stop.set()
            if isinstance(exc, psycopg.Error) and getattr(local, "conn", None) is not None:
                local.conn.close()
                local.conn = None
        results[tenant.key] = result

    canary, rest = work[:fleet.canary], work[fleet.canary:]
    waves = [canary] if canary else []
    size = fleet.wave_size or len(rest)
    waves += [rest[i:i + size] for i in range(0, len(rest), size)] if rest else []
    try:
        with ThreadPoolExecutor(max_workers=fleet.max_parallel, thread_name_prefix="tenant") as pool:
            for number, wave in enumerate(waves):
                if stop.is_set() or (number == 1 and canary and any(results[t.key].error for t in canary)):
                    skipped.extend(t.key for t in wave)
                    stop.set()
                    continue
                list(pool.map(run, wave))
                if number == 0 and canary:
                    failed = any(results[t.key].error for t in canary)
                    on_event(Event("canary", f"canary {', '.join(t.key for t in canary)}: "
                                   + ("failed: nothing else runs" if failed else "applied"),
                                   "warning" if failed else "info"))
    finally:
        for conn in opened:
            if not conn.closed:
                conn.close()
    return FleetResult(results, checksums, time.monotonic() - started, skipped)
