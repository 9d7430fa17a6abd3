"""This repository's ``components/`` layout, kept for its own stack and for stacks written before the package
was renamed: every name is ``llmemory_db``'s (the same objects, not copies), loaded on first use as there.

New code imports ``llmemory_db``: a Pulumi project very often has a ``components/`` package of its own, which
shadows this one (deprecated; removed in 0.3).
"""
import llmemory_db as _impl

__all__ = _impl.__all__
LLMEMORY_MIGRATIONS = _impl.LLMEMORY_MIGRATIONS


def __getattr__(name: str):
    return getattr(_impl, name)
