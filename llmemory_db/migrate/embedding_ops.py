"""The operations on one llmemory embedding provider (:mod:`.embeddings`), as :mod:`.ops` has them for migrations:
each returns a typed result and reports typed events; none prints, none knows Pulumi.

    preflight   what an update will do and every refusal, at preview: an unknown operator class (pg_opclass), a
                table of another shape under the provider's table name, a registry row of another table, dimension
                or model, the graph's size against maintenance_work_mem, the backfill, the default switch refused
                below ``min_coverage`` (the coverage named)
    apply       the table and its registry row in one short transaction; the vector index built concurrently;
                the backfill; the default switch in one transaction
    refresh     the registry row changed by hand, the index missing, INVALID or built otherwise, the dimension,
                the default, the coverage
    destroy     unregister (its queue entries deleted; the row deleted, or kept inactive while search_history
                refers to it) and keep the table, or with ``drop_on_destroy`` forget it and drop the table;
                removing the default provider is refused (but with ``drop_on_destroy``: a teardown)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import psycopg
from psycopg import sql

from . import embedding_steps as steps
from .diagnosis import failure, remedy_for
from .embedding_catalog import (QUEUE, REGISTRY, ProviderState, counts, drift_of, known_opclasses, opclasses,
                                read_state)
from .embedding_errors import (CoverageError, DefaultProviderError, EmbeddingConflictError, EmbeddingError,
                               EmbeddingSettingError)
from .embeddings import EmbeddingSettings
from .errors import MigrationError
from .events import Event, Sink, ignore
from .settings import Settings
from .spelling import setting

# arguments that name another provider when they change: never changed in place (a new model is a new provider)
IDENTITY = ("schema", "provider_id", "provider_type", "model_name", "dimension", "vector_type", "table_name")
NEW_PROVIDER = ("declare the new model as a second EmbeddingProvider with its own provider_id, backfill it, make it "
                "the default once its coverage allows, then remove this one (docs/embedding-models.md)")


def identity_changes(olds: Dict[str, Any], news: Dict[str, Any]) -> List[str]:
    """The identity arguments that differ between two deployments' inputs (the table name as derived)."""
    def table(props: Dict[str, Any]) -> Any:
        try:
            return EmbeddingSettings.from_props(props).table
        except (MigrationError, TypeError):
            return props.get("table_name")
    changed = [k for k in IDENTITY if k != "table_name" and olds.get(k) is not None and olds.get(k) != news.get(k)]
    if not changed and olds.get("provider_id") is not None and table(olds) != table(news):
        changed.append("table_name")
    return changed


def identity_error(name: str, old: Any, new: Any) -> EmbeddingSettingError:
    return EmbeddingSettingError(
        f"{setting(name)} cannot change in place ({old!r} -> {new!r}): the provider's vectors, table and registry "
        "row belong to the model they were made with (pgvector has no in-place dimension change either)",
        setting=name, remedy=NEW_PROVIDER)


# --------------------------------------------------------------------------- preflight
@dataclass
class EmbeddingPreflight:
    lines: List[str] = field(default_factory=list)            # what an update will do, in words
    failures: List[MigrationError] = field(default_factory=list)
    state: Optional[ProviderState] = None


def _where(s: EmbeddingSettings) -> str:
    return f"embedding provider {s.provider_id} ({s.schema}.{s.table})"


