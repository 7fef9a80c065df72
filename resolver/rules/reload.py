"""Watches the config, the rules, the pause file and every list, and reloads on a change.

Editors save by rename, by delete-then-create, or by many small writes; all of them end in
events on the file's directory, so directories are watched and a burst of events within
`debounce_s` gives one reload, run on the watcher's thread, off the serving path. In the
folders of single files (the data dir, the config's folder) the kernel is asked only for the
events that end a change (a close after writing, a create, a rename, a delete), never for
each write: the data dir also holds queries.db, whose every page write would otherwise wake
the watcher. A list folder also gives each write, so a list written slowly reloads once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from watchdog.events import (
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

log = logging.getLogger(__name__)
# watchdog logs every inotify event at debug level; with a log file in a watched directory
# each line would be an event of its own
logging.getLogger("watchdog").setLevel(logging.WARNING)

LIST_SUFFIXES = (".yaml", ".yml", ".txt", ".list", ".hosts")
# a file written in place ends in a close; a rename, a create or a delete is its own event
CHANGE_ENDS = [FileClosedEvent, FileCreatedEvent, FileDeletedEvent, FileMovedEvent]
EVERY_WRITE = [*CHANGE_ENDS, FileModifiedEvent]
# how long watchdog's dispatcher waits on its queue before looking again; stopping puts a
# marker in the queue, so this only bounds idle wake-ups (watchdog 7 waits without one)
DISPATCH_WAIT_S = 3600.0


class _Handler(FileSystemEventHandler):
    def __init__(self, relevant: Callable[[Path], bool], changed: Callable[[Path], None]) -> None:
        self.relevant = relevant
        self.changed = changed

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return
        for raw in (event.src_path, getattr(event, "dest_path", "")):
            if raw:
                path = Path(raw.decode() if isinstance(raw, bytes) else raw)
                if self.relevant(path):
                    self.changed(path)
                    return


class Reloader:
    """Calls `reload` once per burst of changes to the watched files. Files in `light` call
    their own callbacks instead (a pause needs no compile)."""

    def __init__(
        self,
        reload: Callable[[], None],
        files: Iterable[Path],
        list_dirs: Iterable[Path],
        debounce_s: float = 0.2,
        light: Mapping[Path, Callable[[], None]] | None = None,
    ) -> None:
        self.reload = reload
        self.light = {path.absolute(): call for path, call in (light or {}).items()}
        self._changed: set[Path] = set()
        self.files = {path.absolute() for path in files} | set(self.light)
        self.list_dirs = {path.absolute() for path in list_dirs}
        self.debounce_s = debounce_s
        self._observer: Observer | None = None  # type: ignore[valid-type]
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()

    def relevant(self, path: Path) -> bool:
        path = path.absolute()
        if path in self.files:
            return True
        return (
            path.parent in self.list_dirs
            and path.suffix.lower() in LIST_SUFFIXES
            and not path.name.startswith(".")
        )

    def changed(self, path: Path) -> None:
        log.debug("changed: %s", path)
        with self._lock:
            self._changed.add(path.absolute())
            if self._timer is not None:
                self._timer.cancel()
            self._timer = threading.Timer(self.debounce_s, self._fire)
            self._timer.daemon = True
            self._timer.start()

    def _fire(self) -> None:
        with self._lock:
            self._timer = None
            changed, self._changed = self._changed, set()
        try:
            for path in sorted(changed & set(self.light)):
                self.light[path]()
            if changed - set(self.light):
                self.reload()
        except Exception:
            log.exception("reload failed; the previous rules stay in effect")

    def start(self) -> None:
        directories = {path.parent for path in self.files} | self.list_dirs
        observer = Observer(timeout=DISPATCH_WAIT_S)
        handler = _Handler(self.relevant, self.changed)
        for directory in sorted(directories):
            if directory.is_dir():
                wanted = EVERY_WRITE if directory in self.list_dirs else CHANGE_ENDS
                observer.schedule(handler, str(directory), event_filter=wanted)
            else:
                log.info("not watching %s: it does not exist yet", directory)
        observer.daemon = True
        observer.start()
        self._observer = observer

    def stop(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(5)
