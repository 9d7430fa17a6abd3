"""llmemory-db components.

``from components import MigratedSchema, MigratedSchemaArgs`` for the Pulumi layer;
``components.migrate`` is the engine and never imports Pulumi (the names below
load lazily, so ``python -m components.migrate`` starts without Pulumi).
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

_EXPORTS = {
    "MigratedSchema": "components.schema",
    "MigratedSchemaArgs": "components.schema",
    "Migrations": "components.migrations",
    "MigrationsArgs": "components.migrations",
    "ConnectionArgs": "components.migrations",
}

__all__ = sorted(_EXPORTS) + ["LLMEMORY_MIGRATIONS"]


def _llmemory_migrations() -> str:
    """llmemory's migration folder: inside an installed wheel, else the repository's ``migrations/``."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "llmemory_migrations", here.parent / "migrations"):
        if candidate.is_dir():
            return str(candidate)
    return str(here.parent / "migrations")


LLMEMORY_MIGRATIONS = _llmemory_migrations()


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'components' has no attribute {name!r}")
