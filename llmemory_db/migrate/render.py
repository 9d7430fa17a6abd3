"""``{{tables.x}}`` / ``{{schema}}`` templates, rendered exactly as pgdbm renders them.

pgdbm leaves anything it does not recognise in the SQL, where it later fails
with a puzzling syntax error; here a leftover placeholder is an error that
names the file and line.
"""
from __future__ import annotations

import re
from typing import Optional

from .errors import InvalidIdentifierError, TemplateError

IDENTIFIER = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]{0,62}$")
_EXPLICIT = re.compile(r"{{tables\.([a-zA-Z0-9_]+)\.([a-zA-Z0-9_]+)}}")
_IMPLICIT = re.compile(r"{{tables\.([a-zA-Z0-9_]+)}}")
# What is left after rendering and looks like a placeholder: {{ followed by a word.
_LEFTOVER = re.compile(r"{{\s*[A-Za-z_\"'][^{}\n]*}}|{{\s*(?:tables|schema)\b[^\n]*")


def check_identifier(value: str, what: str) -> str:
    """Return ``value`` if it is a plain PostgreSQL identifier (pgdbm's rule), else raise."""
    if not isinstance(value, str) or not IDENTIFIER.match(value):
        raise InvalidIdentifierError(
            f"Invalid {what} {value!r}: it must start with a letter or underscore and contain only "
            "letters, digits and underscores, at most 63 characters",
            remedy=f"choose a {what} such as llmemory or app_data")
    return value


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
