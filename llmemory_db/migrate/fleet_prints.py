"""A fleet's schema fingerprints, digested in the database: one row per tenant schema, not its catalog rows.

:func:`digests` returns ``{schema: fingerprint}`` in one query per database; :func:`objects_of` returns the
objects map (``{"<kind> {schema}.<name>": "<digest>"}``) of a few schemas, asked for only where a fingerprint
differs (drift lines) and for the one canonical map the fleet records.

Both are byte for byte what :func:`llmemory_db.migrate.fleet_state.inspect_fleet` computes in Python from the same
catalog rows (``drift.OBJECTS_QUERY``, the objects query of every drift check): the same objects and exclusions
(the engine's history, in-flight and edits tables and the history's sequence, extension members, ``llmemory_db_*``
functions), the database's extensions in every schema's map, each definition's own schema name replaced by the
same token (``\\x00schema\\x00``, matched as Python's ``(?<![\\w$])"?<schema>"?(?=\\.)``), SHA-256 cut to 16 hex
digits for each object and for the sorted ``key=digest`` lines of a schema. So fingerprints recorded in a stack's
state by the Python code stay comparable (``tests/db/test_fleet_prints.py`` proves the equality).

How the schema name is factored out without compiling a regular expression per tenant (PostgreSQL keeps 32
compiled patterns; a thousand tenants' rows would recompile one per row): the schema name is first replaced by
``\\x01`` (``replace``: no pattern), then ONE constant pattern, ``(?<![\\w$\\x01])"?\\x01"?(?=\\.)``, marks the
qualifying occurrences with ``\\x02``, the others get their name back, and the text is hashed as bytes with the
NUL token between its pieces (PostgreSQL text cannot hold NUL). Every occurrence that Python's pattern matches is
found by ``replace`` (a schema name is word characters only, and a match is preceded by a non-word character, so
no earlier occurrence can overlap it), and ``\\x01`` in the look-behind keeps ``t1t1.x`` unmatched as in Python.
A definition that contains ``\\x01`` or ``\\x02`` itself takes the exact per-schema pattern instead. The one
divergence: a non-ASCII letter right before a schema name is a word character for Python, not for PostgreSQL
in a C-locale database.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Mapping, Sequence, Tuple

import psycopg

from . import drift
from .errors import SchemaDriftError
from .events import Event, Sink, ignore
from .fleet_results import UNREACHABLE, server_error
from .fleet_settings import FleetSettings, Tenant
from .fleet_state import TenantState

# a definition's bytes with the schema factored out (see the module's docstring); d: the definition, s: its schema
_NORMALIZED = r"""
CASE WHEN strpos(d, s) = 0 THEN convert_to(d, 'UTF8')
     WHEN strpos(d, chr(1)) = 0 AND strpos(d, chr(2)) = 0 THEN
       (SELECT string_agg(convert_to(u.piece, 'UTF8'), '\x00736368656d6100'::bytea ORDER BY u.i)
        FROM string_to_table(replace(regexp_replace(replace(d, s, chr(1)), '(?<![\w$\u0001])"?\u0001"?(?=\.)',
                                                    chr(2), 'g'), chr(1), s), chr(2)) WITH ORDINALITY AS u(piece, i))
     ELSE (SELECT string_agg(convert_to(u.piece, 'UTF8'), '\x00736368656d6100'::bytea ORDER BY u.i)
           FROM unnest(regexp_split_to_array(d, '(?<![\w$])"?' || s || '"?(?=\.)')) WITH ORDINALITY AS u(piece, i))
END"""

_KEYED = f"""
WITH objs(s, kind, name, d) AS (
{drift.OBJECTS_QUERY}
), keyed AS (
  SELECT s, kind || ' {{schema}}.' || name AS key,
         left(encode(sha256({_NORMALIZED}), 'hex'), 16) AS digest
  FROM (SELECT s, kind, name, coalesce(d, '') AS d FROM objs) o
), ext AS (
  SELECT 'extension ' || e.extname AS key, left(encode(sha256(convert_to(e.extversion, 'UTF8')), 'hex'), 16)
         AS digest
  FROM pg_extension e WHERE e.extname = ANY(%(extensions)s)
), every AS (
  SELECT s, key, digest FROM keyed
  UNION ALL
  SELECT t.s, ext.key, ext.digest FROM unnest(%(schemas)s::text[]) AS t(s) CROSS JOIN ext
)"""

_DIGESTS = _KEYED + """
SELECT t.s, left(encode(sha256(convert_to(coalesce(string_agg(e.key || '=' || e.digest, E'\\n'
                                                              ORDER BY e.key COLLATE "C"), ''), 'UTF8')), 'hex'), 16)
