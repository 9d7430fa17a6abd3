"""Settings named in the caller's terms.

The engine's messages name settings (``accept_schema_drift``, ``lock_retry_timeout``) without knowing who reads
them: a Python program passes ``accept_schema_drift=True``, a YAML program ``acceptSchemaDrift: true``, the command
line ``--accept-schema-drift``, and this repository's own stack program reads ``llmemory-db:acceptSchemaDrift``.
A message marks a setting with :func:`setting`; :func:`spell` writes it out for one caller at the boundary
(the command line, a provider, the package server). Unmarked text is left as it is.
"""
from __future__ import annotations

import json
import re
from typing import Mapping, Optional

STYLES = ("python", "yaml", "cli", "config")
_MARK = re.compile(r"\{setting:(?P<name>[a-z_]+)(?:=(?P<value>[^{}]*))?\}")


def setting(name: str, value: Optional[object] = None) -> str:
    """A reference to the setting ``name`` (optionally with the value to set) inside a message."""
    if value is None:
        return "{setting:%s}" % name
    if isinstance(value, (list, tuple)):
        text = json.dumps(list(value))
    else:
        text = "true" if value is True else "false" if value is False else str(value)
    return "{setting:%s=%s}" % (name, text)


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _python_value(value: str) -> str:
    if value in ("true", "false"):
        return value.title()
    if value.startswith("["):
        return repr(json.loads(value))
    try:
        float(value)
        return value
    except ValueError:
        return repr(value)


def spell(text: str, style: str = "python", flags: Optional[Mapping[str, str]] = None) -> str:
    """``text`` with every marked setting written for ``style`` (one of :data:`STYLES`). ``flags``: setting name ->
    command-line option, for the cli style (a setting without one is named as the program's argument). A stack
    config key is the setting's name in camelCase (``llmemory-db:acceptSchemaDrift``), as a YAML property is."""
    def one(match: "re.Match[str]") -> str:
        name, value = match.group("name"), match.group("value")
        if style == "yaml":
            return f"{camel(name)}: {value}" if value is not None else camel(name)
        if style == "cli":
            flag = (flags or {}).get(name)
            if flag is None:  # a setting the command line does not take: say so in the program's words
                return f"the {name} argument" + (f" ({name}={_python_value(value)})" if value is not None else "")
            if value in (None, "true"):
                return flag
            return f"{flag} {value}"
        if style == "config":
            key = camel(name)
            if value is not None and value.startswith("["):
                items = json.loads(value)
                return " and ".join(f"pulumi config set --path 'llmemory-db:{key}[{i}]' {item}"
                                    for i, item in enumerate(items))
            return f"pulumi config set llmemory-db:{key} {value}" if value is not None else f"llmemory-db:{key}"
        return f"{name}={_python_value(value)}" if value is not None else name
    return _MARK.sub(one, text)
