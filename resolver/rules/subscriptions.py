"""Your own lists: `aidns lists add` copies a file or fetches a URL into `<data-dir>/lists/`,
`update` refreshes them with conditional requests, `remove` deletes them.

A new copy replaces the old one only once it has parsed and has entries; when a fetch or a
parse fails, the last good copy stays in use and the sidecar records the error.
"""

from __future__ import annotations

import contextlib
import filecmp
import json
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aidns.resolver.config import Settings
from aidns.resolver.datafiles import locked, write_atomic
from aidns.resolver.errors import AidnsError, ConfigError, ListError
from aidns.resolver.rules.catalogue import LIST_NAME, forget_list, list_names
from aidns.resolver.rules.fetch import (
    FETCH_TIMEOUT_S,
    FetchError,
    Progress,
    copy_list,
    fetch,
)
from aidns.resolver.rules.lists import (
    SOURCE_SUFFIX,
    YAML_SUFFIXES,
    DomainList,
    ListAction,
    read_source,
    source_path,
)
from aidns.resolver.rules.parsers import load_text_list
from aidns.resolver.rules.yamllists import load_yaml_list

ACTIONS = (ListAction.BLOCK, ListAction.WATCH)


@dataclass(frozen=True, slots=True)
class Installed:
    """A list `add` installed, as loaded."""

    name: str
    path: Path
    source: str
    loaded: DomainList


@dataclass(frozen=True, slots=True)
class Updated:
    """What `update` did to one list: updated, unchanged or failed (the old copy kept)."""

    name: str
    status: str
    detail: str
    entries: int | None = None
    previous: int | None = None
    kept_from: float | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "detail": self.detail,
            "entries": self.entries,
            "previous": self.previous,
            "kept_from": self.kept_from,
        }


def is_url(source: str) -> bool:
    return source.lower().startswith(("http://", "https://"))


def default_name(source: str) -> str:
    """A list name from the last part of a path or URL: `.../StevenBlack/hosts` -> `hosts`."""
    tail = Path(source).name
    if is_url(source):
        parsed = urllib.parse.urlsplit(source)
        tail = parsed.path.rstrip("/").rsplit("/", 1)[-1]
        if not tail:  # https://lists.example/ -> lists-example
            tail = (parsed.hostname or "") + ".url"
    stem = tail.rsplit(".", 1)[0] if "." in tail else tail
    return re.sub(r"[^a-z0-9]+", "-", stem.lower()).strip("-")[:50].strip("-")


def _is_yaml(source: str) -> bool:
    path = urllib.parse.urlsplit(source).path if is_url(source) else source
    return path.lower().endswith(YAML_SUFFIXES)


def add_list(
    settings: Settings,
    source: str,
    name: str | None = None,
    action: ListAction | None = None,
    timeout_s: float = FETCH_TIMEOUT_S,
    progress: Progress | None = None,
) -> Installed:
    """Copy or fetch a list into the data dir, check it parses, and record where it came from."""
    if "://" in source and not is_url(source):
        raise ConfigError(f"{source}: give a local path or an http:// or https:// URL")
    if action is not None and action not in ACTIONS:
        raise ConfigError(f"--action: {action} is not block or watch")
    yaml_list = _is_yaml(source)
    wanted = name or ("" if yaml_list else default_name(source))
    if wanted:
        _check_new_name(settings, wanted)
    lists_dir = settings.data_dir / "lists"
    lists_dir.mkdir(parents=True, exist_ok=True)
    if is_url(source):
        fetched = fetch(source, lists_dir, "", "", timeout_s, progress)
        assert fetched is not None  # no validators sent, so never "not modified"
        temporary, etag, last_modified = fetched
    else:
        temporary, etag, last_modified = copy_list(Path(source).expanduser(), lists_dir), "", ""
        source = str(Path(source).expanduser().resolve())
    try:
        loaded = _parse(temporary, yaml_list, action or ListAction.BLOCK, source)
        if yaml_list:
            if name and loaded.name != name:
                raise ConfigError(
                    f"{source} calls itself {loaded.name!r}: a YAML list carries its own name; "
                    "drop --name or edit the file"
                )
            if action is not None and loaded.action is not action:
                raise ConfigError(
                    f"{source} says `action: {loaded.action}`: a YAML list carries its own "
                    "action; drop --action or edit the file"
                )
            wanted = loaded.name
        with locked(settings.data_dir):
            _check_new_name(settings, wanted)
            target = lists_dir / f"{wanted}{'.yaml' if yaml_list else '.txt'}"
            os.replace(temporary, target)
            now = time.time()
            _write_source(
                target,
                {
                    "name": wanted,
                    "source": source,
                    "action": str(loaded.action),
                    "format": "yaml" if yaml_list else "text",
                    "etag": etag,
                    "last_modified": last_modified,
                    "updated": now,
                    "checked": now,
                    "entries": len(loaded),
                    "error": "",
                },
            )
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
    loaded.name, loaded.source = wanted, str(target)
    return Installed(wanted, target, source, loaded)


def _check_new_name(settings: Settings, name: str) -> None:
    if not LIST_NAME.fullmatch(name):
        raise ConfigError(
            f"{name!r} can't name a list: use lower-case letters, digits and dashes "
            "(give one with --name)"
        )
    existing = list_names(settings.list_dirs)
    if name in existing:
        added = (settings.data_dir / "lists" / (name + SOURCE_SUFFIX)).exists()
        how = (
            f"or refresh it with `aidns lists update {name}`"
            if added
            else "or turn it on or off with `aidns lists enable` or `disable`"
        )
        raise ConfigError(
            f"there is already a list called {name!r} ({existing[name]}); "
            f"give another --name, {how}"
        )


