"""An embedding provider's vector index on 100,000 x 384 vectors (issue 22), side by side.

    python -m bench.embeddings [--rows 100000] [--dimension 384] [--reps 3] [--queries 100] [--m 16]
                               [--ef-construction 64] [--workers 2] [--memory 512MB]

One database with llmemory 0.5.0's schema (its own files, applied by the engine), ``--rows`` chunks, and an
EmbeddingProvider's table holding a vector for each (clustered: 100 random centres, each vector a centre plus
uniform noise, as an embedding model's vectors cluster by topic). Then:

1. **Build time.** The resource's operation (``embedding_ops.apply``: its catalog reads, the INVALID-leftover
   check, the concurrent build with its progress watch, the validity check, the coverage count) against a plain
   ``psql -c "SET ...; CREATE INDEX CONCURRENTLY ..."`` with the same maintenance_work_mem and
   max_parallel_maintenance_workers, taking turns in every repetition (the machine is shared: its load moves);
   the ratio of their medians. Target <= 1.1x.
2. **The application's inserts during a build.** A thread inserts a vector for a new chunk every 10 ms, as
   llmemory's ``insert_chunk_embedding`` does (each insert its own transaction), while the index is built (a) by
   the resource, (b) by a plain ``CREATE INDEX`` (what a hand-written migration does in a transaction). The
   slowest insert, the 99th percentile, and how many waited longer than lock_timeout (2 s). Target: none with
   the resource.
3. **Recall@10** of the built index against an exact scan (sequential, every distance computed) for
   ``--queries`` query vectors drawn like the data, at pgvector's default hnsw.ef_search (40) and at llmemory's
   "balanced" profile (100). Reported, not a target.

Writes bench/embeddings-results.json and prints the README table.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import threading
import time
from pathlib import Path


from llmemory_db import migrate
from llmemory_db.migrate import Settings, embedding_ops
from llmemory_db.migrate.embeddings import EmbeddingSettings
from tests.helpers import db as dbs
from tools.pgserver import Server

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "embeddings-results.json"
LOCK_TIMEOUT = 2.0


def log(text: str) -> None:
    print(f"[bench.embeddings] {text}", flush=True)


def prepare(server: Server, rows: int, spare: int, settings: EmbeddingSettings) -> dbs.Database:
    """A database with llmemory's schema, ``rows`` chunks with a vector each, ``spare`` chunks without one."""
    database = dbs.create(server, prefix="bemb", extensions=("vector",))
    database.sql("CREATE SCHEMA llmemory")
    with database.connect() as conn:
        migrate.apply(conn, Settings(migrations_package="llmemory", schema="llmemory"))
        embedding_ops.apply(conn, settings)  # the provider's table (empty: its index is built at once)
    database.sql("INSERT INTO llmemory.documents (owner_id, id_at_origin, document_type, document_name) "
                 "VALUES ('o', 'd', 'text', 'n')")
    database.sql("INSERT INTO llmemory.document_chunks (document_id, chunk_index, content, content_hash, token_count) "
                 f"SELECT document_id, g, 'c' || g, md5(g::text), 1 FROM llmemory.documents, "
                 f"generate_series(1, {rows + spare}) g")
    dim = settings.dimension
    database.sql(f"CREATE TABLE centres AS SELECT id, (SELECT array_agg(random() * 2 - 1) FROM generate_series(1, {dim}) "
                 "WHERE id >= 0) AS v FROM generate_series(0, 99) id")
    started = time.monotonic()
    database.sql(f"DROP INDEX llmemory.{settings.index}")
    database.sql(f"INSERT INTO llmemory.{settings.table} (chunk_id, embedding) SELECT c.chunk_id, (SELECT "
                 f"array_agg(k.v[i] + random() - 0.5) FROM generate_series(1, {dim}) i)::vector FROM "
                 f"llmemory.document_chunks c JOIN centres k ON k.id = c.chunk_index % 100 WHERE c.chunk_index <= "
                 f"{rows}")
    database.sql(f"VACUUM ANALYZE llmemory.{settings.table}")
    log(f"{rows:,} vectors of {dim} dimensions in {time.monotonic() - started:.0f}s")
    return database


def drop_index(database: dbs.Database, settings: EmbeddingSettings) -> None:
    database.sql(f"DROP INDEX IF EXISTS llmemory.{settings.index}")


