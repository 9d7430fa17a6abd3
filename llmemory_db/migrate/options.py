"""The settings as command-line options and as stack config (``llmemory-db:*``): each built from the fields of
:class:`~.settings.Settings` (their help, flag, config key and default), never written out a second time."""
from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any, Callable, Dict, Iterable, Optional

from .errors import SettingError


def add_arguments(cls: type, parser: argparse.ArgumentParser, names: Iterable[str]) -> None:
    """Command-line options for the settings ``names`` (each command takes the ones it uses)."""
    for f in dataclasses.fields(cls):
        if f.name not in names or not f.metadata.get("cli"):
            continue
        flag, help_text, default = f.metadata["cli"], f.metadata["help"], f.default
        if f.type in (bool, "bool"):
            parser.add_argument(flag, dest=f.name, action="store_true", help=help_text)
        elif f.name == "extensions":
            parser.add_argument(flag, dest=f.name, action="append", default=None, metavar="NAME",
                                help=help_text + " (repeat the option for several)")
        elif f.name.endswith("timeout"):
            parser.add_argument(flag, dest=f.name, type=float, default=None, metavar="SECONDS",
                                help=f"{help_text} (default: {default if default is not None else 'unset'})")
        elif f.name == "risk_min_rows":
            parser.add_argument(flag, dest=f.name, type=int, default=None, metavar="ROWS",
                                help=f"{help_text} (default: {default:,})")
        else:
            parser.add_argument(flag, dest=f.name, default=None, choices=f.metadata.get("choices"),
                                help=help_text + (f" (default: {default})" if default is not None else ""))



def given(cls: type, namespace: argparse.Namespace) -> Dict[str, Any]:
    """The settings given on the command line (options left out keep the defaults)."""
    return {name: value for name, value in vars(namespace).items()
            if name in cls.names() and value is not None and value is not False}


def from_config(cls: type, get: Callable[[str], Optional[str]]) -> Dict[str, Any]:
    """From stack config: ``get(key)`` returns the raw string of ``llmemory-db:<key>`` or None
    (``pulumi.Config().get``). A value of the wrong type is an error naming the key."""
    values: Dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        key = f.metadata.get("config")
        raw = get(key) if key else None
        if raw is None:
            continue
        values[f.name] = _parse_config(f, key, raw)
    if values.get("accept_edits") == ():  # Pulumi.yaml's default: the setting's own (by where the files come from)
        del values["accept_edits"]
    return values


def _parse_config(f: "dataclasses.Field", key: str, raw: str) -> Any:
    def wrong(kind: str) -> SettingError:
        return SettingError(f"Invalid stack config llmemory-db:{key} = {raw!r}: {kind} expected", setting=f.name,
                            remedy=f"pulumi config set llmemory-db:{key} <{kind}> (see docs/configuration.md)")

    if f.type in (bool, "bool"):
        if raw.lower() not in ("true", "false"):
            raise wrong("true or false")
        return raw.lower() == "true"
    if f.name.endswith("timeout"):
        try:
            return float(raw)
        except ValueError:
            raise wrong("a number of seconds") from None
    if f.name == "risk_min_rows":
        try:
            return int(raw)
        except ValueError:
            raise wrong("a whole number of rows") from None
    if f.name in ("extensions", "accept_edits"):
        try:
            value = json.loads(raw)
        except ValueError:
            raise wrong("a list of names") from None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise wrong("a list of names")
        return tuple(value)
    return raw
