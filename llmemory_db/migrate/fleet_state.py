"""What a fleet's tenants hold: every tenant's history read in one query per database, and every tenant's schema
fingerprint (its schema name factored out) streamed schema by schema."""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from collections import OrderedDict
from typing import Dict, Iterable, List, Optional, Sequence

import psycopg
from psycopg import sql

from . import drift
from .fleet_settings import SCHEMA_TOKEN, FleetSettings, Tenant


# --------------------------------------------------------------------------- reading the fleet

def by_database(tenants: Iterable[Tenant]) -> "OrderedDict[str, List[Tenant]]":
    """Tenants grouped by their database key, in order of first appearance."""
    groups: "OrderedDict[str, List[Tenant]]" = OrderedDict()
    for tenant in tenants:
        groups.setdefault(tenant.database, []).append(tenant)
    return groups


_HISTORIES = """
WITH t AS (SELECT * FROM unnest(%(schemas)s::text[], %(histories)s::text[], %(modules)s::text[])
                                AS t(schema, history, module))
SELECT t.schema, to_regclass(t.history) IS NOT NULL,
       EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = to_regclass(t.history) AND a.attname = 'version'
               AND NOT a.attisdropped),
       EXISTS (SELECT 1 FROM pg_namespace n WHERE n.nspname = t.schema),
       EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = t.schema AND c.relname = ANY(%(objects)s))
FROM t
"""


@dataclass
class TenantState:
    history_exists: bool
    has_version: bool
    schema_exists: bool
    holds_objects: bool                 # the module's objects are in the schema already
    recorded: Dict[str, str] = field(default_factory=dict)


def read_fleet(conn: psycopg.Connection, fleet: FleetSettings, tenants: Sequence[Tenant],
               objects: Sequence[str]) -> Dict[str, TenantState]:
    """Every tenant's history, and what is there already, in two queries for the whole database."""
    if not tenants:
        return {}
    settings = [fleet.for_tenant(t) for t in tenants]
    rows = conn.execute(_HISTORIES, {"schemas": [t.schema for t in tenants],
                                     "histories": [s.history_ident.as_string(conn) for s in settings],
                                     "modules": [s.module_name for s in settings],
                                     "objects": list(objects)}).fetchall()
    states = {schema: TenantState(bool(h), bool(v), bool(e), bool(o)) for schema, h, v, e, o in rows}
    existing = [(t, s) for t, s in zip(tenants, settings) if states[t.schema].history_exists]
    if existing:
        union = sql.SQL(" UNION ALL ").join(
            sql.SQL("SELECT {}, filename, checksum FROM {} WHERE module_name = {} OR module_name IS NULL").format(
                sql.Literal(t.schema), s.history_ident, sql.Literal(s.module_name)) for t, s in existing)
        for schema, filename, checksum in conn.execute(union).fetchall():
            states[schema].recorded[filename] = checksum
    return states


# --------------------------------------------------------------------------- drift of a fleet

_TOKEN = "\x00schema\x00"


MAX_DISTINCT = 32  # objects maps kept, one per distinct fingerprint: a fleet's tenants are alike


@dataclass
class FleetPrints:
    """Every tenant's fingerprint (its schema name factored out), and the objects behind each distinct one."""

    prints: Dict[str, str] = field(default_factory=dict)            # schema -> fingerprint
    maps: Dict[str, Dict[str, str]] = field(default_factory=dict)   # fingerprint -> its objects (MAX_DISTINCT)


def inspect_fleet(conn: psycopg.Connection, fleet: FleetSettings, tenants: Sequence[Tenant],
                  managed) -> FleetPrints:
    """Each tenant's fingerprint in one catalog query, streamed schema by schema: memory holds one tenant's
    objects and one map per distinct fingerprint, whatever the number of tenants."""
    found = FleetPrints()
    extensions: Dict[str, str] = {}
    current: Optional[str] = None
    objects: Dict[str, str] = {}
    pattern: Optional["re.Pattern[str]"] = None

    def finish(schema: Optional[str], objects: Dict[str, str]) -> None:
        if schema is None:
            return
        print_ = fingerprint(objects)
        found.prints[schema] = print_
        if print_ not in found.maps and len(found.maps) < MAX_DISTINCT:
            found.maps[print_] = dict(sorted(objects.items()))

    history = fleet.for_tenant(tenants[0]) if tenants else None
    exclude = [history.history_parts[1], history.inflight_parts[1], history.edits_parts[1]] if history else []
    for schema, kind, name, definition in drift.inspect_stream(conn, [t.schema for t in tenants], managed,
                                                               fleet.base.extensions, exclude):
        if schema is None:  # an extension (database-wide): part of every tenant's fingerprint
            extensions[f"{kind} {name}"] = drift.digest(definition or "")
            continue
        if schema != current:
            finish(current, objects)
            current, objects = schema, dict(extensions)
            pattern = re.compile(r'(?<![\w$])"?' + re.escape(schema) + r'"?(?=\.)')
        objects[f"{kind} {SCHEMA_TOKEN}.{name}"] = drift.digest(pattern.sub(_TOKEN, definition or ""))
    finish(current, objects)
    for tenant in tenants:  # a schema without any object yet
        if tenant.schema not in found.prints:
            finish(tenant.schema, dict(extensions))
    return found


def fingerprint(objects: Dict[str, str]) -> str:
    return hashlib.sha256("\n".join(f"{k}={v}" for k, v in sorted(objects.items())).encode()).hexdigest()[:16]
