"""Proofs against the files: what the files produce, built in a scratch schema, compared with the live schema.

The files are rendered for a scratch schema and applied inside a transaction on the same server (short lock and
statement timeouts, the migration role's rights only), fingerprinted like the drift check with the scratch's name
written as the target's, and rolled back: nothing is left behind and no live table is locked.

Three callers: a verified baseline (adopting a schema made without a history), the ``drift`` command, and edited
applied files (:func:`prove_edits`: a release that edits a file it shipped, such as llmemory 0.5.0's 001). For the
last, comments are compared as a class of their own: an edit that only changes comments passes the proof.
"""
from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Sequence, Tuple

import psycopg
from psycopg import sql

from .drift import compare, inspect, unmanaged_tables
from .errors import ProofError
from .files import Migration
from .history import rollback
from .objects import ManagedObjects, managed_objects
from .render import render
from .settings import Settings

SCRATCH_PREFIX = "llmdb_scratch_"
_CONCURRENTLY = re.compile(r"\bCONCURRENTLY\b", re.IGNORECASE)
SCRATCH_LOCK_TIMEOUT = "2s"        # the scratch apply never waits long for a lock (it needs none on live tables)
SCRATCH_STATEMENT_TIMEOUT = "60s"

_COMMENTS = """
WITH ns AS (SELECT oid, nspname FROM pg_namespace WHERE nspname = %(schema)s),
rels AS (
  SELECT c.oid, c.relname, c.relkind FROM pg_class c JOIN ns ON c.relnamespace = ns.oid
  WHERE (%(all)s OR c.relname = ANY(%(names)s) OR EXISTS (
           SELECT 1 FROM pg_index x JOIN pg_class t ON t.oid = x.indrelid
           WHERE x.indexrelid = c.oid AND t.relname = ANY(%(names)s)))
    AND NOT (c.relname = ANY(%(exclude)s))
)
SELECT CASE r.relkind WHEN 'i' THEN 'index' WHEN 'I' THEN 'index' WHEN 'S' THEN 'sequence' WHEN 'v' THEN 'view'
       WHEN 'm' THEN 'view' ELSE 'table' END, r.relname, d.description
  FROM rels r JOIN pg_description d ON d.classoid = 'pg_class'::regclass AND d.objoid = r.oid AND d.objsubid = 0
UNION ALL
SELECT 'column', r.relname || '.' || a.attname, d.description
  FROM rels r JOIN pg_attribute a ON a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped
  JOIN pg_description d ON d.classoid = 'pg_class'::regclass AND d.objoid = r.oid AND d.objsubid = a.attnum
UNION ALL
SELECT 'constraint', r.relname || '.' || con.conname, d.description
  FROM rels r JOIN pg_constraint con ON con.conrelid = r.oid
  JOIN pg_description d ON d.classoid = 'pg_constraint'::regclass AND d.objoid = con.oid
UNION ALL
SELECT CASE p.prokind WHEN 'p' THEN 'procedure' ELSE 'function' END,
       p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')', d.description
  FROM pg_proc p JOIN ns ON p.pronamespace = ns.oid
  JOIN pg_description d ON d.classoid = 'pg_proc'::regclass AND d.objoid = p.oid
  WHERE %(all)s OR p.proname = ANY(%(functions)s)
"""


def _comments(conn: psycopg.Connection, schema: str, managed: ManagedObjects, everything: bool,
              exclude: Sequence[str], shown: str) -> Dict[str, str]:
    """``comment on <kind> <shown>.<name>`` -> the comment's text, for the objects the drift check covers."""
    rows = conn.execute(_COMMENTS, {"schema": schema, "all": everything,
                                    "names": list(managed.tables) + list(managed.sequences) + list(managed.views),
                                    "functions": list(managed.functions), "exclude": list(exclude)}).fetchall()
    return {f"comment on {kind} {shown}.{name}": text for kind, name, text in sorted(rows)}


@dataclass
class Built:
    """A schema's fingerprint (object -> digest) and its comments (object -> text)."""

    objects: Dict[str, str]
    comments: Dict[str, str] = field(default_factory=dict)


def _managed(settings: Settings, files: Sequence[Migration]) -> ManagedObjects:
    return managed_objects([render(m.sql, settings.schema, m.filename) for m in files], settings.schema)


