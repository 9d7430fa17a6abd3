"""llmemory-db: PostgreSQL schemas (templated SQL migrations, pgdbm-compatible) as Pulumi components.

``from llmemory_db import MigratedSchema, MigratedSchemaArgs`` for the Pulumi layer; ``llmemory_db.migrate`` is the
engine and never imports Pulumi (the names below load lazily, so ``python -m llmemory_db.migrate`` starts
without Pulumi).
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

_EXPORTS = {
    "MigratedSchema": "llmemory_db.schema",
    "MigratedSchemaArgs": "llmemory_db.schema",
    "Migrations": "llmemory_db.migrations",
    "MigrationsArgs": "llmemory_db.migrations",
    "ConnectionArgs": "llmemory_db.migrations",
    "EmbeddingProvider": "llmemory_db.embeddings",
    "EmbeddingProviderArgs": "llmemory_db.embeddings",
}

__all__ = sorted(_EXPORTS) + ["LLMEMORY_MIGRATIONS"]


def _llmemory_migrations() -> str:
    """This project's rendering of the spec's llmemory schema: inside an installed wheel, else the repository's
    ``migrations/``."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "llmemory_migrations", here.parent / "migrations"):
        if candidate.is_dir():
            return str(candidate)
    return str(here.parent / "migrations")


LLMEMORY_MIGRATIONS = _llmemory_migrations()


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'llmemory_db' has no attribute {name!r}")