def resource_build(database: dbs.Database, settings: EmbeddingSettings) -> float:
    with database.connect() as conn:
        started = time.perf_counter()
        embedding_ops.apply(conn, settings, known=True)
        return time.perf_counter() - started


def psql_build(server: Server, database: dbs.Database, settings: EmbeddingSettings, concurrently: bool = True) -> float:
    create = settings.index_sql().as_string(None)
    statements = [f"SET maintenance_work_mem = '{settings.maintenance_work_mem}'",
                  f"SET max_parallel_maintenance_workers = {settings.max_parallel_maintenance_workers}",
                  create if concurrently else create.replace("CONCURRENTLY ", "")]
    started = time.perf_counter()  # one -c each: the same session, no transaction block around them
    subprocess.run([str(server.psql), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", database.dsn,
                    *[arg for text in statements for arg in ("-c", text)]], check=True, capture_output=True)
    return time.perf_counter() - started


class Application(threading.Thread):
    """Inserts a vector for a spare chunk every 10 ms, each its own transaction; records each insert's latency."""

    def __init__(self, database: dbs.Database, settings: EmbeddingSettings, rows: int) -> None:
        super().__init__(daemon=True)
        self.database, self.settings = database, settings
        self.spare = [r[0] for r in database.sql("SELECT chunk_id FROM llmemory.document_chunks WHERE chunk_index > "
                                                 f"{rows} ORDER BY chunk_index")]
        self.vector = "[" + ",".join("0.5" for _ in range(settings.dimension)) + "]"
        self.latencies: list = []
        self.stop = threading.Event()

    def run(self) -> None:
        s = self.settings
        with self.database.connect() as conn:
            for chunk_id in self.spare:
                if self.stop.is_set():
                    break
                started = time.perf_counter()
                conn.execute(f"INSERT INTO llmemory.{s.table} (chunk_id, embedding) VALUES (%s, %s::vector) "
                             "ON CONFLICT (chunk_id) DO UPDATE SET embedding = EXCLUDED.embedding",
                             (chunk_id, self.vector))
                self.latencies.append(time.perf_counter() - started)
                time.sleep(0.01)


def inserts_during(build, database, settings, rows) -> dict:
    app = Application(database, settings, rows)
    app.start()
    time.sleep(1.0)
    seconds = build()
    time.sleep(0.5)
    app.stop.set()
    app.join()
    latencies = sorted(app.latencies)
    database.sql(f"DELETE FROM llmemory.{settings.table} e USING llmemory.document_chunks c WHERE c.chunk_id = "
                 f"e.chunk_id AND c.chunk_index > {rows}")
    return {"build_s": round(seconds, 2), "inserts": len(latencies),
            "max_ms": round(latencies[-1] * 1000, 1), "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 1),
            "median_ms": round(statistics.median(latencies) * 1000, 2),
            "over_lock_timeout": sum(1 for x in latencies if x > LOCK_TIMEOUT)}


