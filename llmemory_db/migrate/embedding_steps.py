"""The steps that change a database for an embedding provider (:mod:`.embedding_ops` orders them):

- :func:`short_transaction`: one short transaction under ``SET LOCAL lock_timeout``, retried with backoff when a lock
  wait ran out (the application queues behind a waiting DDL statement: it must never wait long);
- :func:`register`: the table in llmemory's shape and its registry row, in one such transaction;
- :func:`ensure_index`: the vector index built concurrently (:func:`.index_builds.build`: INVALID leftovers of an
  earlier build dropped first, validity checked after, progress events), with maintenance_work_mem,
  max_parallel_maintenance_workers and no statement_timeout for the build's session only; an index built with
  other options is rebuilt beside the old one and swapped in, so searches always have one;
- :func:`backfill`: chunks without a vector queued into ``embedding_queue`` for the provider, in short batches;
- :func:`switch_default`: ``is_default`` moved in one transaction.
"""
from __future__ import annotations

import math
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator, List, Optional, Sequence

import psycopg
from psycopg import sql

from . import index_builds, lockwait, progress
from .connection import rollback
from .embedding_catalog import CHUNKS, MARK, QUEUE, REGISTRY, IndexState, ProviderState, lock_holders
from .embedding_errors import EmbeddingIndexError, EmbeddingLockError
from .embeddings import EmbeddingSettings, auto_memory, memory_bytes, pretty_bytes
from .errors import IndexBuildError, excerpt
from .events import Event, Sink
from .executor import CLIENT_CHECK_INTERVAL
from .settings import Settings, duration

RETRY_BUDGET = 60.0  # seconds a short transaction is retried for after lock_timeout


def short_transaction(conn: psycopg.Connection, s: EmbeddingSettings, what: str, work: Callable[[], None],
                      relations: Sequence[sql.Composable] = (), budget: Optional[float] = None) -> int:
    """Run ``work()`` in one transaction with ``lock_timeout`` set for it; a lock wait that runs out rolls it back
    and it is tried again (jittered backoff) for ``budget`` seconds (default :data:`RETRY_BUDGET`). Returns the
    attempts it took."""
    budget = RETRY_BUDGET if budget is None else budget
    deadline, attempt = time.monotonic() + budget, 0
    while True:
        attempt += 1
        try:
            with conn.transaction():
                conn.execute(sql.SQL("SET LOCAL lock_timeout = {}; SET LOCAL client_connection_check_interval = {}")
                             .format(sql.Literal(duration(s.lock_timeout)), sql.Literal(CLIENT_CHECK_INTERVAL)))
                work()
            return attempt
        except psycopg.errors.LockNotAvailable:
            rollback(conn)
            if time.monotonic() >= deadline:
                holders = lock_holders(conn, list(relations)) or "another session (it let go meanwhile)"
                raise EmbeddingLockError(
                    f"{what}: every attempt waited longer than lock_timeout ({s.lock_timeout:g}s) for a lock; gave "
                    f"up after {attempt} attempt(s) in {budget:.0f}s; held by {holders}", setting="lock_timeout",
                    remedy="let that session finish (or end it: SELECT pg_terminate_backend(<pid>)) and run again; "
                           "raising lock_timeout makes the application queue behind this change for that long"
                ) from None
            time.sleep(min(2.0, lockwait.backoff(attempt) * 10))


