"""Stacks written before the import name became ``llmemory_db``: their state names the dynamic providers by the old
module path, and this module lets one ``pulumi up`` rewrite it.

Pulumi pickles a dynamic resource's provider *by reference* into the state (``__provider``), and runs the pickled
one for ``read`` (refresh) and ``delete`` (destroy); ``check``, ``diff`` and ``update`` run the program's. Version
0.1 was the package ``components`` and its stacks hold ``components.provider.MigrationsProvider`` /
``ExtensionCheckProvider``. The wheel no longer ships a top-level ``components`` (a project's own ``components/``
package collides with it), so:

- this repository's own stacks keep resolving the old path from its ``components/`` folder: Pulumi runs programs
  and their dynamic providers with the project folder on ``sys.path``;
- any other such stack: the providers' ``diff`` reports :func:`pickled_before_rename` as a change, so the next
  ``pulumi up`` (which never loads the old provider) updates the resource and the state then holds
  ``llmemory_db.provider.*``: refresh and destroy work from then on. Before that ``up``, a refresh or destroy
  needs the old module: a file ``components/provider.py`` in the project folder containing
  ``from llmemory_db.provider import ExtensionCheckProvider, MigrationsProvider`` (README, Troubleshooting).
"""
from __future__ import annotations

import base64
import binascii
from typing import Any, Dict

from .migrate.events import Event

PROVIDER_KEY = "__provider"  # pulumi.dynamic's key of the pickled provider in inputs and outputs
OLD_MODULE = b"components.provider"


def pickled_before_rename(props: Dict[str, Any]) -> bool:
    """Whether ``props`` (a resource's previous outputs) hold a provider pickled by its 0.1 path,
    ``components.provider``. Only the bytes are looked at: the old provider is never loaded."""
    value = props.get(PROVIDER_KEY)
    if not isinstance(value, str):
        return False
    try:
        return OLD_MODULE in base64.b64decode(value, validate=False)
    except (binascii.Error, ValueError):
        return False


def rename_note() -> Event:
    return Event("rename", "the state names this resource's provider by its pre-0.2 path components.provider; this "
                           "update rewrites it to llmemory_db.provider (nothing else changes)")
