"""Extensions the schema needs: present, or creatable by this user? Else the spec's remedy, before anything runs."""
from __future__ import annotations

from typing import Sequence

import psycopg

from .diagnosis import EXTENSION_REMEDY
from .errors import ExtensionError


def check_extensions(conn: psycopg.Connection, names: Sequence[str]) -> None:
    """Refuse, with the remedy, extensions that are missing and that this user cannot create (checked before
    pulumi-postgresql tries, whose error would say only "permission denied")."""
    rows = conn.execute(
        "SELECT n.name, EXISTS (SELECT 1 FROM pg_extension x WHERE x.extname = n.name), "
        "       EXISTS (SELECT 1 FROM pg_available_extensions a WHERE a.name = n.name), "
        "       coalesce((SELECT bool_or(v.trusted) FROM pg_available_extension_versions v "
        "                 WHERE v.name = n.name), false), "
        "       (SELECT rolsuper FROM pg_roles WHERE rolname = current_user), "
        "       has_database_privilege(current_database(), 'CREATE'), current_user, current_database() "
        "FROM unnest(%s::text[]) AS n(name)", (list(names),)).fetchall()
    for name, installed, available, trusted, superuser, can_create, user, database in rows:
        if installed:
            continue
        if not available:
            raise ExtensionError(
                f'extension "{name}" is not installed in database {database} and the server does not ship it',
                remedy="install it on the server (for pgvector: the postgresql-<version>-pgvector package), or "
                       "use a server that has it (the embedded PostgreSQL does)")
        if not (superuser or (trusted and can_create)):
            raise ExtensionError(
                f'permission denied to create extension "{name}": user {user} is not a superuser and the '
                f"extension is not installed in database {database}; nothing was created",
                remedy=EXTENSION_REMEDY.replace("vector", name))
