"""Status: the files on disk against what the database recorded (history and in-flight log), one read."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Sequence

import psycopg

from .errors import Inflight, LintIssue
from .files import Migration, load
from .history import HistoryStore
from .inflight import InflightLog
from .plan import Plan, plan
from .settings import Settings


@dataclass
class Status:
    """What is on disk compared with what the database recorded."""

    plan: Plan
    history_exists: bool
    warnings: List[LintIssue] = field(default_factory=list)
    inflight: List[Inflight] = field(default_factory=list)  # no-transaction migrations started, not finished

    @property
    def interrupted(self) -> List[Inflight]:
        """Failed half-way, or started by a backend that is gone: never to finish by itself."""
        return [i for i in self.inflight if i.error or not i.alive]

    def as_dict(self) -> dict:
        return {
            "applied": [m.filename for m in self.plan.applied],
            "pending": [m.filename for m in self.plan.pending],
            "missing": self.plan.missing,
            "checksums": self.plan.checksums,
            "warnings": [str(w) for w in self.warnings],
            "interrupted": [i.describe() for i in self.interrupted],
            "running": [i.filename for i in self.inflight if i not in self.interrupted],
        }


def status(conn: psycopg.Connection, settings: Settings, files: Optional[Sequence[Migration]] = None) -> Status:
    files = load(settings.migrations_dir) if files is None else files
    store = HistoryStore(conn, settings)
    exists, inflight_exists = store.tables_exist()
    recorded = store.read() if exists else {}
    return Status(plan(files, recorded, module=settings.module_name, history_table=settings.history_display),
                  exists, inflight=InflightLog(store).read() if inflight_exists else [])
