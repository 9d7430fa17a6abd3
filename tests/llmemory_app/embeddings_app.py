"""The real llmemory 0.5.0 application for the embedding-provider test (tests/e2e/test_e2e_embeddings.py), offline.

    python embeddings_app.py add DSN SCHEMA                          add the documents (the default provider embeds)
    python embeddings_app.py add-late DSN SCHEMA DEFAULT_PROVIDER    add one more document, configured with that model
    python embeddings_app.py process DSN SCHEMA                      process_pending_embeddings() until the queue is empty
    python embeddings_app.py search DSN SCHEMA DEFAULT_PROVIDER QUERY   vector and hybrid search

Each prints one JSON object (or {"error": ...} and exit 1). The models are fakes (fake_models.py: deterministic,
dense): "openai" / "openai-text-embedding-3-small" is a 1,536-dimension one, "local-minilm" a 384-dimension one,
registered as a local provider, as the application registers its providers (``_embedding_providers``); the
configuration's default_provider is what embeds a search's query, as in a deployment.
"""
import asyncio
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from app import config  # noqa: E402  (seeds tiktoken's cache: the chunker works offline)
from fake_models import embed  # noqa: E402
from llmemory import LLMemory  # noqa: E402
from llmemory.config import EmbeddingProviderConfig  # noqa: E402
from llmemory.embedding_providers import EmbeddingProvider  # noqa: E402

OWNER = "tester"
DOCUMENTS = {
    "pets": "Cats are small domesticated felines. Dogs are loyal companions that guard the house.",
    "birds": "Parrots can imitate human speech. Crows solve puzzles and remember faces.",
    "db": "PostgreSQL with pgvector supports HNSW indexes for nearest neighbour search.",
    "ocean": "Whales sing long songs under the ocean. Dolphins hunt fish together in pods.",
    "garden": "Tomatoes need sun and water. Roses bloom in early summer near the fence.",
    "space": "Telescopes watch distant galaxies. Astronauts train for months before a launch.",
}


class Fake(EmbeddingProvider):
    def __init__(self, provider_id: str, provider_type: str, model: str, dimension: int) -> None:
        super().__init__(provider_id, EmbeddingProviderConfig(provider_type=provider_type, model_name=model,
                                                              dimension=dimension))

    async def generate_embeddings(self, texts):
        return [embed(t, self.config.dimension, self.config.model_name) for t in texts]


def memory_for(dsn: str, schema: str, default_provider: str = "openai") -> LLMemory:
    cfg = config(schema)
    cfg.embedding.default_provider = default_provider
    memory = LLMemory(connection_string=dsn, config=cfg)
    openai = Fake("openai", "openai", "text-embedding-3-small", 1536)
    minilm = Fake("local-minilm", "local", "all-MiniLM-L6-v2", 384)
    memory._embedding_providers.update({"openai": openai, "openai-text-embedding-3-small": openai,
                                        "local-minilm": minilm})
    return memory


async def add(memory: LLMemory) -> dict:
    added = {}
    for key, content in DOCUMENTS.items():
        result = await memory.add_document(owner_id=OWNER, id_at_origin=key, document_name=f"{key}.md",
                                           document_type="markdown", content=content)
        added[key] = [result.chunks_created, result.embeddings_created]
    return {"added": added}


async def add_late(memory: LLMemory) -> dict:
    result = await memory.add_document(owner_id=OWNER, id_at_origin="late", document_name="late.md",
                                       document_type="markdown", content="Volcanoes erupt lava and ash near islands.")
    return {"chunks": result.chunks_created, "embedded": result.embeddings_created}


async def process(memory: LLMemory) -> dict:
    total, rounds = 0, 0
    while True:
        done = await memory.process_pending_embeddings(batch_size=50, max_batches=4)
        rounds += 1
        total += done
        if not done or rounds > 50:
            return {"processed": total}


async def search(memory: LLMemory, query: str) -> dict:
    seen = {}
    for kind in ("vector", "hybrid"):
        results = await memory.search(owner_id=OWNER, query_text=query, search_type=kind, limit=5)
        seen[kind] = [{"chunk_id": str(r.chunk_id), "content": r.content, "similarity": r.similarity,
                       "score": r.score} for r in results]
    return seen


async def main(mode: str, dsn: str, schema: str, *rest: str) -> dict:
    memory = memory_for(dsn, schema, rest[0] if mode in ("search", "add-late") else "openai")
    try:
        await memory.initialize()
        if mode == "add":
            return await add(memory)
        if mode == "add-late":
            return await add_late(memory)
        if mode == "process":
            return await process(memory)
        return await search(memory, rest[1])
    finally:
        await memory.close()


if __name__ == "__main__":
    try:
        print(json.dumps(asyncio.run(main(*sys.argv[1:]))))
    except Exception as exc:  # the test reads the error
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
        sys.exit(1)
