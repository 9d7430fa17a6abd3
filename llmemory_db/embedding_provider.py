"""The dynamic provider behind ``EmbeddingProvider`` (its child ``EmbeddingProviderTable``): an adapter only.

Properties in, one operation of :mod:`llmemory_db.migrate.embedding_ops` out, events printed, typed errors raised as
``ProviderError`` (no Python traceback). Pickled into state *by reference*
(``llmemory_db.embedding_provider.EmbeddingProviderAdapter``): keep this module path and the class name stable.
"""
from __future__ import annotations

import contextlib
from typing import Any, Dict, List

from pulumi.dynamic import CheckFailure, CheckResult, CreateResult, DiffResult, ReadResult, UpdateResult
from pulumi.runtime.rpc import UNKNOWN

from .migrate import embedding_ops
from .migrate.connection import ConnectionSettings
from .migrate.embedding_errors import EmbeddingConflictError, EmbeddingError
from .migrate.embeddings import EmbeddingSettings
from .migrate.errors import MigrationError
from .migrate.events import Event
from .props import CONNECTION
from .provider_host import Adapter, clean_errors, watch_engine

clean_errors()

# what the provider adds to the inputs (a refresh gives the inputs back without them)
OUTPUTS = ("table_name_out", "index_name", "coverage", "chunks", "vectors", "queued", "is_default",
           "index_definition", "drift")
TRACKED = tuple(n for n in EmbeddingSettings.names() if n != "spelling") + CONNECTION


def settings_of(props: Dict[str, Any]) -> EmbeddingSettings:
    return EmbeddingSettings.from_props(props)


def resource_id(props: Dict[str, Any]) -> str:
    return f"{props.get('database') or 'postgres'}/{props.get('schema')}/{props.get('provider_id')}"


def outputs_of(props: Dict[str, Any], outputs: Dict[str, Any], drift: List[str]) -> Dict[str, Any]:
    """The resource's state: its inputs, then what the database holds (``table_name`` stays the input as given;
    the table in use is ``table_name_out``)."""
    result = dict(props, **{k: v for k, v in outputs.items() if k != "table_name"})
    result.update(table_name_out=outputs["table_name"], drift=drift)
    return result


def inputs_of(props: Dict[str, Any]) -> Dict[str, Any]:
    return {k: v for k, v in props.items() if k not in OUTPUTS and not k.startswith("__")}


class EmbeddingProviderAdapter(Adapter):
    """check: embedding_ops.preflight; diff: inputs and live drift; create/update: embedding_ops.apply; read:
    embedding_ops.refresh; delete: embedding_ops.destroy."""

    def check(self, olds: Dict[str, Any], news: Dict[str, Any]) -> CheckResult:
        failures: List[CheckFailure] = []
        conflict = news.get("conflict")
        if conflict and conflict != UNKNOWN:  # a second default (or provider id, or table) in this program
            failures.append(self._failure(EmbeddingConflictError(conflict, setting="default"), news))
        unknown = news.get("schema") == UNKNOWN
        try:
            settings = settings_of(dict(news, schema="placeholder") if unknown else news)
        except MigrationError as exc:
            return CheckResult(news, failures + [self._failure(exc, news)])
        for name in embedding_ops.identity_changes(olds, news) if olds else []:
            failures.append(self._failure(embedding_ops.identity_error(name, olds.get(name), news.get(name)), news))
        if unknown or failures:
            return CheckResult(news, failures)
        try:
            conn = self.live(news)
            with conn or contextlib.nullcontext():
                result = embedding_ops.preflight(settings, conn, known=bool(olds),
                                                 on_event=self.sink(self._where(news), news))
        except MigrationError as exc:
            return CheckResult(news, [self._failure(exc, news)])
        return CheckResult(news, [self._failure(e, news) for e in result.failures])

    def _failure(self, error: MigrationError, props: Dict[str, Any]) -> CheckFailure:
        return CheckFailure(getattr(error, "setting", "") or "provider_id", self.fail(error, props).args[0])

    @staticmethod
    def _where(props: Dict[str, Any]) -> str:
        return f"embedding provider {props.get('provider_id')}"

    def diff(self, _id: str, olds: Dict[str, Any], news: Dict[str, Any]) -> DiffResult:
        where = self._where(news)
        changed = [k for k in TRACKED if olds.get(k) != news.get(k) and not (
            olds.get(k) is None and news.get(k) == EmbeddingSettings.defaults().get(k))]
        drift = list(olds.get("drift") or [])
        if not changed:  # the database may have moved without a refresh: an index dropped, a row edited
            conn = self.live(news)
            if conn is not None:
                with conn, self.engine(news):
                    drift = embedding_ops.refresh(conn, settings_of(news)).drift
        for line in drift:
            self.say(where, Event("drift", f"drift (the update repairs it): {line}"), news)
        if changed:
            self.say(where, Event("plan", f"changed: {', '.join(changed)}"), news)
        return DiffResult(changes=bool(changed or drift), replaces=[], stables=[], delete_before_replace=False)

    def _apply(self, props: Dict[str, Any], known: bool) -> Dict[str, Any]:
        watch_engine()
        with self.engine(props), ConnectionSettings.from_props(props).connect() as conn:
            result = embedding_ops.apply(conn, settings_of(props), known=known,
                                         on_event=self.sink(self._where(props), props))
        return outputs_of(props, result.outputs(), [])

    def create(self, props: Dict[str, Any]) -> CreateResult:
        return CreateResult(id_=resource_id(props), outs=self._apply(props, known=False))

    def update(self, _id: str, _olds: Dict[str, Any], news: Dict[str, Any]) -> UpdateResult:
        return UpdateResult(outs=self._apply(news, known=True))

    def read(self, id_: str, props: Dict[str, Any]) -> ReadResult:
        with self.engine(props), ConnectionSettings.from_props(self.current(props)).connect() as conn:
            now = embedding_ops.refresh(conn, settings_of(props))
        outs = outputs_of(props, now.result.outputs(), now.drift)
        return ReadResult(id_=id_, outs=outs, inputs=dict(inputs_of(props), **({"drift": now.drift} if now.drift
                                                                               else {})))

    def delete(self, _id: str, props: Dict[str, Any]) -> None:
        with self.engine(props), ConnectionSettings.from_props(self.current(props)).connect() as conn:
            event = embedding_ops.destroy(conn, settings_of(props), self.sink(self._where(props), props))
        self.say(self._where(props), event, props)


__all__ = ["EmbeddingProviderAdapter", "EmbeddingError"]
