"""Loading every list: the right reader for each file, limits, and last good versions."""

from __future__ import annotations

import stat
from collections.abc import Iterable
from pathlib import Path

from aidns.resolver.config import ListLimits
from aidns.resolver.errors import ListError
from aidns.resolver.rules.lastgood import LastGood
from aidns.resolver.rules.lists import (
    TEXT_SUFFIXES,
    YAML_SUFFIXES,
    DomainList,
    list_files,
    source_action,
)
from aidns.resolver.rules.parsers import NO_MORE_THAN_DEFAULT, load_text_list
from aidns.resolver.rules.yamllists import load_yaml_list


def load_list(path: Path, limits: ListLimits = NO_MORE_THAN_DEFAULT) -> DomainList:
    """Read a YAML or text list file; raises ListError when the file can't be used at all,
    and when it goes over one of `limits`."""
    try:
        regular = stat.S_ISREG(path.stat().st_mode)
    except OSError as exc:
        raise ListError(f"cannot read: {exc.strerror}", source=str(path)) from None
    if not regular:  # a FIFO would block the reader for good
        raise ListError("not a regular file", source=str(path))
    suffix = path.suffix.lower()
    if suffix in YAML_SUFFIXES:
        return load_yaml_list(path, limits)
    if suffix in TEXT_SUFFIXES:
        return load_text_list(path, source_action(path), limits)
    raise ListError(
        f"unknown list format {suffix!r} (use .yaml, or .txt for hosts, AdBlock or plain lists)",
        source=str(path),
    )


def load_lists(
    directories: Iterable[Path],
    limits: ListLimits = NO_MORE_THAN_DEFAULT,
    last_good: LastGood | None = None,
) -> tuple[list[DomainList], list[str]]:
    """Every list in the directories; a list with the same name in a later directory replaces it.
    With `last_good`, a list that can't be used now is its last good version, if it has one."""
    by_name: dict[str, DomainList] = {}
    errors: list[str] = []
    for path in list_files(directories):
        try:
            loaded = load_list(path, limits)
        except ListError as exc:
            kept = last_good.fetch(path) if last_good is not None else None
            if kept is None:
                errors.append(str(exc))
                continue
            errors.append(f"{exc}; using its last good version, from {kept.when}")
            loaded = kept.domain_list
        else:
            if last_good is not None:
                last_good.keep(path, loaded)
        errors.extend(loaded.problems)
        if loaded.skipped > len(loaded.problems):
            errors.append(f"{loaded.source}: {loaded.skipped} bad entries skipped in all")
        by_name[loaded.name] = loaded
    return list(by_name.values()), errors
