"""What the engine tells its caller while it works: typed events, never bare strings.

Each operation takes a sink (``on_event``) and reports progress, warnings and decisions as :class:`Event` values;
the command line prints them to stderr, a dynamic provider prints them (Pulumi shows a provider's output), the
package server sends them to the engine as log messages of the resource with the severity mapped.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

SEVERITIES = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class Event:
    """One thing worth telling: ``kind`` says what (``lock-wait``, ``risk``, ``applied``, ``edit``, ``drift``,
    ``progress``, ``index``, ``tenant``, ...), ``text`` is the whole line a person reads."""

    kind: str
    text: str
    severity: str = "info"
    file: Optional[str] = None
    line: Optional[int] = None
    data: Dict[str, Any] = field(default_factory=dict, compare=False)  # numbers and names, for a renderer

    def __str__(self) -> str:
        return f"warning: {self.text}" if self.severity == "warning" else self.text

    def as_dict(self) -> dict:
        return {"kind": self.kind, "severity": self.severity, "file": self.file, "line": self.line,
                "text": self.text, **self.data}


Sink = Callable[[Event], None]


def ignore(_event: Event) -> None:
    """A sink that drops everything."""


class Collected(list):
    """A sink that keeps the events (tests, and callers that print them later)."""

    def __call__(self, event: Event) -> None:
        self.append(event)

    def texts(self) -> List[str]:
        return [e.text for e in self]
