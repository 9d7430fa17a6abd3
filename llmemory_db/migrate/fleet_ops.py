"""The operations layer for fleets (``MigratedTenants``): one module's migrations over many tenant schemas.

    preflight   lint and squawk's findings, once for the module (live sizes differ per tenant)
    diff        new, removed, pending, failed and drifted tenants between two deployments (pure)
    apply       drop removed tenants (drop_on_destroy), the fleet executor with the drift check in its read, each
                tenant's status (fingerprints digested in the database: fleet_prints)
    refresh     every tenant's history, one query per database, and its drift

Servers: ``server_of(database key)`` names a tenant's server (host:port); a server that cannot be reached fails
(apply) or skips (refresh) only its tenants, naming it, and is tried once per operation.
    destroy     keep the data (default), or drop every tenant's schema

``recorded`` is what the previous deployment recorded (its outputs): ``tenants`` (key -> status), ``applied``,
``objects`` and ``fingerprint`` (the fleet's canonical schema, tenant names factored out).
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import psycopg
from psycopg import sql

from . import drift, edits, ops, proof, risk
from .errors import EditedFileError, MigrationError
from .events import Event, Sink, ignore
from .files import load
from .fleet import FleetResult, apply_fleet
from .fleet_prints import (DriftCheck, Recorded, canonical, digests_of, drift_lines, objects_of,
                           representatives)
from .fleet_results import UNREACHABLE, error_of, remembering, server_error
from .fleet_settings import FleetSettings, Tenant, check_tenants
from .fleet_state import by_database, inspect_fleet, read_fleet
from .lint import lint_pending
from .objects import ManagedObjects
from .render import render
from .spelling import setting

Connect = Callable[[str], psycopg.Connection]  # a tenant's database key -> an open connection
ServerOf = Callable[[str], str]                 # a tenant's database key -> its server (host:port)


def key_of(database: str, schema: str) -> str:
    return Tenant(schema, database).key


# --------------------------------------------------------------------------- preflight, diff

def preflight(fleet: FleetSettings, tenants: Sequence[Tenant], recorded: Sequence[str],
              on_event: Sink = ignore, connect: Optional[Connect] = None) -> List[MigrationError]:
    """Valid tenants; the pending files (not in ``recorded``) linted, and squawk's findings on them, once for the
    module: a tenant's name changes no syntax, and live table sizes differ per tenant. With ``connect``, edited
    applied files are proven (:func:`judge_edits`). Returns the failures that refuse the deployment."""
    check_tenants(tenants)
    done = set(recorded)
    pending = [m for m in load(fleet.base.migrations_dir) if m.filename not in done]
    probe = fleet.base.replace(schema=tenants[0].schema if tenants else "tenant")
    rendered, warnings = lint_pending(pending, probe)
    for warning in warnings:
        on_event(Event("lint", str(warning), "warning", warning.file))
    if pending:
        for line in risk.analyze(pending, rendered, probe).lines():
            on_event(Event("risk", f"risk: {line}"))
    return judge_edits(fleet, tenants, connect, on_event) if connect is not None else []


def judge_edits(fleet: FleetSettings, tenants: Sequence[Tenant], connect: Connect, on_event: Sink = ignore,
                record: bool = False) -> List[MigrationError]:
    """Edited applied files in a fleet: proven once per distinct tenant schema (tenants whose fingerprints and
    edits are alike share one proof, on one of them), not per tenant; ``record``: record the accepted edits in
    every tenant's history (with its audit row). Returns the refusal (one, naming every group), if any."""
    files = load(fleet.base.migrations_dir)
    refused: List[Tuple[str, EditedFileError]] = []
    for database, group in by_database(tenants).items():
        try:
            conn = connect(database)
        except UNREACHABLE:  # its tenants fail in the apply, naming the server
            continue
        with conn:
            states = read_fleet(conn, fleet, group, [])
            edited = [t for t in group if proof.edited_files(files, states[t.schema].recorded)]
            if not edited:
                continue
            prints = inspect_fleet(conn, fleet, edited, ManagedObjects())
            alike: Dict[tuple, List[Tenant]] = {}
            for tenant in edited:
                changes = tuple(proof.edited_files(files, states[tenant.schema].recorded))
                alike.setdefault((prints.prints.get(tenant.schema), changes), []).append(tenant)
            for members in alike.values():
                first = members[0]
                names = ", ".join(t.key for t in members[:10]) + (", ..." if len(members) > 10 else "")
                verdict = ops.judge_edits(conn, fleet.for_tenant(first), files, states[first.schema].recorded,
                                          lambda e: on_event(Event(e.kind, f"{len(members)} tenant(s) ({names}): "
                                                                           f"{e.text}", e.severity, e.file)))
                if verdict.error is not None:
                    refused.append((f"{len(members)} tenant(s) ({names})", verdict.error))
                elif record and verdict.proof is not None:
                    for tenant in members:
                        own = dataclasses.replace(verdict.proof, edited=proof.edited_files(
                            files, states[tenant.schema].recorded))
                        edits.record(conn, fleet.for_tenant(tenant), own)
                    on_event(Event("edit", f"recorded the verified edit in {len(members)} tenant(s) ({names})"))
    if not refused:
        return []
    first = refused[0][1]
    files_edited: Dict[str, tuple] = {}  # one line per edited file, whatever each tenant recorded
    for _, error in refused:
        for mismatch in error.mismatches:
            files_edited.setdefault(mismatch[0], mismatch)
    verdicts = "\n  ".join(f"{who}: {error.message.rsplit(chr(10) + '  ', 1)[-1]}" for who, error in refused)
    return [EditedFileError(sorted(files_edited.values()), fleet.base.module_name,
                            f"{fleet.history_template} of every tenant", verdicts, remedy=first.remedy)]