def _parse(path: Path, yaml_list: bool, action: ListAction, source: str) -> DomainList:
    """The list in a downloaded or copied file; ListError unless it has entries."""
    try:
        loaded = load_yaml_list(path) if yaml_list else load_text_list(path, action)
    except ListError as exc:
        raise ListError(str(exc).replace(str(path), source, 1)) from None
    if not len(loaded):
        shown = "; ".join(p.replace(str(path), source) for p in loaded.problems[:3])
        raise ListError(
            f"{source}: no usable entries in it"
            + (f" ({loaded.skipped} lines skipped, e.g. {shown})" if loaded.skipped else "")
        )
    for index, problem in enumerate(loaded.problems):
        loaded.problems[index] = problem.replace(str(path), source)
    return loaded


def _write_source(list_path: Path, meta: dict[str, Any]) -> None:
    write_atomic(source_path(list_path), json.dumps(meta, indent=1) + "\n")


def _added_lists(settings: Settings) -> dict[str, Path]:
    """The lists `add` installed, by name, found by their sidecars (so a list whose file
    was deleted is fetched again)."""
    found: dict[str, Path] = {}
    for meta_path in sorted((settings.data_dir / "lists").glob("*" + SOURCE_SUFFIX)):
        name = meta_path.name.removesuffix(SOURCE_SUFFIX)
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            meta = {}
        suffix = ".yaml" if isinstance(meta, dict) and meta.get("format") == "yaml" else ".txt"
        found[name] = meta_path.with_name(name + suffix)
    return found


def update_lists(
    settings: Settings,
    names: tuple[str, ...] = (),
    timeout_s: float = FETCH_TIMEOUT_S,
    progress: Progress | None = None,
) -> list[Updated]:
    """Refresh the added lists (all, or the named ones), one result per list."""
    added = _added_lists(settings)
    unknown = [name for name in names if name not in added]
    if unknown:
        raise ConfigError(
            f"no added list named {', '.join(map(repr, unknown))}; "
            f"added lists: {', '.join(sorted(added)) or 'none (see `aidns lists add`)'}"
        )
    return [
        _update_one(settings, name, added[name], timeout_s, progress)
        for name in names or sorted(added)
    ]


def _update_one(
    settings: Settings, name: str, path: Path, timeout_s: float, progress: Progress | None
) -> Updated:
    meta = read_source(path)
    source = str(meta.get("source", ""))
    yaml_list = path.suffix.lower() in YAML_SUFFIXES
    previous = meta.get("entries")
    kept_from = meta.get("updated")
    have_copy = path.exists()
    temporary: Path | None = None
    try:
        if not source:
            raise FetchError(f"{source_path(path)} names no source; add the list again")
        if is_url(source):
            fetched = fetch(
                source,
                path.parent,
                str(meta.get("etag") or "") if have_copy else "",
                str(meta.get("last_modified") or "") if have_copy else "",
                timeout_s,
                progress,
            )
            if fetched is None:
                return _unchanged(settings, path, meta, "not modified (HTTP 304)")
            temporary, etag, last_modified = fetched
        else:
            temporary, etag, last_modified = copy_list(Path(source), path.parent), "", ""
        if have_copy and filecmp.cmp(temporary, path, shallow=False):
            meta.update(etag=etag or meta.get("etag", ""), last_modified=last_modified)
            return _unchanged(settings, path, meta, "same content")
        action = ListAction(str(meta.get("action", "block")))
        loaded = _parse(temporary, yaml_list, action, source)
        if yaml_list and loaded.name != name:
            raise ListError(f"{source} now calls itself {loaded.name!r}, not {name!r}")
        with locked(settings.data_dir):
            os.replace(temporary, path)
            now = time.time()
            meta.update(
                etag=etag,
                last_modified=last_modified,
                updated=now,
                checked=now,
                entries=len(loaded),
                error="",
            )
            _write_source(path, meta)
        skipped = f", {loaded.skipped} lines skipped" if loaded.skipped else ""
        return Updated(name, "updated", f"{len(loaded)} entries{skipped}", len(loaded), previous)
    except AidnsError as exc:
        with locked(settings.data_dir):
            meta.update(checked=time.time(), error=str(exc))
            _write_source(path, meta)
        kept = "; kept the copy in use" if have_copy else ""
        return Updated(name, "failed", f"{exc}{kept}", None, previous, kept_from)
    finally:
        if temporary is not None:
            temporary.unlink(missing_ok=True)


def _unchanged(settings: Settings, path: Path, meta: dict[str, Any], why: str) -> Updated:
    with locked(settings.data_dir):
        meta.update(checked=time.time(), error="")
        _write_source(path, meta)
    entries = meta.get("entries")
    return Updated(path.stem, "unchanged", why, entries, entries, meta.get("updated"))


def remove_list(settings: Settings, name: str) -> Path:
    """Delete a list from the data dir, with its sidecar and its enable/disable choice."""
    lists_dir = settings.data_dir / "lists"
    with locked(settings.data_dir):
        ours = list_names([lists_dir])
        if name not in ours:
            everywhere = list_names(settings.list_dirs)
            if name in everywhere:
                raise ConfigError(
                    f"{name!r} is a shipped list and can't be removed; "
                    f"turn it off with `aidns lists disable {name}`"
                )
            raise ConfigError(
                f"no list named {name!r} in {lists_dir}; yours: {', '.join(sorted(ours)) or 'none'}"
            )
        path = ours[name]
        path.unlink(missing_ok=True)
        source_path(path).unlink(missing_ok=True)
        forget_list(settings, name)
    return path