def recall(database: dbs.Database, settings: EmbeddingSettings, queries: int, ef_search: int) -> float:
    table = f"llmemory.{settings.table}"
    with database.connect() as conn:
        vectors = [r[0] for r in conn.execute(
            f"SELECT (SELECT array_agg(k.v[i] + random() - 0.5) FROM generate_series(1, {settings.dimension}) i)"
            f"::vector::text FROM centres k, generate_series(1, {queries}) q WHERE k.id = q % 100 AND q > 0")]
        found = []
        for vector in vectors:
            conn.execute("BEGIN")
            conn.execute("SET LOCAL enable_indexscan = off; SET LOCAL enable_bitmapscan = off")
            exact = {r[0] for r in conn.execute(f"SELECT chunk_id FROM {table} ORDER BY embedding <=> %s::vector "
                                                "LIMIT 10", (vector,))}
            conn.execute("ROLLBACK")
            conn.execute("BEGIN")
            conn.execute(f"SET LOCAL hnsw.ef_search = {int(ef_search)}; SET LOCAL enable_seqscan = off")
            approx = {r[0] for r in conn.execute(f"SELECT chunk_id FROM {table} ORDER BY embedding <=> %s::vector "
                                                 "LIMIT 10", (vector,))}
            conn.execute("ROLLBACK")
            found.append(len(exact & approx) / 10)
    return round(statistics.mean(found), 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dimension", type=int, default=384)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--m", type=int, default=16)
    parser.add_argument("--ef-construction", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--memory", default="512MB")
    args = parser.parse_args()
    settings = EmbeddingSettings(schema="llmemory", provider_id="bench", provider_type="local", model_name="bench",
                                 dimension=args.dimension, m=args.m, ef_construction=args.ef_construction,
                                 maintenance_work_mem=args.memory, max_parallel_maintenance_workers=args.workers,
                                 lock_timeout=LOCK_TIMEOUT)
    server = Server((ROOT / ".state" / "pg-test").resolve()).start()
    database = prepare(server, args.rows, 20_000, settings)
    result: dict = {"rows": args.rows, "queries": args.queries, "dimension": args.dimension, "m": args.m,
                    "ef_construction": args.ef_construction,
                    "maintenance_work_mem": args.memory, "max_parallel_maintenance_workers": args.workers,
                    "graph_estimate_mb": round(settings.graph_bytes(args.rows) / 1024 ** 2, 1)}
    try:
        times: dict = {"resource": [], "psql": []}
        for rep in range(args.reps):
            order = ("resource", "psql") if rep % 2 == 0 else ("psql", "resource")
            for who in order:
                drop_index(database, settings)
                seconds = resource_build(database, settings) if who == "resource" else \
                    psql_build(server, database, settings)
                times[who].append(round(seconds, 2))
                log(f"rep {rep + 1}: {who} {seconds:.1f}s")
        result["build"] = {who: {"seconds": t, "median": statistics.median(t)} for who, t in times.items()}
        result["build"]["ratio"] = round(result["build"]["resource"]["median"] / result["build"]["psql"]["median"], 3)

        result["recall_at_10"] = {str(ef): recall(database, settings, args.queries, ef) for ef in (40, 100)}
        log(f"recall@10: {result['recall_at_10']}")

        drop_index(database, settings)
        result["inserts"] = {"resource": inserts_during(lambda: resource_build(database, settings), database,
                                                        settings, args.rows)}
        log(f"inserts during the resource's build: {result['inserts']['resource']}")
        drop_index(database, settings)
        result["inserts"]["create_index"] = inserts_during(
            lambda: psql_build(server, database, settings, concurrently=False), database, settings, args.rows)
        log(f"inserts during a plain CREATE INDEX: {result['inserts']['create_index']}")
    finally:
        database.drop()
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))


def table(r: dict) -> str:
    b, i = r["build"], r["inserts"]
    lines = [f"{r['rows']:,} x {r['dimension']} vectors, hnsw m={r['m']} ef_construction={r['ef_construction']}, "
             f"maintenance_work_mem {r['maintenance_work_mem']} (graph estimate {r['graph_estimate_mb']} MB), "
             f"{r['max_parallel_maintenance_workers']} parallel workers",
             "", "| | build (median of {n}) | inserts during it | slowest insert | p99 | inserts > 2 s |".format(
                 n=len(b["resource"]["seconds"])), "| --- | --- | --- | --- | --- | --- |"]
    res, cre = i["resource"], i["create_index"]
    lines.append(f"| EmbeddingProvider (CREATE INDEX CONCURRENTLY + checks) | {b['resource']['median']:.1f} s | "
                 f"{res['inserts']} | {res['max_ms']:.0f} ms | {res['p99_ms']:.0f} ms | {res['over_lock_timeout']} |")
    lines.append(f"| psql CREATE INDEX CONCURRENTLY, same settings | {b['psql']['median']:.1f} s | | | | |")
    lines.append(f"| psql CREATE INDEX (in a migration's transaction) | {cre['build_s']:.1f} s | {cre['inserts']} | "
                 f"{cre['max_ms']:.0f} ms | {cre['p99_ms']:.0f} ms | {cre['over_lock_timeout']} |")
    lines.append("")
    lines.append(f"Build time, resource / psql: {b['ratio']:.2f}x (runs: resource {b['resource']['seconds']}, psql "
                 f"{b['psql']['seconds']}). Recall@10 against an exact scan, {r.get('queries', 100)} queries: "
                 + ", ".join(f"{v:.3f} at hnsw.ef_search={k}" for k, v in r["recall_at_10"].items()) + ".")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