def _tenant_files(status: Mapping[str, Any], applied: Sequence[str]) -> List[str]:
    return list(status["files"]) if "files" in status else list(applied)


def diff(olds: Mapping[str, Any], news: Mapping[str, Any], keys: Sequence[str],
         changed: List[str]) -> Tuple[List[str], List[str]]:
    """(changed property names, lines) between the previous deployment ``olds`` and the new inputs ``news``;
    ``changed``: the inputs that differ already. An applied file whose checksum changed raises."""
    old_sums, new_sums = olds.get("checksums") or {}, news.get("checksums") or {}
    changed = list(changed)
    lines: List[str] = []
    edited = [n for n in sorted(new_sums) if n in old_sums and old_sums[n] != new_sums[n]]
    if edited and all(olds.get(k) == news.get(k) for k in ("module_name", "history_template")):
        lines.append(f"edited after they were applied (proven at check, once per distinct tenant schema): "
                     f"{', '.join(edited)}")
    statuses: Dict[str, Any] = olds.get("tenants") or {}
    applied = olds.get("applied") or []
    current = list(keys)
    new = [k for k in current if k not in statuses]
    removed = sorted(k for k in statuses if k not in set(current))
    groups: Dict[tuple, List[str]] = {}
    for key in current:
        if key in statuses:
            done = set(_tenant_files(statuses[key], applied))
            waiting = tuple(n for n in sorted(new_sums) if n not in done)
            if waiting or statuses[key].get("error"):
                groups.setdefault(waiting, []).append(key)
    if new:
        changed.append("tenants")
        lines.append(f"{len(new)} new tenant(s) ({', '.join(new[:10])}{', ...' if len(new) > 10 else ''}): "
                     f"{len(new_sums)} file(s) each")
    for waiting, group in sorted(groups.items()):
        changed.append("tenants")
        failed = [k for k in group if statuses[k].get("error")]
        what = f"{len(waiting)} pending file(s) ({', '.join(waiting)})" if waiting else "failed last time"
        lines.append(f"{len(current)} tenants: {what} on {len(group)} tenant(s)"
                     + (f", retrying failed: {', '.join(failed[:10])}" if failed else ""))
    if removed:
        changed.append("tenants")
        fate = "dropped by this update (drop_on_destroy)" if news.get("drop_on_destroy") else \
            f"its schema and history are kept ({setting('drop_on_destroy')} is off)"
        lines.append(f"{len(removed)} tenant(s) removed ({', '.join(removed[:10])}): {fate}")
    for tenant, found in sorted((olds.get("drift") or {}).items()):
        changed.append("drift")
        lines.append(f"schema drift in tenant {tenant}:\n  " + "\n  ".join(found))
    return sorted(set(changed)), lines