# --------------------------------------------------------------------------- the table and its registry row
def register(conn: psycopg.Connection, s: EmbeddingSettings, state: ProviderState, on_event: Sink) -> List[str]:
    """The table (when missing) and the registry row (when missing; restored when changed by hand), with the
    grants, in one short transaction. Returns what it did, in words."""
    done: List[str] = []
    registry = sql.Identifier(s.schema, REGISTRY)

    def work() -> None:
        done.clear()
        if not state.table.exists:
            conn.execute(s.create_table_sql())
            conn.execute(sql.SQL("COMMENT ON TABLE {} IS {}").format(s.qualified(), sql.Literal(
                f"{MARK} {s.provider_id}: {s.model_name} ({s.provider_type}) vectors, {s.column_type}")))
            done.append(f"created table {s.schema}.{s.table} ({s.column_type}, llmemory's shape)")
        for role in s.runtime_roles:
            conn.execute(sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON {} TO {}").format(
                s.qualified(), sql.Identifier(role)))
        row = state.row
        if row is None:
            conn.execute(sql.SQL("INSERT INTO {} (provider_id, provider_type, model_name, dimension, table_name, "
                                 "is_active, is_default) VALUES (%s, %s, %s, %s, %s, true, false)").format(registry),
                         (s.provider_id, s.provider_type, s.model_name, s.dimension, s.table))
            done.append(f"registered {s.provider_id} in {s.schema}.{REGISTRY} (not the default)")
        elif (row.provider_type, row.model_name, row.is_active) != (s.provider_type, s.model_name, True):
            conn.execute(sql.SQL("UPDATE {} SET provider_type = %s, model_name = %s, is_active = true WHERE "
                                 "provider_id = %s").format(registry), (s.provider_type, s.model_name, s.provider_id))
            done.append(f"restored the registry row of {s.provider_id} (it said provider_type {row.provider_type}, "
                        f"model_name {row.model_name!r}, is_active {row.is_active})")

    if state.table.exists and state.row is not None and not s.runtime_roles and \
            (state.row.provider_type, state.row.model_name, state.row.is_active) == (s.provider_type, s.model_name,
                                                                                   True):
        return done
    short_transaction(conn, s, f"registering embedding provider {s.provider_id}", work,
                      [registry, sql.Identifier(s.schema, CHUNKS)])
    for line in done:
        on_event(Event("embedding", line))
    return done


# --------------------------------------------------------------------------- the vector index
def _build(conn: psycopg.Connection, s: EmbeddingSettings, state: ProviderState, name: str, on_event: Sink) -> None:
    """One concurrent build of the vector index under ``name``, with the build session's settings."""
    graph = s.graph_bytes(max(state.vectors, 0))
    memory = s.maintenance_work_mem or auto_memory(graph, state.work_mem)
    if memory and not s.maintenance_work_mem:
        on_event(Event("embedding", f"maintenance_work_mem for this build: {memory} (the server's "
                                    f"{pretty_bytes(state.work_mem)} is less than the estimated graph, "
                                    f"{pretty_bytes(graph)})"))
    text = s.index_sql(name, state.vector_schema).as_string(conn)
    on_event(Event("embedding", f"building {s.schema}.{name} on {s.schema}.{s.table} ({state.vectors:,} vectors): "
                                f"{s.describe_index()}, concurrently (reads and writes go on)"))
    started = time.monotonic()
    try:
        with session_settings(conn, maintenance_work_mem=memory,
                              max_parallel_maintenance_workers=s.max_parallel_maintenance_workers):
            index_builds.build(conn, Settings(schema=s.schema, spelling=s.spelling), text,
                               f"embedding provider {s.provider_id}", on_event, line=0)
    except IndexBuildError as exc:
        fail = f"{exc.server_message}" + (f" (SQLSTATE {exc.sqlstate})" if exc.sqlstate else "")
        lines = [f"The vector index {s.schema}.{name} of embedding provider {s.provider_id} could not be built: "
                 f"{fail}"] + [f"  detail: {exc.detail}"] * bool(exc.detail) + \
            [f"  statement: {excerpt(text)}"] + [f"  {note}" for note in exc.notes] + \
            ["  the table and its registry row stay; the provider is not made the default without its index"]
        raise EmbeddingIndexError("\n".join(lines), remedy=exc.remedy) from None
    on_event(Event("embedding", f"built {s.schema}.{name} in {time.monotonic() - started:.1f}s (valid)"))


def _rename(conn: psycopg.Connection, s: EmbeddingSettings, old: str, new: str) -> None:
    short_transaction(conn, s, f"renaming index {old} to {new}", lambda: conn.execute(
        sql.SQL("ALTER INDEX {} RENAME TO {}").format(sql.Identifier(s.schema, old), sql.Identifier(new))),
        [sql.Identifier(s.schema, old)])


@contextmanager
def session_settings(conn: psycopg.Connection, **values: Any) -> Iterator[None]:
    """``values`` (None: left as they are) for this session while the block runs, with no statement_timeout and no
    lock_timeout (a concurrent build or drop waits for older transactions: it blocks no one's reads or writes, and
    a lock_timeout would leave it INVALID), and with the server checking every second that the client is still there
    (a killed ``pulumi up`` ends its build at once, instead of leaving it running for nobody); the session's own
    values are put back after."""
    used = {"statement_timeout": 0, "lock_timeout": 0, "client_connection_check_interval": CLIENT_CHECK_INTERVAL,
            **{k: v for k, v in values.items() if v is not None}}
    saved = {k: conn.execute("SELECT current_setting(%s)", (k,)).fetchone()[0] for k in used}
    for key, value in used.items():
        conn.execute("SELECT set_config(%s, %s, false)", (key, str(value)))
    try:
        yield
    finally:
        if not conn.broken and not conn.closed:
            rollback(conn)
            for key, value in saved.items():
                conn.execute("SELECT set_config(%s, %s, false)", (key, value))


