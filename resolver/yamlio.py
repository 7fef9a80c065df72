"""YAML read with libyaml's C loader where PyYAML has it, and with no anchors or aliases."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from aidns.resolver.errors import ConfigError

try:
    SafeLoader: type = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - PyYAML built without libyaml
    SafeLoader = yaml.SafeLoader


class AliasRefused(yaml.YAMLError):
    """Anchors and aliases let a few lines stand for billions of nodes; aidns takes none."""

    def __init__(self, mark: Any) -> None:
        super().__init__("anchors and aliases (&name, *name) are not accepted")
        self.problem = str(self)
        self.problem_mark = mark


def refuse_aliases(text: str | bytes) -> None:
    """Raise AliasRefused at the first anchor or alias; the text is only parsed when it has
    an `&` or a `*` at all."""
    marks = ("&", "*") if isinstance(text, str) else (b"&", b"*")
    if not any(mark in text for mark in marks):  # type: ignore[operator]
        return
    for event in yaml.parse(text, Loader=SafeLoader):
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise AliasRefused(event.start_mark)


def load(text: str | bytes) -> Any:
    """Like `yaml.safe_load`, without anchors and aliases; raises yaml.YAMLError."""
    refuse_aliases(text)
    return yaml.load(text, Loader=SafeLoader)


def compose(text: str) -> yaml.Node | None:
    """The node tree, for the line of each key; raises yaml.YAMLError."""
    refuse_aliases(text)
    return yaml.compose(text, Loader=SafeLoader)


def error(
    exc: yaml.YAMLError, path: Path | str, kind: type[ConfigError] = ConfigError
) -> ConfigError:
    """A parse error as aidns reports it: the file, the line, and what is wrong there."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or exc
    line = mark.line + 1 if mark is not None else None
    return kind(f"not valid YAML: {problem}", source=str(path), line=line)
