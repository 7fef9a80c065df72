"""The config file: where it is, read and checked, with errors that name its keys and lines."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from aidns.resolver import yamlio
from aidns.resolver.configkeys import KNOWN_KEYS
from aidns.resolver.datafiles import read_limited
from aidns.resolver.errors import ConfigError, excerpt

T = TypeVar("T")


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def default_config_path() -> Path:
    if _is_root():
        return Path("/etc/aidns/config.yaml")
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "aidns" / "config.yaml"


def default_data_dir() -> Path:
    if _is_root():
        return Path("/var/lib/aidns")
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "aidns"


CONFIG_MAX_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class ConfigFile:
    """A parsed config file: its values and the line each key is on."""

    path: Path | None
    values: Mapping[str, Any]
    lines: Mapping[str, int]

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(
            f"{key}: {message}",
            source=str(self.path) if self.path else None,
            line=self.lines.get(key),
        )

    def blame(self, key: str, from_flag: bool, message: str) -> ConfigError:
        """The error for a bad `key`: on its flag (`--allow-net`) when the value came from
        one, else on its line in this file."""
        if from_flag:
            return ConfigError(f"--{key.replace('_', '-')}: {message}")
        return self.error(key, message)

    def checked(self, key: str, from_flag: bool, parse: Callable[[], T]) -> T:
        """`parse()`, with the ConfigError it raises blamed on `key`'s flag or line; a parser
        that names the key itself (`listen: ...`) is not named twice."""
        try:
            return parse()
        except ConfigError as exc:
            raise self.blame(key, from_flag, str(exc).removeprefix(f"{key}: ")) from None

    def texts(self, key: str) -> list[str] | None:
        """A list of strings, or one string as a list of one; None when not given."""
        value = self.values.get(key)
        if value is None:
            return None
        if isinstance(value, str | int | float):
            return [str(value)]
        if isinstance(value, list) and all(isinstance(v, str | int | float) for v in value):
            return [str(v) for v in value]
        raise self.error(key, f"expected {KNOWN_KEYS[key]}, got {excerpt(value)}")

    def number(self, key: str, flag: float | None, default: float, minimum: float) -> float:
        """The flag, else the file's value, else `default`; at least `minimum`."""
        value: Any = flag if flag is not None else self.values.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
            raise self.blame(
                key,
                flag is not None,
                f"expected a number of {KNOWN_KEYS[key]} of at least {minimum:g}, "
                f"got {excerpt(value)}",
            )
        return float(value)

    def switch(self, key: str, flag: bool | None, default: bool) -> bool:
        """The flag, else the file's true or false, else `default`."""
        value = self.values.get(key, default) if flag is None else flag
        if not isinstance(value, bool):
            raise self.error(key, f"expected true or false, got {excerpt(value)}")
        return value


def read_config_file(path: Path | None, required: bool) -> ConfigFile:
    if path is None or (not required and not path.exists()):
        return ConfigFile(None, {}, {})
    try:
        text = read_limited(path, CONFIG_MAX_BYTES, "a config file").decode("utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config: {exc.strerror}", source=str(path)) from None
    except UnicodeDecodeError:
        raise ConfigError("config is not UTF-8 text", source=str(path)) from None
    try:
        node = yamlio.compose(text)
        values = yamlio.load(text)
    except yaml.YAMLError as exc:
        raise yamlio.error(exc, path) from None
    if values is None:
        return ConfigFile(path, {}, {})
    if not isinstance(values, dict) or not isinstance(node, yaml.MappingNode):
        raise ConfigError(
            "the config must be a mapping of keys to values", source=str(path), line=1
        )
    lines = {str(key.value).replace("-", "_"): key.start_mark.line + 1 for key, _ in node.value}
    normalized = {str(key).replace("-", "_"): value for key, value in values.items()}
    config = ConfigFile(path, normalized, lines)
    for key in normalized:
        if key not in KNOWN_KEYS:
            raise config.error(key, f"unknown key; known keys: {', '.join(KNOWN_KEYS)}")
    return config