@contextmanager
def bounded_waits(conn: psycopg.Connection) -> Iterator[None]:
    """A session without a lock_timeout waits at most :data:`RETRY_BUDGET` seconds for a lock while the block runs
    (the catalog reads of an operation: a session holding llmemory's registry exclusively would stall them
    forever); the session's own value is put back after."""
    saved = conn.execute("SELECT current_setting('lock_timeout')").fetchone()[0]
    if saved in ("0", "0ms"):
        conn.execute("SELECT set_config('lock_timeout', %s, false)", (duration(RETRY_BUDGET),))
    try:
        yield
    finally:
        if not conn.broken and not conn.closed:
            rollback(conn)
            conn.execute("SELECT set_config('lock_timeout', %s, false)", (saved,))


def _drop(conn: psycopg.Connection, s: EmbeddingSettings, name: str) -> None:
    with session_settings(conn):
        conn.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(s.schema, name)))


def ensure_index(conn: psycopg.Connection, s: EmbeddingSettings, state: ProviderState, on_event: Sink) -> str:
    """The vector index, valid and as ``s`` asks, under llmemory's name. Returns what was done ('' if nothing).

    Missing or INVALID: built (an INVALID one dropped first). Valid but built otherwise (options, operator
    class, method): a new one is built beside it under :func:`.embedding_catalog.rebuild_name`, then the old one is
    dropped concurrently and the new one renamed, so that searches always have an index. A run killed half-way
    is finished by the next one from whatever it left."""
    index, beside = state.index, state.rebuild
    if index.building:
        raise EmbeddingIndexError(f"index {s.schema}.{index.name} is being built right now by {index.building}",
                                  remedy="wait for that build to end (pg_stat_progress_create_index shows it) and run "
                                         "again, or end it: SELECT pg_cancel_backend(<pid>)")
    if index.exists and index.valid and not index.differences(s):
        if beside.exists:  # a rebuild's leftover (the swap finished, or an INVALID one)
            _drop(conn, s, beside.name)
        return ""
    if index.exists and index.valid:  # built otherwise: rebuild beside it, then swap
        why = "; ".join(index.differences(s))
        on_event(Event("embedding", f"index {s.schema}.{index.name} was built otherwise ({why}): building its "
                                    f"replacement {beside.name} beside it, then swapping"))
        if not (beside.exists and beside.valid and not beside.differences(s)):
            _build(conn, s, state, beside.name, on_event)
        _drop(conn, s, index.name)
        _rename(conn, s, beside.name, index.name)
        on_event(Event("embedding", f"swapped in the rebuilt {s.schema}.{index.name}"))
        return f"rebuilt {index.name} ({why})"
    if not index.exists and beside.exists and beside.valid and not beside.differences(s):
        _rename(conn, s, beside.name, index.name)  # a run that died between the drop and the rename
        on_event(Event("embedding", f"renamed the rebuilt {beside.name} to {index.name} (an earlier run stopped "
                                    "between the swap's two steps)"))
        return f"finished the swap of {index.name}"
    _build(conn, s, state, index.name, on_event)
    if beside.exists:
        _drop(conn, s, beside.name)
    return f"{'rebuilt the INVALID' if index.exists else 'built'} {index.name}"


# --------------------------------------------------------------------------- backfill
_BACKFILL = """
WITH batch AS (
    SELECT c.chunk_id FROM {chunks} c WHERE %(after)s::uuid IS NULL OR c.chunk_id > %(after)s::uuid
    ORDER BY c.chunk_id LIMIT %(size)s
), queued AS (
    INSERT INTO {queue} AS q (chunk_id, provider_id)
    SELECT b.chunk_id, %(provider)s FROM batch b
    WHERE NOT EXISTS (SELECT 1 FROM {table} e WHERE e.chunk_id = b.chunk_id)
    ON CONFLICT (chunk_id, provider_id) DO UPDATE SET status = 'pending', retry_count = 0, error_message = NULL,
        processed_at = NULL WHERE q.status IN ('failed', 'completed')
    RETURNING (q.xmax = 0) AS inserted
)
SELECT (SELECT chunk_id FROM batch ORDER BY chunk_id DESC LIMIT 1), (SELECT count(*) FROM batch),
       count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM queued
"""