def conflicts(conn: psycopg.Connection, s: EmbeddingSettings, state: ProviderState,
              known: bool) -> List[MigrationError]:
    """What in the database refuses this provider as asked (``known``: the stack created it before, so a registry
    row changed by hand is restored rather than refused)."""
    found: List[MigrationError] = []
    live = opclasses(conn, s.index_type, s.vector_type) if state.vector_schema else None
    available = live if live is not None else known_opclasses(s.index_type, s.vector_type)
    if s.opclass not in available:
        found.append(EmbeddingSettingError(
            f"Invalid value {s.opclass!r} for {setting('operator_class')}: {s.index_type} has no such operator class "
            f"for {s.vector_type} columns ({'this server' if live is not None else 'pgvector 0.8'} has "
            f"{', '.join(available) or 'none'})", setting="operator_class",
            remedy=f"use one of them, e.g. {setting('operator_class', s.opclass_default)} (llmemory searches by "
                   "cosine distance)"))
    shape = state.table.problems(s)
    if shape:
        name = "table_name" if s.table_name else "provider_id"
        found.append(EmbeddingConflictError(
            f"{_where(s)}: table {s.schema}.{s.table} exists and is not this provider's shape ({'; '.join(shape)}); "
            "nothing was changed", setting=name,
            remedy=f"give the provider a table of its own: {setting('table_name', (s.table + '_v2')[:63])}; or, if "
                   "that table is a leftover nothing uses, drop it first"))
    row = state.row
    if row is not None and (row.table_name != s.table or row.dimension != s.dimension):
        name = "dimension" if row.dimension != s.dimension else "table_name"
        found.append(EmbeddingConflictError(
            f"{setting('provider_id')} {s.provider_id!r} is registered in {s.schema}.{REGISTRY} with table "
            f"{row.table_name} and dimension {row.dimension}; these arguments ask for table {s.table} and dimension "
            f"{s.dimension} (pgvector has no in-place dimension change)", setting=name, remedy=NEW_PROVIDER))
    elif row is not None and not known and (row.provider_type, row.model_name) != (s.provider_type, s.model_name):
        found.append(EmbeddingConflictError(
            f"{setting('provider_id')} {s.provider_id!r} is registered in {s.schema}.{REGISTRY} for model "
            f"{row.model_name!r} ({row.provider_type}); its table holds that model's vectors, not {s.model_name!r}'s",
            setting="model_name", remedy=f"give this model another provider_id; {NEW_PROVIDER}"))
    if state.sharing:
        found.append(EmbeddingConflictError(
            f"{_where(s)}: table {s.table} is registered for {', '.join(state.sharing)} already; two providers "
            "cannot share a table", setting="table_name" if s.table_name else "provider_id",
            remedy=f"give this provider a table of its own: {setting('table_name', (s.table + '_v2')[:63])}"))
    return found


def coverage_error(s: EmbeddingSettings, state: ProviderState) -> Optional[CoverageError]:
    """The refusal of a default switch below ``min_coverage`` (None when it may go ahead)."""
    if not s.default or state.is_default or state.coverage >= s.min_coverage:
        return None
    return CoverageError(
        f"{s.provider_id} cannot become llmemory's default provider yet: {state.vectors:,} of {state.chunks:,} chunks "
        f"have a vector in {s.schema}.{s.table} (coverage {state.coverage:.2f}%), below {setting('min_coverage')} "
        f"{s.min_coverage:g}%; {state.queued:,} chunk(s) wait in {s.schema}.{QUEUE} for it", setting="default",
        remedy=f"keep {setting('default', False)} with {setting('backfill', True)}, let the application embed the "
               "queue (process_pending_embeddings()), then set default again; or lower min_coverage (searches then "
               "miss the chunks without a vector)")


def preflight(s: EmbeddingSettings, conn: Optional[psycopg.Connection] = None, *, known: bool = False,
              on_event: Sink = ignore) -> EmbeddingPreflight:
    """What a preview says before anything changes (``conn``: the live database when it answers)."""
    result = EmbeddingPreflight()
    if not s.cosine:
        on_event(Event("embedding", f"{_where(s)}: operator class {s.opclass}: llmemory 0.5.0 searches with <=> "
                                    "(cosine distance), which this index does not serve", "warning"))
    if conn is None:
        if s.opclass not in known_opclasses(s.index_type, s.vector_type):
            result.failures.append(conflicts_offline(s))
        return result
    try:
        with steps.bounded_waits(conn):
            state = result.state = read_state(conn, s)
    except psycopg.Error as exc:
        raise _database_error(exc, s) from None
    if not state.registry:
        result.failures += [f for f in conflicts(conn, s, state, known) if isinstance(f, EmbeddingSettingError)]
        result.lines.append(f"{_where(s)}: {s.schema}.{REGISTRY} does not exist yet (llmemory's migrations create "
                            "it): the provider is checked against it at the update")
        _say(result, on_event)
        return result
    result.failures += conflicts(conn, s, state, known)
    lines = result.lines
    if not state.table.exists:
        lines.append(f"creates table {s.schema}.{s.table} ({s.column_type}, llmemory's shape) and registers "
                     f"{s.provider_id}, in one transaction")
    elif state.row is None:
        lines.append(f"registers {s.provider_id} with the existing table {s.schema}.{s.table} ({state.vectors:,} "
                     "vectors)")
    lines += [f"table {s.schema}.{s.table}: {note}" for note in state.table.notes()]
    index = state.index
    differences = index.differences(s)
    if not index.exists or not index.valid or differences:
        what = f"builds {index.name}" if not index.exists else f"rebuilds the INVALID {index.name}" if not \
            index.valid else f"rebuilds {index.name} beside the old one ({'; '.join(differences)})"
        lines.append(f"{what}: {s.describe_index()}, concurrently")
        if state.vectors:
            lines.append(steps.memory_note(s, state, state.vectors, "index build"))
    if state.chunks > state.vectors and not index.exists:
        lines.append(steps.memory_note(s, state, state.chunks, f"at full coverage ({state.chunks:,} chunks)"))
    lines.append(f"coverage: {state.vectors:,} of {state.chunks:,} chunks ({state.coverage:.2f}%)")
    if s.backfill and (state.unqueued if state.table.exists else state.chunks):
        lines.append(f"backfill: queues the {state.unqueued if state.table.exists else state.chunks:,} chunk(s) "
                     f"without a vector for {s.provider_id}, {s.backfill_batch_size:,} a transaction")
    refusal = coverage_error(s, state)
    if refusal:
        result.failures.append(refusal)
    elif s.default and not state.is_default:
        lines.append(f"default provider: {', '.join(state.defaults) or '(none)'} -> {s.provider_id}, in one "
                     "transaction")
    elif not s.default and state.is_default:
        lines.append(f"{s.provider_id} stays the default until another provider takes it ({setting('default', True)} "
                     "on that one)")
    _say(result, on_event)
    return result