FROM unnest(%(schemas)s::text[]) AS t(s) LEFT JOIN every e ON e.s = t.s
GROUP BY t.s
"""

_OBJECTS = _KEYED + """
SELECT s, key, digest FROM every ORDER BY s, key COLLATE "C"
"""


def _params(fleet: FleetSettings, schemas: Sequence[str]) -> dict:
    history = fleet.for_tenant(Tenant(schemas[0] if schemas else "tenant"))
    # the engine's tables of a tenant, by name (the history template puts them in every tenant alike)
    exclude = [history.history_parts[1], history.inflight_parts[1], history.edits_parts[1]]
    return {"schemas": list(schemas), "all": True, "names": [], "functions": [], "exclude": exclude,
            "extensions": list(fleet.base.extensions)}


MANY = 20  # schemas from which a query reads whole catalogs: hash joins, whatever the catalogs' statistics


def _rows(conn: psycopg.Connection, query: str, params: dict) -> List[tuple]:
    """Run a digest query; over many schemas without nested loops and without JIT (SET LOCAL, in a transaction of
    its own). Right after a large ``up`` the catalogs' statistics are those of an empty database, and the planner
    chose nested loops over pg_depend for each of 70,000 relations: 2.9 s of server CPU for 1,000 tenants against
    1.7 s with hash joins (measured on a fresh database, autovacuum off); JIT would compile a query of that cost
    for nothing."""
    if len(params["schemas"]) < MANY:
        return conn.execute(query, params).fetchall()
    with conn.transaction():
        conn.execute("SET LOCAL enable_nestloop = off; SET LOCAL jit = off")
        return conn.execute(query, params).fetchall()


def digests(conn: psycopg.Connection, fleet: FleetSettings, tenants: Sequence[Tenant]) -> Dict[str, str]:
    """``{schema: fingerprint}`` of ``tenants`` (all on ``conn``'s database), one query, one row per tenant; a
    schema that does not exist (or holds nothing) has the fingerprint of the database's extensions alone."""
    schemas = [t.schema for t in tenants]
    if not schemas:
        return {}
    return dict(_rows(conn, _DIGESTS, _params(fleet, schemas)))


def objects_of(conn: psycopg.Connection, fleet: FleetSettings, schemas: Sequence[str]) -> Dict[str, Dict[str, str]]:
    """The objects maps of ``schemas`` (``{schema: {key: digest}}``, keys sorted), for drift lines and the fleet's
    recorded map: asked for a few schemas, where a fingerprint differs."""
    found: Dict[str, Dict[str, str]] = {schema: {} for schema in schemas}
    if not schemas:
        return found
    for schema, key, digest in _rows(conn, _OBJECTS, _params(fleet, list(schemas))):
        found[schema][key] = digest
    return found


def canonical(prints: Dict[str, str]) -> str:
    """The fleet's fingerprint: the one most tenants have ('' without tenants); ties go to the first seen."""
    counts: Dict[str, int] = {}
    for print_ in prints.values():
        counts[print_] = counts.get(print_, 0) + 1
    return max(counts, key=counts.get) if counts else ""


def representatives(prints: Dict[str, str]) -> Dict[str, str]:
    """One schema per distinct fingerprint (the first seen): whose objects map stands for it."""
    out: Dict[str, str] = {}
    for schema, print_ in prints.items():
        out.setdefault(print_, schema)
    return out

# --------------------------------------------------------------------------- the fleet's drift and status

Connect = Callable[[str], psycopg.Connection]


@dataclass
class Recorded:
    """What a fleet's last update recorded (its outputs): per tenant its status (``recorded`` files, ``fp`` where
    its fingerprint differs from the fleet's, ``error`` when it failed), the fleet's fingerprint and that
    fingerprint's objects map, and the files the fleet had."""

    statuses: Dict[str, dict] = field(default_factory=dict)
    canonical: str = ""
    objects: Dict[str, str] = field(default_factory=dict)
    applied: Sequence[str] = ()

    def print_of(self, key: str) -> str:
        status = self.statuses.get(key) or {}
        return status.get("fp", self.canonical)

    def clean(self, key: str) -> bool:
        """Recorded, and its print too (a tenant that failed last time never had its schema recorded)."""
        status = self.statuses.get(key)
        return status is not None and not status.get("error") and bool(self.canonical)

    @classmethod
    def of(cls, outputs: Mapping[str, Any] | None) -> "Recorded":
        """What the previous deployment's outputs recorded (none: a first deployment)."""
        if not outputs:
            return cls()
        return cls(statuses=dict(outputs.get("tenants") or {}), canonical=outputs.get("fingerprint") or "",
                   objects=dict(outputs.get("objects") or {}), applied=list(outputs.get("applied") or ()))


def _groups(tenants: Sequence[Tenant]) -> Dict[str, List[Tenant]]:
    out: Dict[str, List[Tenant]] = {}
    for tenant in tenants:
        out.setdefault(tenant.database, []).append(tenant)
    return out


def _key(database: str, schema: str) -> str:
    return Tenant(schema, database).key


def digests_of(fleet: FleetSettings, tenants: Sequence[Tenant], connect: Connect,
               server_of: Callable[[str], str] = lambda database: database,
               on_event: Sink = ignore) -> Tuple[Dict[str, str], Dict[str, str]]:
    """Fingerprints of ``tenants`` on every database: ``({tenant key: fingerprint}, {server: why unreachable})``.

    One query per database (each reads the whole catalog once: splitting a database's tenants over several
    queries multiplies that, measured 1.9 s of server CPU for 1,000 tenants in one query against 4.1 s in four),
    the databases of one server on at most ``fleet.max_parallel`` connections at once, every server at once. A
    server that cannot be reached is reported, not raised: its tenants have no fingerprint."""
    jobs = list(_groups(tenants).items())
    prints: Dict[str, str] = {}
    down: Dict[str, str] = {}
    if not jobs:
        return prints, down
    per_server: Dict[str, list] = {}
    for job in jobs:
        per_server.setdefault(server_of(job[0]), []).append(job)

    def run_server(item) -> None:
        server, server_jobs = item

        def run(job) -> None:
            database, chunk = job
            if server in down:
                return
            try:
                with connect(database) as conn:
                    found = digests(conn, fleet, chunk)
            except UNREACHABLE as exc:
                down.setdefault(server, server_error(server, exc))
                return
            prints.update({_key(database, schema): p for schema, p in found.items()})

        with ThreadPoolExecutor(max_workers=max(1, min(fleet.max_parallel, len(server_jobs)))) as pool:
            list(pool.map(run, server_jobs))

    with ThreadPoolExecutor(max_workers=len(per_server)) as servers:
        list(servers.map(run_server, per_server.items()))
    for server, why in down.items():
        on_event(Event("server", f"{why}: its tenants' fingerprints were not read", "warning"))
    return prints, down


def drift_lines(live: Dict[str, str], recorded: Recorded, expected: Iterable[str]) -> List[str]:
    return drift.without_expected(drift.compare(recorded.objects, live), set(expected))


class DriftCheck:
    """The drift check of an update, run by the fleet executor as it reads each database (``apply_fleet``'s
    ``precheck``): before anything is applied, the tenants this update will apply files to are fingerprinted in
    that same pass, and a changed schema (with a history that did not move) refuses the update, naming every such
    tenant with its drift lines, unless ``accept_schema_drift``.

    Not fingerprinted, because their result could not refuse anything (the previous state proves it):

    - every tenant when the schema drift is accepted, or when no fingerprint was recorded;
    - a tenant this update applies nothing to (all its files recorded): it is not built on, and its recorded
      fingerprint is kept after the update (never replaced by a drifted one); a refresh reports its drift;
    - a tenant that failed last time (its schema was never recorded), or whose history moved since (another
      applier's files: the fingerprint is taken again after the update), or that is new to the fleet.
    """

    def __init__(self, fleet: FleetSettings, recorded: Recorded, expected: Iterable[str]) -> None:
        self.fleet, self.recorded, self.expected = fleet, recorded, set(expected)
        self.drifted: Dict[str, List[str]] = {}
        self.checked = 0
        self.needed = bool(recorded.canonical) and not fleet.base.accept_schema_drift

    def wanted(self, tenant: Tenant, state: TenantState, files: Sequence[str]) -> bool:
        key = tenant.key
        if not self.needed or not self.recorded.clean(key):
            return False
        moved = len(state.recorded) != (self.recorded.statuses[key].get("recorded"))
        return not moved and any(name not in state.recorded for name in files)

    def __call__(self, conn: psycopg.Connection, database: str, group: Sequence[Tenant],
                 states: Dict[str, TenantState], files: Sequence[str]) -> None:
        check = [t for t in group if self.wanted(t, states[t.schema], files)]
        if not check:
            return
        self.checked += len(check)
        found = digests(conn, self.fleet, check)
        differ = {schema: p for schema, p in found.items() if p != self.recorded.print_of(_key(database, schema))}
        if not differ:
            return
        maps = objects_of(conn, self.fleet, list(representatives(differ).values()))
        by_print = {p: maps[schema] for p, schema in representatives(differ).items()}
        for schema, print_ in differ.items():
            lines = drift_lines(by_print[print_], self.recorded, self.expected)
            if lines:
                self.drifted[_key(database, schema)] = [line.replace("{schema}", schema) for line in lines]

    def finish(self) -> None:
        """After every database was read, before anything is applied: refuse on drift."""
        if self.drifted and not self.fleet.base.accept_schema_drift:
            lines = [f"tenant {tenant}: {line}" for tenant, found in sorted(self.drifted.items()) for line in found]
            raise SchemaDriftError(self.fleet.base.replace(schema=None), lines)
