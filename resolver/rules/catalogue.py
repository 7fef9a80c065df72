"""The list catalogue: which lists there are, which are on and why.

A list is on when its file says `default: on`, unless the config's `lists: {enable, disable}`
says otherwise, unless `aidns lists enable/disable` (`<data-dir>/lists.state.yaml`) says
otherwise again: the state file is applied last because it holds the latest thing you said.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from aidns.resolver import yamlio
from aidns.resolver.config import Settings
from aidns.resolver.datafiles import locked, read_limited, write_atomic
from aidns.resolver.errors import ConfigError
from aidns.resolver.rules.lists import YAML_SUFFIXES, DomainList, ListAction, list_files
from aidns.resolver.rules.loading import load_list

STATE_NAME = "lists.state.yaml"
STATE_MAX_BYTES = 1 << 20
STATE_HEADER = (
    "# Written by `aidns lists enable` and `aidns lists disable`; applied after the config's\n"
    "# `lists:`, so the latest choice wins. Hand edits are fine.\n"
)
LIST_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,48}[a-z0-9])?")


class UnknownListError(ConfigError):
    """A list name that no list file has."""

    def __init__(self, name: str, known: Iterable[str]):
        self.known = sorted(known)
        super().__init__(f"no list named {name!r}; the lists are: {', '.join(self.known)}")


@dataclass(frozen=True, slots=True)
class ListState:
    """What `aidns lists enable/disable` recorded."""

    enable: tuple[str, ...] = ()
    disable: tuple[str, ...] = ()


def read_state(data_dir: Path) -> ListState:
    """The state file; a missing one is no choices. Errors name the file and line."""
    path = data_dir / STATE_NAME
    try:
        text = read_limited(path, STATE_MAX_BYTES, "the list state file").decode("utf-8")
    except FileNotFoundError:
        return ListState()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc}", source=str(path)) from None
    try:
        document = yamlio.load(text)
    except yaml.YAMLError as exc:
        raise yamlio.error(exc, path) from None
    document = document or {}
    names: dict[str, tuple[str, ...]] = {}
    if isinstance(document, dict) and set(document) <= {"enable", "disable"}:
        for key in ("enable", "disable"):
            value = document.get(key) or []
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                break
            names[key] = tuple(value)
    if len(names) != 2:
        raise ConfigError(
            "expected a mapping with `enable` and `disable`, each a list of list names",
            source=str(path),
        )
    return ListState(enable=names["enable"], disable=names["disable"])


def _write_state(data_dir: Path, state: ListState) -> None:
    body = yaml.safe_dump(
        {"enable": list(state.enable), "disable": list(state.disable)},
        default_flow_style=None,
        sort_keys=False,
    )
    write_atomic(data_dir / STATE_NAME, STATE_HEADER + body)


def enabled_and_why(
    domain_list: DomainList, settings: Settings, state: ListState
) -> tuple[bool, str]:
    """Whether a list is on, and what decided it: default, config, or the state file."""
    on, why = domain_list.enabled_by_default, "default"
    if domain_list.name in settings.disabled_lists:
        on, why = False, "config"
    elif domain_list.name in settings.enabled_lists:
        on, why = True, "config"
    if domain_list.name in state.disable:
        on, why = False, "lists disable"
    elif domain_list.name in state.enable:
        on, why = True, "lists enable"
    return on, why


def apply_list_choices(lists: Sequence[DomainList], settings: Settings) -> list[str]:
    """Turn lists on and off as the config and the state file say; the problems found."""
    state = read_state(settings.data_dir)
    names = {domain_list.name for domain_list in lists}
    problems = [
        f"lists: no list named {wanted!r} (have: {', '.join(sorted(names))})"
        for wanted in dict.fromkeys((*settings.enabled_lists, *settings.disabled_lists))
        if wanted not in names
    ]
    problems.extend(
        f"{settings.data_dir / STATE_NAME}: no list named {wanted!r} any more"
        for wanted in (*state.enable, *state.disable)
        if wanted not in names
    )
    for domain_list in lists:
        domain_list.enabled, _ = enabled_and_why(domain_list, settings, state)
    return problems


def list_names(directories: Iterable[Path]) -> dict[str, Path]:
    """Every list's name and file, without loading the lists (a text list is named by its file)."""
    found: dict[str, Path] = {}
    for path in list_files(directories):
        name = path.stem
        if path.suffix.lower() in YAML_SUFFIXES:
            try:
                document = yamlio.load(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, yaml.YAMLError):
                document = None
            if isinstance(document, dict) and document.get("name"):
                name = str(document["name"])
        found[name] = path
    return found


@dataclass(frozen=True, slots=True)
class Switch:
    """What `lists enable/disable` did."""

    name: str
    enabled: bool
    was_enabled: bool
    config_said: bool | None


def set_list_enabled(settings: Settings, name: str, enabled: bool) -> Switch:
    """Record that a list is to be on or off; UnknownListError names the lists there are."""
    files = list_names(settings.list_dirs)
    if name not in files:
        raise UnknownListError(name, files)
    path = files[name]
    # Only a YAML list has a `default`; a text list, maybe of a million names, needn't load.
    chosen = (
        load_list(path)
        if path.suffix.lower() in YAML_SUFFIXES
        else DomainList(name, ListAction.BLOCK, str(path))
    )
    with locked(settings.data_dir):
        state = read_state(settings.data_dir)
        was, _ = enabled_and_why(chosen, settings, state)
        enable = [n for n in state.enable if n != name]
        disable = [n for n in state.disable if n != name]
        (enable if enabled else disable).append(name)
        _write_state(settings.data_dir, ListState(tuple(enable), tuple(disable)))
    config_said = (
        False
        if name in settings.disabled_lists
        else True
        if name in settings.enabled_lists
        else None
    )
    return Switch(name, enabled, was, config_said)


def forget_list(settings: Settings, name: str) -> None:
    """Drop a removed list from the state file (the caller holds the data-dir lock)."""
    state = read_state(settings.data_dir)
    if name in state.enable or name in state.disable:
        _write_state(
            settings.data_dir,
            ListState(
                tuple(n for n in state.enable if n != name),
                tuple(n for n in state.disable if n != name),
            ),
        )
