"""The operations layer for fleets (``MigratedTenants``): one module's migrations over many tenant schemas.

    preflight   lint and squawk's findings, once for the module (live sizes differ per tenant)
    diff        new, removed, pending, failed and drifted tenants between two deployments (pure)
    apply       drop removed tenants (drop_on_destroy), refuse drift, the fleet executor, each tenant's status
    refresh     every tenant's history, one query per database, and its drift
    destroy     keep the data (default), or drop every tenant's schema

``recorded`` is what the previous deployment recorded (its outputs): ``tenants`` (key -> status), ``applied``,
``objects`` and ``fingerprint`` (the fleet's canonical schema, tenant names factored out).
"""
from __future__ import annotations

import dataclasses
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import psycopg
from psycopg import sql

from . import drift, edits, ops, proof, risk
from .errors import EditedFileError, MigrationError, SchemaDriftError
from .events import Event, Sink, ignore
from .files import load
from .fleet import FleetResult, apply_fleet
from .fleet_settings import FleetSettings, Tenant, check_tenants
from .fleet_state import inspect_fleet, read_fleet
from .lint import lint_pending
from .objects import ManagedObjects
from .render import render
from .spelling import setting

Connect = Callable[[str], psycopg.Connection]  # a tenant's database key -> an open connection


def by_database(tenants: Iterable[Tenant]) -> "OrderedDict[str, List[Tenant]]":
    """Tenants grouped by their database key, in order of first appearance."""
    groups: "OrderedDict[str, List[Tenant]]" = OrderedDict()
    for tenant in tenants:
        groups.setdefault(tenant.database, []).append(tenant)
    return groups


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
        with connect(database) as conn:
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
          recorded: Optional[Mapping[str, Any]] = None, on_event: Sink = ignore) -> FleetDeployed:
    """Apply the module to every tenant. With ``recorded`` (an update): tenants removed from the list are dropped
    first when drop_on_destroy, and a tenant whose schema drifted refuses the update (unless accept_schema_drift)."""
    refusals = judge_edits(fleet, tenants, connect, on_event, record=True)
    if refusals:
        raise refusals[0]
    if recorded is not None:
        drop_removed(recorded, fleet, tenants, connect, on_event)
        drifted = drift_of(recorded, fleet, [t for t in tenants if t.key in (recorded.get("tenants") or {})], connect)
        if drifted and not fleet.base.accept_schema_drift:
            lines = [f"tenant {tenant}: {line}" for tenant, found in sorted(drifted.items()) for line in found]
            raise SchemaDriftError(fleet.base.replace(schema=None), lines)
    result = apply_fleet(fleet, tenants, connect, on_event=on_event)
    statuses, objects, canonical = _statuses(fleet, tenants, result, connect)
    on_event(Event("fleet", f"tenants {fleet.base.module_name}: {result.summary()} ({result.seconds:.1f}s)"))
    return FleetDeployed(result, statuses, objects, canonical,
                         {t.schema if not t.database else f"{t.database}/{t.schema}": t.error for t in result.failed})


def _statuses(fleet: FleetSettings, tenants: Sequence[Tenant], result: FleetResult, connect: Connect):
    """Per-tenant status for the outputs, and the fleet's canonical fingerprint (schema names factored out): a
    tenant's own fingerprint is kept only where it differs."""
    prints: Dict[str, str] = {}
    maps: Dict[str, Dict[str, str]] = {}
    for database, group in by_database(tenants).items():
        with connect(database) as conn:
            found = inspect_fleet(conn, fleet, group, ManagedObjects())
        prints.update({key_of(database, schema): p for schema, p in found.prints.items()})
        for print_, objects in found.maps.items():
            maps.setdefault(print_, objects)
    canonical = Counter(prints.values()).most_common(1)[0][0] if prints else ""
    files = sorted(result.checksums)
    statuses = {}
    for key, tenant in result.tenants.items():
        status = tenant.as_dict()
        if tenant.recorded != len(files) or tenant.last != (files[-1] if files else ""):
            status["files"] = [f for f in files if f not in tenant.pending][:tenant.recorded]
        if prints.get(key) and prints[key] != canonical and not tenant.error:
            status["fp"] = prints[key]
        statuses[key] = status
    return statuses, maps.get(canonical, {}), canonical


