"""Fleets: one module's migrations over many tenant schemas, possibly on several databases, in one run.

The per-tenant work is the single-schema engine's (the same one-round-trip transaction per file, the same
history rows, pgdbm's layout ``<tenant>.schema_migrations`` by default); what a fleet adds:

- **one read per database** of every tenant's history (and of which new tenants' schemas hold the module's objects
  already), never one per tenant;
- **a bounded pool per server**: at most ``max_parallel`` worker connections on each server (plus the one
  coordinator connection), the servers at once, at most ``max_parallel_total`` tenants migrating over all of them;
- **a canary** (the first ``canary`` tenants that have work) goes first, alone; if it fails nothing else runs;
- **waves** of ``wave_size`` tenants (default: all the rest) after it, each server's on its own (a slow server
  does not hold the others'); ``on_error``: ``stop`` (finish the tenants running, start no new ones) or
  ``continue``;
- **a server that cannot be reached** fails only its tenants (naming it), and is not tried again in the run;
- **a new tenant in one transaction and one round trip** where its files allow it (``fleet_batch``);
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
from typing import Callable, Dict, List, Optional, Sequence

import psycopg
from psycopg import sql

from . import drift, executor, fleet_batch
from .connection import pooler
from .errors import ChecksumMismatchError, MigrationError, PoolerError, UnknownSchemaError
from .events import Event, Sink, ignore
from .files import Migration, load
from .fleet_results import (FLEET_CONNECTION, UNREACHABLE, FleetResult, TenantResult, error_of,  # noqa: F401
                            server_error)
from .fleet_settings import FleetSettings, Tenant, check_tenants
from .fleet_state import TenantState, by_database, read_fleet
from .history import BUSY_MARK, HistoryStore, marked, rollback
from .lint import lint_pending
from .render import render
from .settings import Settings

Connect = Callable[[str], psycopg.Connection]  # a tenant's database key -> an open connection


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


def apply_tenant(conn: psycopg.Connection, fleet: FleetSettings, tenant: Tenant, files: Sequence[Migration],
                 state: TenantState, on_event: Sink, batch: bool = False) -> TenantResult:
    """One tenant: set-up if new, then each pending file with the single-schema engine's transaction; a new
    tenant with ``batch`` (its files may share a transaction: ``fleet_batch.batchable``) first tries all of it in
    one transaction and one round trip, and falls back to this on anything unexpected."""
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
        pending = [m for m in files if m.filename not in state.recorded]
        done = fleet_batch.apply_new_tenant(store, setup, pending, tenant.schema, on_event) \
            if batch and pending else None
        if done is not None:
            recorded = set(state.recorded) | set(done)
            result.applied, result.recorded, result.last = done, len(recorded), max(recorded)
            return result
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
    # a history made by this set-up has the version column; one that pgdbm made meanwhile (its set-up comes before
    # its lock) may not: a new tenant's is read back
    with_version = state.has_version if state.history_exists else store.has_version_column()
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


def _read(fleet: FleetSettings, tenants: Sequence[Tenant], files: Sequence[Migration], objects: Sequence[str],
          connect: Connect, server_of: Callable[[str], str], precheck, down: Dict[str, str],
          on_event: Sink) -> Dict[str, TenantState]:
    """Every database's histories, one connection at a time (the coordinator), with the precheck on the same
    connection; a server that cannot be reached goes into ``down`` (its tenants have no state)."""
    states: Dict[str, TenantState] = {}
    for database, group in by_database(tenants).items():
        server = server_of(database)
        if server in down:
            continue
        try:
            with connect(database) as conn:
                read = read_fleet(conn, fleet, group, objects)
                for schema, state in read.items():
                    states[Tenant(schema, database).key] = state
                if precheck is not None:
                    precheck(conn, database, group, read, [m.filename for m in files])
                if any(m.no_transaction for m in files):
                    why = pooler(conn, fleet.base)
                    if why:
                        raise PoolerError(f"No-transaction migrations cannot run through a transaction-pooling "
                                          f"endpoint ({why}); nothing was applied",
                                          remedy="apply over a direct connection, or declare pool mode 'session'")
        except UNREACHABLE as exc:
            down[server] = server_error(server, exc)
            on_event(Event("server", f"{down[server]}: its tenants are marked failed, the other servers go on",
                           "warning"))
    if precheck is not None and hasattr(precheck, "finish"):
        precheck.finish()
    return states


def apply_fleet(fleet: FleetSettings, tenants: Sequence[Tenant], connect: Connect, on_event: Sink = ignore,
                server_of: Optional[Callable[[str], str]] = None, precheck=None) -> FleetResult:
    """Apply the module to every tenant (see the module's docstring); ``connect(database key)`` opens a connection,
    ``server_of(database key)`` names the server a database is on (default: each database its own).

    Tenants are grouped per server: each server has its own pool of at most ``max_parallel`` connections and
    runs its waves on its own (a slow server does not hold the others'), all servers at once, at most
    ``max_parallel_total`` tenants migrating at a time over all of them (0: no bound beyond each server's pool).
    A server that cannot be reached, before or during the run, marks its tenants failed (naming the server) and
    is not tried again in this run; the others go on under ``on_error="continue"``.

    ``precheck(conn, database, tenants, states, filenames)`` is called as each database's histories are read, on
    the same connection, and ``precheck.finish()`` once they all are, before anything is applied (the update's
    drift check: ``fleet_prints.DriftCheck``); either may raise to refuse the run.

    Raises for what concerns the whole fleet before anything runs (bad files, an applied file edited); a failure
    in one tenant is recorded in its result (and, with on_error 'stop', no new tenant starts)."""
    started = time.monotonic()
    tenants = check_tenants(tenants)
    files = load(fleet.base.migrations_dir)
    checksums = {m.filename: m.checksum for m in files}
    probe = tenants[0].schema if tenants else "tenant"
    lint_pending(files, fleet.base.replace(schema=probe))  # once: a tenant's name changes no syntax
    objects = sorted(drift.created_by((render(m.sql, probe, m.filename) for m in files), probe))
    batch = fleet_batch.batchable(files, probe)
    server_of = server_of or (lambda database: database)
    down: Dict[str, str] = {}  # server -> why it cannot be used (this run does not try it again)
    states = _read(fleet, tenants, files, objects, connect, server_of, precheck, down, on_event)
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
        server = server_of(tenant.database)
        state = states.get(tenant.key)
        if state is None:  # its server is down
            results[tenant.key] = TenantResult(tenant.schema, tenant.database, server=server,
                                               pending=[m.filename for m in files], unread=True,
                                               error={"file": "", "line": 0, "message": down[server]})
            continue
        pending = [m.filename for m in files if m.filename not in state.recorded]
        recorded = [name for name in state.recorded if name in checksums]
        results[tenant.key] = TenantResult(tenant.schema, tenant.database, recorded=len(recorded),
                                           last=max(recorded) if recorded else "", pending=pending,
                                           new=not state.history_exists, server=server)
        if pending or not state.history_exists:
            work.append(tenant)
    run = _Run(fleet, files, states, results, connect, server_of, down, batch, on_event)
    run.all(work)
    return FleetResult(results, checksums, time.monotonic() - started, run.skipped)


class _Run:
    """The work of one apply_fleet: the canary alone, then each server's waves with a pool of its own (all the
    servers at once), at most ``max_parallel_total`` tenants at a time over all of them."""

    def __init__(self, fleet: FleetSettings, files: Sequence[Migration], states: Dict[str, TenantState],
                 results: "OrderedDict[str, TenantResult]", connect: Connect, server_of: Callable[[str], str],
                 down: Dict[str, str], batch: bool, on_event: Sink) -> None:
        self.fleet, self.files, self.states, self.results = fleet, files, states, results
        self.connect, self.server_of, self.down, self.batch, self.on_event = connect, server_of, down, batch, on_event
        self.skipped: List[str] = []
        self.stop = threading.Event()
        if down and fleet.on_error == "stop":
            self.stop.set()
        self.local = threading.local()
        self.opened: List[psycopg.Connection] = []
        self.guard = threading.Lock()
        self.total = threading.BoundedSemaphore(fleet.max_parallel_total) if fleet.max_parallel_total else None

    def worker_conn(self, database: str) -> psycopg.Connection:
        local = self.local
        current = getattr(local, "conn", None)
        if current is not None and getattr(local, "database", None) == database and not current.closed:
            return current
        if current is not None:
            current.close()
        local.conn, local.database = self.connect(database), database
        with self.guard:
            self.opened.append(local.conn)
        return local.conn

    def fail(self, tenant: Tenant, error: Dict[str, object]) -> None:
        self.results[tenant.key].error = error
        self.on_event(Event("tenant", f"tenant {tenant.key}: failed: {error['message']}", "warning"))
        if self.fleet.on_error == "stop":
            self.stop.set()

    def run(self, tenant: Tenant) -> None:
        if self.stop.is_set():
            with self.guard:
                self.skipped.append(tenant.key)
            return
        server = self.server_of(tenant.database)
        if server in self.down:
            self.fail(tenant, {"file": "", "line": 0, "message": self.down[server]})
            return
        if self.total is not None:
            self.total.acquire()
        try:
            try:
                conn = self.worker_conn(tenant.database)
            except UNREACHABLE as exc:
                self.local.conn = None
                with self.guard:
                    self.down.setdefault(server, server_error(server, exc))
                self.fail(tenant, {"file": "", "line": 0, "message": self.down[server]})
                return
            try:
                result = apply_tenant(conn, self.fleet, tenant, self.files, self.states[tenant.key], self.on_event,
                                     self.batch)
                result.pending, result.server = [], server
                self.results[tenant.key] = result
            except (MigrationError, psycopg.Error) as exc:
                error = error_of(exc)
                if isinstance(exc, psycopg.Error) and (conn.broken or conn.closed):
                    error["message"] = f"server {server or FLEET_CONNECTION}: {error['message']}"
                self.fail(tenant, error)
                if isinstance(exc, psycopg.Error):
                    conn.close()
                    self.local.conn = None
        finally:
            if self.total is not None:
                self.total.release()

    def close_opened(self) -> None:
        with self.guard:
            for conn in self.opened:
                if not conn.closed:
                    conn.close()
            self.opened.clear()

    def server_waves(self, group: List[Tenant]) -> None:
        """One server's waves, with its own pool (the other servers' do not wait for them)."""
        size = self.fleet.wave_size
        waves = [group[i:i + size] for i in range(0, len(group), size)] if size else [group]
        with ThreadPoolExecutor(max_workers=min(self.fleet.max_parallel, len(group)), thread_name_prefix="tenant") \
                as pool:
            for wave in waves:
                list(pool.map(self.run, wave))

    def all(self, work: List[Tenant]) -> None:
        canary, rest = work[:self.fleet.canary], work[self.fleet.canary:]
        per_server: "OrderedDict[str, List[Tenant]]" = OrderedDict()
        for tenant in rest:
            per_server.setdefault(self.server_of(tenant.database), []).append(tenant)
        try:
            if canary:
                with ThreadPoolExecutor(max_workers=min(self.fleet.max_parallel, len(canary)),
                                        thread_name_prefix="canary") as pool:
                    list(pool.map(self.run, canary))
                self.close_opened()  # the canary's connections: the servers' pools open their own
                failed = any(self.results[t.key].error for t in canary)
                self.on_event(Event("canary", f"canary {', '.join(t.key for t in canary)}: "
                                    + ("failed: nothing else runs" if failed else "applied"),
                                    "warning" if failed else "info"))
                if failed:
                    self.stop.set()
            if per_server:
                with ThreadPoolExecutor(max_workers=len(per_server), thread_name_prefix="server") as servers:
                    list(servers.map(self.server_waves, per_server.values()))
        finally:
            self.close_opened()