def conflicts_offline(s: EmbeddingSettings) -> EmbeddingSettingError:
    return EmbeddingSettingError(
        f"Invalid value {s.opclass!r} for {setting('operator_class')}: {s.index_type} has no such operator class for "
        f"{s.vector_type} columns (pgvector 0.8 has {', '.join(known_opclasses(s.index_type, s.vector_type))})",
        setting="operator_class", remedy=f"for example {setting('operator_class', s.opclass_default)}")


def _say(result: EmbeddingPreflight, on_event: Sink) -> None:
    for line in result.lines:
        on_event(Event("plan", line))


# --------------------------------------------------------------------------- apply
@dataclass
class EmbeddingResult:
    table: str
    index: str
    coverage: float
    chunks: int
    vectors: int
    queued: int                 # chunks waiting in the queue for the provider
    is_default: bool
    index_definition: str = ""
    changes: List[str] = field(default_factory=list)

    def outputs(self) -> Dict[str, Any]:
        return {"table_name": self.table, "index_name": self.index, "coverage": self.coverage, "chunks": self.chunks,
                "vectors": self.vectors, "queued": self.queued, "is_default": self.is_default,
                "index_definition": self.index_definition}


def _result(conn: psycopg.Connection, s: EmbeddingSettings, changes: Sequence[str] = ()) -> EmbeddingResult:
    state = read_state(conn, s)
    return EmbeddingResult(s.table, s.index, state.coverage, state.chunks, state.vectors, state.queued,
                           state.is_default, state.index.definition, list(changes))


def _database_error(exc: psycopg.Error, s: EmbeddingSettings) -> EmbeddingError:
    fail = failure(exc)
    return EmbeddingError(f"Database error for {_where(s)}: {fail.message}"
                          + (f" (SQLSTATE {fail.sqlstate})" if fail.sqlstate else "")
                          + (f"\n  detail: {fail.detail}" if fail.detail else ""),
                          remedy=remedy_for(fail, Settings(schema=s.schema)) if fail.sqlstate else "check the "
                          "server log and run again")


def apply(conn: psycopg.Connection, s: EmbeddingSettings, *, known: bool = False,
          on_event: Sink = ignore) -> EmbeddingResult:
    """Make the database hold the provider as ``s`` asks (idempotent: a run killed anywhere is finished by the
    next). ``conn``: autocommit."""
    try:
        with steps.bounded_waits(conn):
            return _apply(conn, s, known, on_event)
    except psycopg.Error as exc:
        raise _database_error(exc, s) from None


def _apply(conn: psycopg.Connection, s: EmbeddingSettings, known: bool, on_event: Sink) -> EmbeddingResult:
    state = read_state(conn, s, count=False)
    if not state.registry:
        raise EmbeddingError(
            f"{_where(s)}: llmemory's registry {s.schema}.{REGISTRY} does not exist: its migrations have not run in "
            f"schema {s.schema}", setting="schema",
            remedy="give schema the schema_name output of the MigratedSchema that deploys llmemory (the provider "
                   "then waits for its migrations)")
    refused = conflicts(conn, s, state, known)
    if refused:
        raise refused[0]
    changes = steps.register(conn, s, state, on_event)
    state = counts(conn, s, read_state(conn, s, count=False))
    built = steps.ensure_index(conn, s, state, on_event)
    changes += [built] if built else []
    if s.backfill:
        queued = steps.backfill(conn, s, on_event)
        changes += [f"queued {queued:,} chunk(s)"] if queued else []
    if s.default and not state.is_default:
        state = read_state(conn, s)
        refusal = coverage_error(s, state)
        if refusal:
            raise refusal
        before = steps.switch_default(conn, s, on_event)
        changes.append(f"made the default (before: {', '.join(before) or 'none'})")
    elif not s.default and state.is_default:
        on_event(Event("embedding", f"{s.provider_id} stays llmemory's default until another provider takes it"))
    return _result(conn, s, changes)