def drop_removed(recorded: Mapping[str, Any], fleet: FleetSettings, tenants: Sequence[Tenant], connect: Connect,
                 on_event: Sink = ignore) -> List[str]:
    """Tenants that the previous deployment had and this one lists no more: dropped with drop_on_destroy, else kept."""
    keep = {t.key for t in tenants}
    removed = [k for k in (recorded.get("tenants") or {}) if k not in keep]
    if not removed or not fleet.base.drop_on_destroy:
        return []
    for key in removed:
        database, _, schema = key.rpartition("/")
        with connect(database) as conn:
            _drop_schema(conn, schema)
        on_event(Event("tenant", f"tenants {fleet.base.module_name}: dropped removed tenant {key} (drop_on_destroy)"))
    return removed


def _drop_schema(conn: psycopg.Connection, schema: str) -> None:
    conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


# --------------------------------------------------------------------------- drift, refresh, destroy

def drift_of(recorded: Mapping[str, Any], fleet: FleetSettings, tenants: Sequence[Tenant],
             connect: Connect) -> Dict[str, List[str]]:
    """Tenants whose schema changed since the last update while their history did not: tenant -> drift lines."""
    statuses, canonical = recorded.get("tenants") or {}, recorded.get("fingerprint") or ""
    recorded_objects = recorded.get("objects") or {}
    # objects of files not applied yet that exist already are an interrupted run's or a conflict the apply
    # reports, not drift (as for a single schema)
    applied = set(recorded.get("applied") or ())
    pending = [m for m in load(fleet.base.migrations_dir) if m.filename not in applied]
    expected = drift.created_by((render(m.sql, "tenant", m.filename) for m in pending), "tenant")
    found: Dict[str, List[str]] = {}
    for database, group in by_database(tenants).items():
        with connect(database) as conn:
            states = read_fleet(conn, fleet, group, [])
            prints = inspect_fleet(conn, fleet, group, ManagedObjects())
        for schema, print_ in prints.prints.items():
            key = key_of(database, schema)
            status = statuses.get(key) or {}
            if status.get("error"):  # failed last time: its schema was never recorded as the fleet's
                continue
            moved_on = len(states[schema].recorded) != status.get("recorded")
            if not moved_on and print_ != status.get("fp", canonical):
                live = prints.maps.get(print_)
                lines = drift.without_expected(drift.compare(recorded_objects, live), expected) \
                    if live is not None else [f"fingerprint {{schema}}: changed ({print_})"]
                if lines:
                    found[key] = [line.replace("{schema}", schema) for line in lines]
    return found


def refresh(fleet: FleetSettings, tenants: Sequence[Tenant], connect: Connect,
            recorded: Mapping[str, Any]) -> Tuple[Dict[str, Dict[str, Any]], Dict[str, List[str]]]:
    """Every tenant's history back (one query per database) as its status, and the fleet's drift."""
    files = sorted(recorded.get("checksums") or {})
    statuses = dict(recorded.get("tenants") or {})
    for database, group in by_database(tenants).items():
        with connect(database) as conn:
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
    drifted = drift_of(recorded, fleet, tenants, connect) if recorded.get("objects") else {}
    return statuses, drifted


def destroy(fleet: FleetSettings, tenants: Sequence[Tenant], connect: Connect) -> Event:
    """Keep every tenant's schema and history (default), or drop them with drop_on_destroy."""
    if not fleet.base.drop_on_destroy:
        return Event("destroy", f"tenants {fleet.base.module_name}: kept the schemas and histories of {len(tenants)} "
                                f"tenant(s); set {setting('drop_on_destroy', True)} to drop them on destroy")
    for database, group in by_database(tenants).items():
        with connect(database) as conn:
            for tenant in group:
                _drop_schema(conn, tenant.schema)
    return Event("destroy", f"tenants {fleet.base.module_name}: dropped {len(tenants)} tenant schema(s)")
