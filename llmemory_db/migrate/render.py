"""``{{tables.x}}`` / ``{{schema}}`` templates, rendered exactly as pgdbm renders them.

pgdbm leaves anything it does not recognise in the SQL, where it later fails
with a puzzling syntax error; here a leftover placeholder is an error that
names the file and line.
"""
from __future__ import annotations

import re
from typing import Dict, Optional, Sequence

from .errors import TemplateError
from .identifiers import IDENTIFIER, check_identifier

_EXPLICIT = re.compile(r"{{tables\.([a-zA-Z0-9_]+)\.([a-zA-Z0-9_]+)}}")
_IMPLICIT = re.compile(r"{{tables\.([a-zA-Z0-9_]+)}}")
# What is left after rendering and looks like a placeholder: {{ followed by a word.
_LEFTOVER = re.compile(r"{{\s*[A-Za-z_\"'][^{}\n]*}}|{{\s*(?:tables|schema)\b[^\n]*")


def _line_of(text: str, index: int) -> int:
    return text.count("\n", 0, index) + 1


def render(text: str, schema: Optional[str], filename: str = "<sql>") -> str:
    """Render ``text`` for ``schema`` (None = standalone mode, objects in the default schema)."""

    def table(match: "re.Match[str]", name: str) -> str:
        if not IDENTIFIER.match(name):
            raise TemplateError(
                f"{filename}:{_line_of(text, match.start())}: placeholder {match.group(0)} names an invalid "
                f"table {name!r}", remedy="table names start with a letter or underscore, at most 63 characters",
                file=filename, line=_line_of(text, match.start()))
        return name

    def explicit(match: "re.Match[str]") -> str:
        other_schema = table(match, match.group(1))
        return f'"{other_schema}".{table(match, match.group(2))}'

    if schema:
        check_identifier(schema, "schema name")
        out = text.replace("{{schema}}", f'"{schema}"')
        out = _EXPLICIT.sub(explicit, out)
        out = _IMPLICIT.sub(lambda m: f'"{schema}".{table(m, m.group(1))}', out)
    else:
        out = text.replace("{{schema}}.", "").replace("{{schema}}", "public")
        out = _EXPLICIT.sub(explicit, out)
        out = _IMPLICIT.sub(lambda m: table(m, m.group(1)), out)

    leftover = _LEFTOVER.search(out)
    if leftover:
        line = _line_of(out, leftover.start())
        snippet = leftover.group(0)[:80]
        raise TemplateError(
            f"{filename}:{line}: unknown or malformed placeholder {snippet}",
            remedy="use {{tables.name}}, {{tables.schema.name}} or {{schema}}, with names made of letters, "
                   "digits and underscores",
            file=filename, line=line)
    return out


def render_files(migrations: Sequence, schema: Optional[str]) -> Dict[str, str]:
    """filename -> the file's SQL rendered for ``schema`` (files: :class:`~.files.Migration`)."""
    return {m.filename: render(m.sql, schema, m.filename) for m in migrations}
