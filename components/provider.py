"""Stacks deployed before the rename to ``llmemory_db`` hold their dynamic providers pickled by reference as
``components.provider.MigrationsProvider`` / ``ExtensionCheckProvider``: these names keep resolving to the
current classes, so those stacks refresh, update and destroy. Do not remove."""
from llmemory_db.provider import ExtensionCheckProvider, MigrationsProvider  # noqa: F401