def backfill(conn: psycopg.Connection, s: EmbeddingSettings, on_event: Sink) -> int:
    """Queue every chunk without a vector in the provider's table (and not queued already) for the provider, in
    batches of ``backfill_batch_size`` chunks by chunk_id, each its own short transaction; a failed or completed
    queue entry of a chunk still without a vector is set pending again. Returns the chunks queued."""
    query = sql.SQL(_BACKFILL).format(chunks=sql.Identifier(s.schema, CHUNKS), queue=sql.Identifier(s.schema, QUEUE),
                                      table=s.qualified())
    after: Optional[str] = None
    scanned = queued = requeued = 0
    first, every = progress.intervals()
    started = last = time.monotonic()
    result: list = []

    def batch() -> None:
        params = {"after": after, "size": s.backfill_batch_size, "provider": s.provider_id}
        result[:] = conn.execute(query, params).fetchone()

    while True:
        short_transaction(conn, s, f"backfill of {s.provider_id}", batch, [sql.Identifier(s.schema, QUEUE)])
        after, seen, inserted, updated = result
        if not seen:
            break
        scanned, queued, requeued = scanned + seen, queued + inserted, requeued + updated
        now = time.monotonic()
        if now - last >= (first if last == started else every):
            last = now
            on_event(Event("progress", f"backfill of {s.provider_id}: {scanned:,} chunks scanned, {queued:,} queued, "
                                       f"{now - started:.0f}s elapsed", data={"scanned": scanned, "queued": queued}))
    again = f" ({requeued:,} failed or completed entries set pending again)" if requeued else ""
    on_event(Event("embedding", f"backfill: queued {queued + requeued:,} of {scanned:,} chunks for {s.provider_id} in "
                                f"{s.schema}.{QUEUE}{again}, in batches of {s.backfill_batch_size:,}; the application's "
                                "process_pending_embeddings() embeds them", data={"queued": queued + requeued}))
    return queued + requeued


# --------------------------------------------------------------------------- the default
def switch_default(conn: psycopg.Connection, s: EmbeddingSettings, on_event: Sink) -> List[str]:
    """Make the provider llmemory's default in one transaction (every other row's is_default cleared). Returns the
    providers that were the default before."""
    registry = sql.Identifier(s.schema, REGISTRY)
    before: List[str] = []

    def work() -> None:
        rows = conn.execute(sql.SQL("SELECT provider_id, is_default FROM {} WHERE is_default OR provider_id = %s "
                                    "ORDER BY 1 FOR UPDATE").format(registry), (s.provider_id,)).fetchall()
        before[:] = [p for p, is_default in rows if is_default and p != s.provider_id]
        conn.execute(sql.SQL("UPDATE {} SET is_default = (provider_id = %s) WHERE is_default OR provider_id = %s")
                     .format(registry), (s.provider_id, s.provider_id))

    short_transaction(conn, s, f"making {s.provider_id} the default", work, [registry])
    on_event(Event("embedding", f"default provider: {', '.join(before) or '(none)'} -> {s.provider_id} (one "
                                "transaction: llmemory's searches read its table from now on)"))
    return before


def memory_note(s: EmbeddingSettings, state: ProviderState, rows: int, what: str) -> str:
    """The graph estimate against maintenance_work_mem, in words (said at preview)."""
    graph = s.graph_bytes(rows)
    given = memory_bytes(s.maintenance_work_mem) if s.maintenance_work_mem else None
    auto = None if given else auto_memory(graph, state.work_mem)
    budget = given or (memory_bytes(auto) if auto else state.work_mem)
    source = f"maintenance_work_mem {s.maintenance_work_mem} (argument)" if given else \
        f"maintenance_work_mem {auto} (raised from the server's {pretty_bytes(state.work_mem)} for the build)" if auto \
        else f"the server's maintenance_work_mem {pretty_bytes(state.work_mem)}"
    kind = "graph" if s.index_type == "hnsw" else "k-means sample"
    head = f"{what}: {rows:,} vectors x {s.dimension} dimensions ({s.vector_type}) -> {kind} of about " \
           f"{pretty_bytes(graph)}"
    if graph <= budget:
        return f"{head}: fits in {source}"
    return (f"{head}: more than {source}; the build spills to disk and runs several times slower; give "
            f"maintenance_work_mem (e.g. {math.ceil(graph * 1.25 / 1024 ** 2)}MB) if the server has the memory")


def describe_state(index: IndexState) -> str:
    if not index.exists:
        return "missing"
    return "valid" if index.valid else "INVALID"