# --------------------------------------------------------------------------- refresh
@dataclass
class EmbeddingRefresh:
    drift: List[str]
    result: EmbeddingResult


def refresh(conn: psycopg.Connection, s: EmbeddingSettings) -> EmbeddingRefresh:
    try:
        with steps.bounded_waits(conn):
            state = read_state(conn, s)
    except psycopg.Error as exc:
        raise _database_error(exc, s) from None
    result = EmbeddingResult(s.table, s.index, state.coverage, state.chunks, state.vectors, state.queued,
                             state.is_default, state.index.definition)
    return EmbeddingRefresh(drift_of(s, state), result)


# --------------------------------------------------------------------------- destroy
def destroy(conn: psycopg.Connection, s: EmbeddingSettings, on_event: Sink = ignore) -> Event:
    """Unregister the provider and keep its table, or with ``drop_on_destroy`` forget it and drop the table;
    refused for llmemory's default provider."""
    try:
        with steps.bounded_waits(conn):
            return _destroy(conn, s, on_event)
    except psycopg.Error as exc:
        raise _database_error(exc, s) from None


def _destroy(conn: psycopg.Connection, s: EmbeddingSettings, on_event: Sink) -> Event:
    state = read_state(conn, s, count=False)
    if not state.registry:
        return Event("destroy", f"{_where(s)}: nothing to unregister ({s.schema}.{REGISTRY} is gone)")
    if state.is_default and not s.drop_on_destroy:
        raise DefaultProviderError(
            f"{s.provider_id} is llmemory's default provider in {s.schema}: its searches read {s.schema}.{s.table}; "
            "removing it is refused", setting="default",
            remedy=f"make another provider the default first ({setting('default', True)} on it, in this update or an "
                   f"earlier one), then remove this one; to tear llmemory down altogether (pulumi destroy), set "
                   f"{setting('drop_on_destroy', True)} on it first")
    if state.is_default:  # drop_on_destroy: the teardown of llmemory's embeddings, asked for explicitly
        on_event(Event("destroy", f"{_where(s)} is llmemory's default provider: removed because drop_on_destroy is "
                                  "set; llmemory has no default provider now (its vector searches return nothing "
                                  "until one is made the default)", "warning"))
    registry, queue = sql.Identifier(s.schema, REGISTRY), sql.Identifier(s.schema, QUEUE)
    history = sql.Identifier(s.schema, "search_history")
    outcome: List[str] = []

    def work() -> None:
        outcome.clear()
        dropped = conn.execute(sql.SQL("DELETE FROM {} WHERE provider_id = %s").format(queue), (s.provider_id,))
        outcome.append(f"deleted its {dropped.rowcount:,} queue entries")
        referenced = conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE provider_id = %s").format(history),
                                  (s.provider_id,)).fetchone()[0] if _exists(conn, s.schema, "search_history") else 0
        if s.drop_on_destroy:
            if referenced:
                conn.execute(sql.SQL("UPDATE {} SET provider_id = NULL WHERE provider_id = %s").format(history),
                             (s.provider_id,))
                outcome.append(f"cleared it from {referenced:,} search_history rows")
            conn.execute(sql.SQL("DELETE FROM {} WHERE provider_id = %s").format(registry), (s.provider_id,))
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(s.qualified()))
            outcome.append(f"unregistered it and dropped table {s.schema}.{s.table}")
        elif referenced:
            conn.execute(sql.SQL("UPDATE {} SET is_active = false WHERE provider_id = %s").format(registry),
                         (s.provider_id,))
            outcome.append(f"kept its registry row inactive (is_active false: {referenced:,} search_history rows "
                           f"refer to it) and kept table {s.schema}.{s.table}")
        else:
            conn.execute(sql.SQL("DELETE FROM {} WHERE provider_id = %s").format(registry), (s.provider_id,))
            outcome.append(f"unregistered it and kept table {s.schema}.{s.table}")

    if state.row is None and not (s.drop_on_destroy and state.table.exists):
        return Event("destroy", f"{_where(s)}: not registered; kept table {s.schema}.{s.table}")
    steps.short_transaction(conn, s, f"removing embedding provider {s.provider_id}", work,
                            [registry, queue, s.qualified(), sql.Identifier(s.schema, "document_chunks")])
    keep = "" if s.drop_on_destroy else f" (set {setting('drop_on_destroy', True)} to drop the table on removal)"
    return Event("destroy", f"{_where(s)}: {', '.join(outcome)}{keep}")


def _exists(conn: psycopg.Connection, schema: str, table: str) -> bool:
    return conn.execute("SELECT to_regclass(%s) IS NOT NULL",
                        (sql.Identifier(schema, table).as_string(conn),)).fetchone()[0]