# --------------------------------------------------------------------------- apply

@dataclass
class FleetDeployed:
    """A fleet after an update: what the outputs record."""

    result: FleetResult
    statuses: Dict[str, Dict[str, Any]]
    objects: Dict[str, str]
    fingerprint: str
    failed: Dict[str, Dict[str, Any]] = field(default_factory=dict)


def apply(fleet: FleetSettings, tenants: Sequence[Tenant], connect: Connect,
          recorded: Optional[Mapping[str, Any]] = None, on_event: Sink = ignore,
          server_of: Optional[ServerOf] = None) -> FleetDeployed:
    """Apply the module to every tenant. With ``recorded`` (an update): tenants removed from the list are dropped
    first when drop_on_destroy, and a tenant whose schema drifted refuses the update (unless accept_schema_drift):
    checked in the executor's read of each database, only for the tenants this update applies files to
    (:class:`fleet_prints.DriftCheck`). ``server_of(database key)`` names a database's server (the pools and the
    per-server summary); a server that cannot be reached fails only its tenants, tried once in the operation."""
    server_of = server_of or (lambda database: database)
    connect = remembering(connect, server_of)
    refusals = judge_edits(fleet, tenants, connect, on_event, record=True)
    if refusals:
        raise refusals[0]
    before = Recorded.of(recorded)
    check = None
    if recorded is not None:
        drop_removed(recorded, fleet, tenants, connect, on_event)
        check = DriftCheck(fleet, before, expected_objects(recorded, fleet))
    result = apply_fleet(fleet, tenants, connect, on_event=on_event, server_of=server_of, precheck=check)
    started = time.monotonic()
    statuses, objects, fingerprint = after_apply(fleet, tenants, result, connect, before, server_of, on_event)
    on_event(Event("fleet", f"{result.summary()} ({result.seconds:.1f}s)"))
    # bench/fleet.py reads this line
    on_event(Event("fleet", f"schema fingerprints: {check.checked if check else 0} checked "
                            f"before the apply, {sum(1 for s in statuses.values() if not s.get('error'))} recorded "
                            f"after it ({time.monotonic() - started:.1f}s)"))
    return FleetDeployed(result, statuses, objects, fingerprint,
                         {t.schema if not t.database else f"{t.database}/{t.schema}": t.error for t in result.failed})


