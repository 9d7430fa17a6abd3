"""Accepting an edit of an applied file: the new checksum in the history, the old one in an audit trail.

pgdbm compares each file's checksum with its history row and refuses an edited file, at every start of the
application. A release that edits a file it shipped (llmemory 0.5.0's ``001_complete_schema.sql`` changed comments
and added ``WITH SCHEMA public``) would block every upgrade. Once the edit is proven harmless (:mod:`.proof`) or
trusted explicitly, the history row takes the new checksum, so both this engine and the application's pgdbm start
on it, and ``<history>_edits`` keeps who changed what when, and why (the proof's verdict).
"""
from __future__ import annotations

from typing import List

import psycopg
from psycopg import sql

from .errors import EditedFileError
from .history import HistoryStore
from .proof import EditProof
from .settings import Settings


def create_audit_table(conn: psycopg.Connection, settings: Settings) -> None:
    try:
        conn.execute(sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} ("
            " id SERIAL PRIMARY KEY,"
            " module_name VARCHAR(100) NOT NULL,"
            " filename VARCHAR(255) NOT NULL,"
            " old_checksum VARCHAR(64) NOT NULL,"
            " new_checksum VARCHAR(64) NOT NULL,"
            " changed_at TIMESTAMPTZ NOT NULL DEFAULT now(),"
            " changed_by VARCHAR(100) NOT NULL DEFAULT CURRENT_USER,"
            " reason TEXT NOT NULL)").format(settings.edits_ident))
    except (psycopg.errors.UniqueViolation, psycopg.errors.DuplicateTable):
        pass  # created meanwhile by another module sharing the history table


def record(conn: psycopg.Connection, settings: Settings, edit: EditProof) -> List[str]:
    """Record the edited files' new checksums, with an audit row each, in one transaction under the module's lock;
    returns what was recorded, in words. A row that changed meanwhile (another applier accepted it, or recorded
    yet another checksum) is told apart: the same new checksum is fine, anything else refuses."""
    store = HistoryStore(conn, settings)
    create_audit_table(conn, settings)
    reason = ("trusted without proof" if not edit.proven else f"proof: {edit.verdict()}")[:2000]
    done = []
    with store.locked():
        for filename, old, new in edit.edited:
            cur = conn.execute(sql.SQL(
                "UPDATE {} SET checksum = %s WHERE filename = %s AND (module_name = %s OR module_name IS NULL) "
                "AND checksum = %s").format(settings.history_ident), (new, filename, settings.module_name, old))
            if cur.rowcount == 0:
                row = conn.execute(sql.SQL("SELECT checksum FROM {} WHERE filename = %s AND (module_name = %s OR "
                                           "module_name IS NULL)").format(settings.history_ident),
                                   (filename, settings.module_name)).fetchone()
                if row is not None and row[0] == new:
                    continue  # accepted meanwhile by another applier
                raise EditedFileError([(filename, row[0] if row else "(no row)", new)], settings.module_name,
                                      settings.history_display,
                                      "its history row changed while the edit was being recorded; nothing was "
                                      "recorded")
            conn.execute(sql.SQL("INSERT INTO {} (module_name, filename, old_checksum, new_checksum, reason) "
                                 "VALUES (%s, %s, %s, %s, %s)").format(settings.edits_ident),
                         (settings.module_name, filename, old, new, reason))
            done.append(f"{filename}: recorded its new checksum {new[:12]}… (was {old[:12]}…; {reason}); the old "
                        f"one is kept in {'.'.join(settings.edits_parts)}")
    return done


def audit(conn: psycopg.Connection, settings: Settings) -> List[tuple]:
    """The module's accepted edits, oldest first: (filename, old, new, changed_at, changed_by, reason)."""
    if conn.execute("SELECT to_regclass(%s)", (settings.edits_ident.as_string(conn),)).fetchone()[0] is None:
        return []
    return conn.execute(sql.SQL("SELECT filename, old_checksum, new_checksum, changed_at, changed_by, reason FROM {} "
                                "WHERE module_name = %s ORDER BY id").format(settings.edits_ident),
                        (settings.module_name,)).fetchall()
