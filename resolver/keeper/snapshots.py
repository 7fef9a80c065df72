"""The server's side of rule snapshots: a compiler child makes one, the server maps it.

One compile runs at a time; a request that arrives meanwhile is served by the next compile,
so a burst of changes costs at most two. The child's work never holds the server's
interpreter lock: the server only waits on a pipe, then maps a finished file.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aidns.resolver.config import Settings, shipped_lists_dir
from aidns.resolver.errors import AidnsError, excerpt
from aidns.resolver.rules.catalogue import STATE_NAME
from aidns.resolver.rules.lists import list_files, source_path
from aidns.resolver.rules.matcher import DomainMatcher
from aidns.resolver.rules.snapshot import SNAPSHOT_NAME, map_snapshot
from aidns.resolver.rules.user import RULES_NAME, UserRule

log = logging.getLogger(__name__)

COMPILE_TIMEOUT_S = 600.0
CHILD_MODULE = "aidns.resolver.keeper.compile"


@dataclass(frozen=True, slots=True)
class Compiled:
    """A mapped snapshot and what the compiler said about it."""

    matcher: DomainMatcher

    @property
    def problems(self) -> list[str]:
        return list(self.matcher.meta.get("problems", []))

    @property
    def generation(self) -> int:
        return self.matcher.generation

    @property
    def list_info(self) -> list[dict[str, Any]]:
        return list(self.matcher.meta.get("list_info", []))

    @property
    def process_rules(self) -> list[UserRule]:
        return [
            UserRule(rule["name"], exact=rule["exact"], processes=tuple(rule["processes"]))
            for rule in self.matcher.meta.get("process_rules", [])
        ]


def input_stamps(settings: Settings) -> dict[str, Any]:
    """Every file a snapshot is compiled from, with its size, time and inode, and the aidns
    version: a snapshot whose stamps still match is the one a compile would make now."""
    paths = [settings.data_dir / RULES_NAME, settings.data_dir / STATE_NAME]
    if settings.config_path is not None:
        paths.append(settings.config_path)
    paths += settings.list_dirs
    for list_path in list_files(settings.list_dirs):
        paths += [list_path, source_path(list_path)]
    stamps: dict[str, Any] = {"aidns": importlib.metadata.version("aidns")}
    for path in paths:
        try:
            found = os.stat(path)
        except OSError:
            stamps[str(path)] = None
        else:
            stamps[str(path)] = [found.st_mtime_ns, found.st_size, found.st_ino]
    return stamps


class SnapshotKeeper:
    """Compiles the lists in a child process and maps the result; one compile at a time."""

    def __init__(self, settings: Settings, timeout_s: float = COMPILE_TIMEOUT_S) -> None:
        self.settings = settings
        self.timeout_s = timeout_s
        self.path = settings.data_dir / SNAPSHOT_NAME
        if not settings.data_dir.is_dir():
            self.path = Path(tempfile.mkdtemp(prefix="aidns-")) / SNAPSHOT_NAME
        self.generation = 0
        self._lock = threading.Lock()

    def last(self) -> Compiled | None:
        """The snapshot a previous run left, if this process can use it."""
        if not self.path.exists():
            return None
        try:
            matcher = map_snapshot(self.path)
        except AidnsError as exc:
            log.info("not starting from the last rule snapshot: %s", exc)
            return None
        self.generation = max(self.generation, matcher.generation)
        return Compiled(matcher)

    def current(self, compiled: Compiled) -> bool:
        """Whether `compiled` was made from the files as they are now."""
        return bool(compiled.matcher.meta.get("inputs") == input_stamps(self.settings))

    def compile(self, wait_for_quiet: bool = True) -> Compiled:
        """A new snapshot of the files as they are now; AidnsError keeps the old one in use.
        At start-up nothing is being edited, so the child need not wait for quiet files."""
        with self._lock:
            generation = self.generation + 1
            self._run_child(generation, wait_for_quiet)
            matcher = map_snapshot(self.path)
            if matcher.generation != generation:
                raise AidnsError("the compiled rule snapshot was replaced while it was read")
            self.generation = generation
            return Compiled(matcher)

    def _command(self, generation: int, wait_for_quiet: bool) -> list[str]:
        command = [sys.executable, "-m", CHILD_MODULE, f"--data-dir={self.settings.data_dir}"]
        if not wait_for_quiet:
            command.append("--quiet=0")
        command += [f"--out={self.path}", f"--generation={generation}"]
        if self.settings.config_path is not None:
            command.append(f"--config={self.settings.config_path}")
        return command

    def _run_child(self, generation: int, wait_for_quiet: bool) -> None:
        try:
            done = subprocess.run(
                self._command(generation, wait_for_quiet),
                capture_output=True,
                text=True,
                timeout=self.timeout_s,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            raise AidnsError(
                f"compiling the lists took over {self.timeout_s:g} s; stopped"
            ) from None
        except OSError as exc:
            raise AidnsError(f"cannot start the list compiler: {exc.strerror}") from None
        lines = done.stdout.strip().splitlines()
        try:
            said = json.loads(lines[-1]) if lines else None
        except ValueError:
            said = None
        if isinstance(said, dict) and said.get("ok") is True:
            return
        if isinstance(said, dict) and isinstance(said.get("error"), str):
            raise AidnsError(said["error"])
        why = done.stderr.strip().splitlines()[-1:] or [f"exit status {done.returncode}"]
        raise AidnsError(f"the list compiler failed: {excerpt(why[0], 200)}")


def vanished_shipped_lists(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> list[str]:
    """The shipped lists that were on before a reload and are not there at all after it."""
    shipped = str(shipped_lists_dir())
    was_on = {i["name"] for i in before if i["enabled"] and i["source"].startswith(shipped)}
    return sorted(was_on - {i["name"] for i in after})