def after_apply(fleet: FleetSettings, tenants: Sequence[Tenant], result: FleetResult, connect: Connect,
                recorded: Recorded, server_of: Optional[ServerOf] = None,
                on_event: Sink = ignore) -> Tuple[Dict[str, dict], Dict[str, str], str]:
    """The fleet's status after an apply: (per-tenant statuses for the outputs, the fleet's objects map, its
    fingerprint). Fingerprinted: the tenants this run applied files to or set up, and those whose print is not
    recorded (new to the fleet, failed last time, their history moved meanwhile); the others keep their recorded
    print. A tenant's own print is kept only where it differs from the fleet's (the most common one); a tenant
    whose server was not reached keeps what was recorded, with the error."""
    server_of = server_of or (lambda database: database)
    files = sorted(result.checksums)
    carried: Dict[str, str] = {}
    live_needed: List[Tenant] = []
    for tenant in tenants:
        outcome = result.tenants.get(tenant.key)
        if outcome is None or outcome.error:
            continue
        status = recorded.statuses.get(tenant.key) or {}
        if recorded.clean(tenant.key) and not outcome.applied and not outcome.new \
                and outcome.recorded == status.get("recorded"):
            carried[tenant.key] = recorded.print_of(tenant.key)
        else:
            live_needed.append(tenant)
    live, _ = digests_of(fleet, live_needed, connect, server_of, on_event)
    prints = {**carried, **live}
    fleet_print = canonical({t.key: prints[t.key] for t in tenants if t.key in prints})
    if fleet_print and fleet_print == recorded.canonical and recorded.objects:
        objects = dict(recorded.objects)
    else:
        holder = next((t for t in tenants if prints.get(t.key) == fleet_print and t.key in live), None) or \
            next((t for t in tenants if prints.get(t.key) == fleet_print), None)
        objects = {}
        if holder is not None:
            try:
                with connect(holder.database) as conn:
                    objects = objects_of(conn, fleet, [holder.schema])[holder.schema]
            except UNREACHABLE:
                objects = {}
    statuses: Dict[str, dict] = {}
    for key, tenant in result.tenants.items():
        before = recorded.statuses.get(key)
        if tenant.unread and before:  # its server was not reached: what was recorded stands, with the error
            had = _tenant_files(before, recorded.applied)
            status = {k: v for k, v in before.items() if k not in ("error", "fp", "files", "pending")}
            status.update(pending=[f for f in files if f not in set(had)], error=tenant.error)
            if had != files:
                status["files"] = had
            statuses[key] = status
            continue
        status = tenant.as_dict()
        if tenant.recorded != len(files) or tenant.last != (files[-1] if files else ""):
            status["files"] = [f for f in files if f not in tenant.pending][:tenant.recorded]
        if prints.get(key) and prints[key] != fleet_print and not tenant.error:
            status["fp"] = prints[key]
        statuses[key] = status
    return statuses, objects, fleet_print


def drop_removed(recorded: Mapping[str, Any], fleet: FleetSettings, tenants: Sequence[Tenant], connect: Connect,
                 on_event: Sink = ignore) -> List[str]:
    """Tenants that the previous deployment had and this one lists no more: dropped with drop_on_destroy, else kept."""
    keep = {t.key for t in tenants}
    removed = [k for k in (recorded.get("tenants") or {}) if k not in keep]
    if not removed or not fleet.base.drop_on_destroy:
        return []
    dropped = []
    for key in removed:
        database, _, schema = key.rpartition("/")
        try:
            conn = connect(database)
        except UNREACHABLE as exc:  # its data stays: the safe side
            on_event(Event("tenant", f"removed tenant {key} not dropped: "
                                     f"{error_of(exc)['message']}", "warning"))
            continue
        with conn:
            _drop_schema(conn, schema)
        dropped.append(key)
        on_event(Event("tenant", f"dropped removed tenant {key} (drop_on_destroy)"))
    return dropped


def _drop_schema(conn: psycopg.Connection, schema: str) -> None:
    conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


# --------------------------------------------------------------------------- drift, refresh, destroy

def expected_objects(recorded: Mapping[str, Any], fleet: FleetSettings) -> set:
    """Objects that files not applied at the last update create: an interrupted run's or a conflict the apply
    reports when they exist already, not drift (as for a single schema)."""
    applied = set(recorded.get("applied") or ())
    pending = [m for m in load(fleet.base.migrations_dir) if m.filename not in applied]
    return drift.created_by((render(m.sql, "tenant", m.filename) for m in pending), "tenant")