def build(conn: psycopg.Connection, settings: Settings, files: Sequence[Migration]) -> Built:
    """What ``files`` produce, named as in the target schema (see the module): built in a scratch schema inside a
    transaction, read, rolled back."""
    scratch = SCRATCH_PREFIX + uuid.uuid4().hex[:12]
    # on the scratch's empty tables CONCURRENTLY buys nothing, and it cannot run in the proof's transaction
    rendered = [_CONCURRENTLY.sub("", render(m.sql, scratch, m.filename)) if m.no_transaction
                else render(m.sql, scratch, m.filename) for m in files]
    managed = _managed(settings, files)
    conn.execute(sql.SQL("BEGIN; SET LOCAL lock_timeout = {}; SET LOCAL statement_timeout = {}; "
                         "CREATE SCHEMA {}; SET LOCAL search_path TO {}, public").format(
        sql.Literal(SCRATCH_LOCK_TIMEOUT), sql.Literal(SCRATCH_STATEMENT_TIMEOUT), sql.Identifier(scratch),
        sql.Identifier(scratch)))
    try:
        for migration, text in zip(files, rendered):
            try:
                conn.execute(text)
            except psycopg.Error as exc:
                raise ProofError(
                    f"Could not build the schema of {migration.filename} in a scratch schema to compare with: "
                    f"{exc.diag.message_primary or exc} (SQLSTATE {exc.diag.sqlstate})", file=migration.filename,
                    remedy="the migration role needs CREATE on the database for a scratch schema (rolled back "
                           "afterwards); a file that names its schema without {{tables.x}}/{{schema}} cannot be "
                           "rebuilt elsewhere") from None
        conn.execute("SET LOCAL search_path TO pg_catalog")  # every name qualified, as live() reads them
        everything = bool(settings.schema)
        objects = inspect(conn, scratch, managed, settings.extensions, everything=everything,
                          rename=(scratch, settings.schema))
        return Built(objects, _comments(conn, scratch, managed, everything, (), settings.schema_name))
    finally:
        rollback(conn)


def live(conn: psycopg.Connection, settings: Settings, files: Sequence[Migration]) -> Built:
    """The live schema's fingerprint and comments for the objects ``files`` manage, read as :func:`build` reads."""
    managed = _managed(settings, files)
    conn.execute("BEGIN; SET LOCAL search_path TO pg_catalog")
    try:
        exclude = unmanaged_tables(conn, settings)
        objects = inspect(conn, settings.schema, managed, settings.extensions, exclude)
        return Built(objects, _comments(conn, settings.schema_name, managed, bool(settings.schema), exclude,
                                        settings.schema_name))
    finally:
        rollback(conn)


def diff_against_files(conn: psycopg.Connection, settings: Settings, files: Sequence[Migration]) -> List[str]:
    """How the live schema differs from what ``files`` produce, in the drift check's words (comments aside)."""
    return compare(build(conn, settings, files).objects, live(conn, settings, files).objects)


# --------------------------------------------------------------------------- edited applied files

@dataclass
class EditProof:
    """The proof of edited applied files: their schema, built from every applied file in its current text, against
    the live schema."""

    edited: List[Tuple[str, str, str]]                    # (file, recorded checksum, current checksum)
    differences: List[str] = field(default_factory=list)  # in the schema (objects, columns, constraints, ...)
    comments: List[str] = field(default_factory=list)     # comments that differ: reported, never a failure
    proven: bool = True                                   # False: trusted without the proof
    seconds: float = 0.0

    @property
    def clean(self) -> bool:
        return not self.differences

    def verdict(self) -> str:
        if not self.proven:
            return "TRUSTED WITHOUT PROOF (the live schema was not compared with the files)"
        if self.differences:
            return "the schema differs: " + "; ".join(self.differences)
        if self.comments:
            return ("comments only: " + "; ".join(self.comments)
                    + " (the live comments stay as they are; bringing them up to date is your call)")
        return "no difference in the schema"

    def lines(self) -> List[str]:
        return [f"{name}: edited after it was applied (recorded checksum {old[:12]}…, file {new[:12]}…)"
                for name, old, new in self.edited]

    def as_dict(self) -> dict:
        return {"edited": [{"file": n, "recorded": o, "current": c} for n, o, c in self.edited],
                "proof": self.verdict(), "clean": self.clean, "proven": self.proven,
                "differences": self.differences, "comments": self.comments}


def edited_files(files: Sequence[Migration], recorded: Mapping[str, str]) -> List[Tuple[str, str, str]]:
    return [(m.filename, recorded[m.filename], m.checksum) for m in files
            if m.filename in recorded and recorded[m.filename] != m.checksum]


def prove_edits(conn: psycopg.Connection, settings: Settings, files: Sequence[Migration],
                recorded: Mapping[str, str]) -> EditProof:
    """Build every applied file (``recorded``), each in its current text, in a scratch schema, and compare with the
    live schema: objects, columns, constraints, indexes, functions; comments as a class of their own."""
    import time
    started = time.perf_counter()
    applied = [m for m in files if m.filename in recorded]
    built, found = build(conn, settings, applied), live(conn, settings, applied)
    return EditProof(edited_files(files, recorded), compare(built.objects, found.objects),
                     compare(built.comments, found.comments), seconds=time.perf_counter() - started)


def accepted(settings: Settings, filename: str) -> bool:
    """Does ``settings.accept_edits`` accept an edit of ``filename`` once its proof is clean?"""
    return "*" in settings.accept_edits or filename in settings.accept_edits
