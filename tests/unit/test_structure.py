"""The house stays livable: no module over 400 lines, no import circle, no module reaching into another's private
names, every stack config key the setting's name in camelCase."""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set

from llmemory_db.migrate.settings import Settings
from llmemory_db.migrate.spelling import camel
from tests.helpers import ROOT

PACKAGE = ROOT / "llmemory_db"


def modules() -> Dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


def imports(name: str, path: Path, known: Dict[str, Path]) -> Set[str]:
    """The modules of the package that ``name`` imports when it is loaded (not under TYPE_CHECKING)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):  # imports for type checkers only are not run
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", "")) == "TYPE_CHECKING":
            node.body = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            for alias in node.names:
                target = f"{base}.{alias.name}"
                found.add(target if target in known else base)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m in known}


def test_no_module_over_400_lines():
    long = {str(p.relative_to(ROOT)): n for p in modules().values() if (n := len(p.read_text().splitlines())) > 400}
    assert long == {}


def test_no_import_circle():
    known = modules()
    graph = {m: imports(m, p, known) for m, p in known.items() if p.name != "__init__.py"}
    circles: List[List[str]] = []

    def visit(node: str, stack: List[str], done: Set[str]) -> None:
        if node in stack:
            circles.append(stack[stack.index(node):] + [node])
            return
        if node in done or node not in graph:
            return
        done.add(node)
        for target in sorted(graph[node]):
            visit(target, stack + [node], done)

    done: Set[str] = set()
    for node in sorted(graph):
        visit(node, [], done)
    assert circles == []


def test_no_module_reaches_into_another_modules_private_names():
    known = modules()
    reached = []
    for name, path in known.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(("llmemory_db", "")) and node.level:
                reached += [(name, alias.name) for alias in node.names
                            if alias.name.startswith("_") and not alias.name.startswith("__")]
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__") \
                    and isinstance(node.value, ast.Name) and node.value.id not in ("self", "cls", "os", "sys"):
                reached.append((name, f"{node.value.id}.{node.attr}"))
    assert reached == []


def test_stack_config_keys_are_the_settings_names_in_camel_case():
    """Messages name config keys and YAML properties by this rule (spelling.camel), so it must hold."""
    assert {name: camel(name) for name in Settings.config_keys()} == Settings.config_keys()