def drift_of(recorded: Mapping[str, Any], fleet: FleetSettings, tenants: Sequence[Tenant], connect: Connect,
             server_of: Optional[ServerOf] = None, on_event: Sink = ignore) -> Dict[str, List[str]]:
    """Drift of every recorded tenant whose history did not move (a refresh: ``pulumi refresh``, ``preview
    --refresh``): ``{tenant key: lines}``; one history read and one digest query per database, the objects maps
    only for the distinct fingerprints that differ. Servers that cannot be reached are skipped (said)."""
    server_of = server_of or (lambda database: database)
    before, expected = Recorded.of(recorded), expected_objects(recorded, fleet)
    found: Dict[str, List[str]] = {}
    candidates = [t for t in tenants if before.clean(t.key)]
    moved: set = set()
    down: set = set()
    for database, group in by_database(candidates).items():
        if server_of(database) in down:
            continue
        try:
            with connect(database) as conn:
                states = read_fleet(conn, fleet, group, [])
        except UNREACHABLE as exc:
            down.add(server_of(database))
            on_event(Event("server", f"{server_error(server_of(database), exc)}: its tenants' drift was not read",
                           "warning"))
            continue
        moved |= {key_of(database, s) for s, state in states.items()
                  if len(state.recorded) != before.statuses[key_of(database, s)].get("recorded")}
    check = [t for t in candidates if t.key not in moved and server_of(t.database) not in down]
    prints, _ = digests_of(fleet, check, connect, server_of, on_event)
    differ = {key: p for key, p in prints.items() if p != before.print_of(key)}
    by_tenant = {t.key: t for t in check}
    for print_, key in representatives(differ).items():
        tenant = by_tenant[key]
        with connect(tenant.database) as conn:
            live = objects_of(conn, fleet, [tenant.schema])[tenant.schema]
        lines = drift_lines(live, before, expected)
        for other, p in differ.items():
            if p == print_ and lines:
                schema = by_tenant[other].schema
                found[other] = [line.replace("{schema}", schema) for line in lines]
    return found


def refresh(fleet: FleetSettings, tenants: Sequence[Tenant], connect: Connect, recorded: Mapping[str, Any],
            server_of: Optional[ServerOf] = None, on_event: Sink = ignore
            ) -> Tuple[Dict[str, Dict[str, Any]], Dict[str, List[str]]]:
    """Every tenant's history back (one query per database) as its status, and the fleet's drift. The tenants of
    a server that cannot be reached keep their recorded status (said)."""
    server_of = server_of or (lambda database: database)
    connect = remembering(connect, server_of)
    files = sorted(recorded.get("checksums") or {})
    statuses = dict(recorded.get("tenants") or {})
    for database, group in by_database(tenants).items():
        try:
            conn = connect(database)
        except UNREACHABLE as exc:  # its tenants keep their recorded status
            on_event(Event("server", f"{server_error(server_of(database), exc)}: "
                                     f"{len(group)} tenant(s) not read", "warning"))
            continue
        with conn:
            for schema, state in read_fleet(conn, fleet, group, []).items():
                key = key_of(database, schema)
                names = sorted(n for n in state.recorded if n in set(files))
                status = dict(statuses.get(key) or {})
                status.update(recorded=len(names), last=names[-1] if names else "",
                              pending=[n for n in files if n not in set(names)])
                status.pop("files", None)
                if names != files:
                    status["files"] = names
                statuses[key] = status
    drifted = drift_of(recorded, fleet, tenants, connect, server_of, on_event) if recorded.get("objects") else {}
    return statuses, drifted


def destroy(fleet: FleetSettings, tenants: Sequence[Tenant], connect: Connect) -> Event:
    """Keep every tenant's schema and history (default), or drop them with drop_on_destroy."""
    if not fleet.base.drop_on_destroy:
        return Event("destroy", f"kept the schemas and histories of {len(tenants)} "
                                f"tenant(s); set {setting('drop_on_destroy', True)} to drop them on destroy")
    for database, group in by_database(tenants).items():
        with connect(database) as conn:
            for tenant in group:
                _drop_schema(conn, tenant.schema)
    return Event("destroy", f"dropped {len(tenants)} tenant schema(s)")
