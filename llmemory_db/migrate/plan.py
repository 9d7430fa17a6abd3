"""Planning: compare the files on disk with the history table (a pure function, no I/O)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from .errors import ChecksumMismatchError
from .files import Migration


@dataclass(frozen=True)
class Plan:
    applied: List[Migration]                 # on disk and recorded with the same checksum
    pending: List[Migration]                 # on disk, not recorded: to apply, in this order
    missing: List[str]                       # recorded but no longer on disk (reported, never an error)
    mismatched: List[Tuple[str, str, str]]   # (filename, recorded checksum, current checksum)
    module: str
    history_table: str

    @property
    def checksums(self) -> Dict[str, str]:
        return {m.filename: m.checksum for m in sorted(self.applied + self.pending, key=lambda m: m.filename)}

    def mismatch_error(self) -> Optional[ChecksumMismatchError]:
        if not self.mismatched:
            return None
        return ChecksumMismatchError(self.mismatched, self.module, self.history_table)

    def raise_for_mismatch(self) -> None:
        error = self.mismatch_error()
        if error is not None:
            raise error


def plan(files: Sequence[Migration], recorded: Mapping[str, str], *, module: str,
         history_table: str) -> Plan:
    """``recorded`` maps filename -> checksum of the history rows of this module."""
    applied, pending, mismatched = [], [], []
    for migration in files:
        checksum = recorded.get(migration.filename)
        if checksum is None:
            pending.append(migration)
        elif checksum != migration.checksum:
            mismatched.append((migration.filename, checksum, migration.checksum))
        else:
            applied.append(migration)
    on_disk = {m.filename for m in files}
    missing = sorted(name for name in recorded if name not in on_disk)
    return Plan(applied, pending, missing, mismatched, module, history_table)
