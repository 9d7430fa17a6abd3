"""What the components of one Pulumi program share, and the claims they make, kept per program run.

Two components of one program may share an extension (one ``postgresql.Extension`` per database: two
``CREATE EXTENSION IF NOT EXISTS`` at once race on ``pg_extension``'s unique index) but never a module's history
(their histories would collide). A :class:`Program` records both; :meth:`Program.current` is the one of the run
in progress (a new run - another program, another test under Pulumi's mocks - gets a new one), so nothing is
process-wide and no test needs to reset anything.
"""
from __future__ import annotations

import weakref
from typing import Any, Callable, Dict, Hashable, Optional, Tuple

import pulumi
from pulumi.runtime import settings as pulumi_settings


class Program:
    def __init__(self) -> None:
        self.shared: Dict[Hashable, pulumi.Resource] = {}
        self.claims: Dict[Hashable, Tuple[str, str]] = {}

    _runs: "weakref.WeakKeyDictionary[Any, Program]" = weakref.WeakKeyDictionary()

    @classmethod
    def current(cls) -> "Program":
        """The program of the run in progress (keyed by the run's resource monitor)."""
        monitor = pulumi_settings.SETTINGS.monitor
        key = monitor if monitor is not None else cls
        program = cls._runs.get(key)
        if program is None:
            program = cls._runs[key] = cls()
        return program

    def share(self, key: Hashable, make: Callable[[], pulumi.Resource]) -> pulumi.Resource:
        """The resource made once for ``key`` in this program (the first component that needs it makes it)."""
        if key not in self.shared:
            self.shared[key] = make()
        return self.shared[key]

    def claim(self, key: Hashable, owner: str, what: str) -> Optional[Tuple[str, str]]:
        """Record that ``owner`` (a component's name) claims ``key`` for ``what``; returns the earlier claim of it,
        (owner, what), when it differs (the caller decides whether that is a collision)."""
        other = self.claims.setdefault(key, (owner, what))
        return None if other == (owner, what) else other
