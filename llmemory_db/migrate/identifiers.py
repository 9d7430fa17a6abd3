"""Identifiers: schema, table, role and extension names, checked before they reach SQL (pgdbm's rule)."""
from __future__ import annotations

import re

from .errors import InvalidIdentifierError

IDENTIFIER = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]{0,62}$")


def check_identifier(value: str, what: str) -> str:
    """Return ``value`` if it is a plain PostgreSQL identifier (pgdbm's rule), else raise."""
    if not isinstance(value, str) or not IDENTIFIER.match(value):
        raise InvalidIdentifierError(
            f"Invalid {what} {value!r}: it must start with a letter or underscore and contain only "
            "letters, digits and underscores, at most 63 characters",
            remedy=f"choose a {what} such as llmemory or app_data")
    return value
