"""The settings table of docs/configuration.md, generated from the engine's one settings object (``Settings``):
``python -m tools.docs`` rewrites it between its markers; ``tests/unit/test_docs.py`` fails when it is stale."""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from llmemory_db.migrate.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "configuration.md"
BEGIN, END = "<!-- settings-table:begin (python -m tools.docs) -->", "<!-- settings-table:end -->"
# the components' own arguments (not engine settings): name -> (default, meaning)
COMPONENT = {
    "extensions": ("`[vector]`", "extensions created in `public` if missing (never dropped), watched for drift "
                                 "(command line: `--extension NAME`, repeated, for the drift check)"),
    "runtime_roles": ("`[]`", "existing roles that get USAGE, CRUD on the tables, USAGE/SELECT on the sequences and "
                              "SELECT on the history"),
    "connection": ("the stack's `postgresql:` config", "how to reach PostgreSQL (host, port, username, password, "
                                                      "database, sslmode, sslrootcert)"),
    "adopt": ("`false`", "an existing deployment without Pulumi state: import the schema and the extensions instead "
                         "of creating them (one `up`)"),
}


def _default(field: dataclasses.Field) -> str:
    value = field.default
    if value is None:
        return "–"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, tuple):
        return f"`{list(value)}`"
    return f"`{value:,}`" if isinstance(value, int) and value >= 10_000 else f"`{value}`"


def table() -> str:
    """Every public setting: Python argument, YAML property / stack config key, CLI option, default, meaning."""
    rows = ["| Python argument | YAML property, stack config key (`llmemory-db:`) | command line | default | meaning |",
            "| --- | --- | --- | --- | --- |"]
    for f in dataclasses.fields(Settings):
        if f.metadata.get("internal") or f.name in COMPONENT:  # (a component's extensions: below)
            continue
        config = f.metadata.get("config")
        cli = f.metadata.get("cli")
        rows.append(f"| `{f.name}` | {f'`{config}`' if config else '–'} | {f'`{cli}`' if cli else '–'} | "
                    f"{_default(f)} | {' '.join(f.metadata['help'].split())} |")
    for name, (default, meaning) in COMPONENT.items():
        camel = name.split("_")[0] + "".join(w.title() for w in name.split("_")[1:])
        rows.append(f"| `{name}` | `{camel}` | – | {default} | {meaning} (the components' own argument) |")
    return "\n".join(rows)


def rendered(text: str) -> str:
    start, end = text.index(BEGIN), text.index(END)
    return text[:start + len(BEGIN)] + "\n" + table() + "\n" + text[end:]


def main() -> int:
    text = PAGE.read_text()
    PAGE.write_text(rendered(text))
    print(f"rewrote the settings table of {PAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
