"""YAML read with libyaml's C loader where PyYAML has it: several times faster than its own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from aidns.resolver.errors import ConfigError

try:
    SafeLoader: type = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - PyYAML built without libyaml
    SafeLoader = yaml.SafeLoader


def load(text: str | bytes) -> Any:
    """Like `yaml.safe_load`; raises yaml.YAMLError."""
    return yaml.load(text, Loader=SafeLoader)


def compose(text: str) -> yaml.Node | None:
    """The node tree, for the line of each key; raises yaml.YAMLError."""
    return yaml.compose(text, Loader=SafeLoader)


def error(
    exc: yaml.YAMLError, path: Path | str, kind: type[ConfigError] = ConfigError
) -> ConfigError:
    """A parse error as aidns reports it: the file, the line, and what is wrong there."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or exc
    line = mark.line + 1 if mark is not None else None
    return kind(f"not valid YAML: {problem}", source=str(path), line=line)
