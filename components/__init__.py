"""llmemory-db components.

``from components import MigratedSchema, MigratedSchemaArgs`` for the Pulumi layer;
``components.migrate`` is the engine and never imports Pulumi (the names below
load lazily, so ``python -m components.migrate`` starts without Pulumi).
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "MigratedSchema": "components.schema",
    "MigratedSchemaArgs": "components.schema",
    "Migrations": "components.migrations",
    "MigrationsArgs": "components.migrations",
    "ConnectionArgs": "components.migrations",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'components' has no attribute {name!r}")
