"""Helpers shared by the test tiers: ``db`` (databases of the embedded server), ``stacks`` (the real Pulumi CLI
through the Automation API), ``faults`` (killed processes, slow statements), and :func:`write` for migration
folders."""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


def write(directory: Path, files: dict) -> Path:
    """Write ``files`` (name -> text or bytes) into ``directory``, created if missing."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        data = text if isinstance(text, bytes) else text.encode("utf-8")
        (directory / name).write_bytes(data)
    return directory
