"""Typed errors of embedding providers (:mod:`.embeddings`, :mod:`.embedding_ops`): subclasses of the engine's
:class:`~.errors.MigrationError`, so every caller that handles the engine's errors handles these. (They sit next to
:mod:`.errors`, which is at the house's 400-line limit.) ``str(error)`` is the whole message: what, where, remedy;
settings are named with :func:`.spelling.setting`, so each caller reads its own spelling."""
from __future__ import annotations

from .errors import MigrationError, SettingError


class EmbeddingSettingError(SettingError):
    """An argument of an embedding provider is invalid (``setting`` names it)."""


class EmbeddingError(MigrationError):
    """An embedding provider cannot be created, changed or removed as asked."""

    def __init__(self, message: str, *, setting: str = "", remedy: str = "") -> None:
        self.setting = setting  # the argument the refusal is about ('' when none is)
        super().__init__(message, remedy=remedy)


class EmbeddingConflictError(EmbeddingError):
    """The provider collides with what the database holds: a table of another shape under its table's name, a
    registry row with another table, dimension or model, another provider registered with its table."""


class CoverageError(EmbeddingError):
    """Making the provider the default is refused: too few chunks have a vector in its table."""


class DefaultProviderError(EmbeddingError):
    """The default provider cannot be removed (llmemory's searches read the default provider's table)."""


class EmbeddingIndexError(EmbeddingError):
    """The provider's vector index could not be built (what it left INVALID was dropped)."""


class EmbeddingLockError(EmbeddingError):
    """A short transaction of the provider (its table and registry row, the default switch, a backfill batch)
    waited longer than lock_timeout on every attempt."""
