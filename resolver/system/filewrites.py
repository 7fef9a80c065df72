"""Writes to single files as a descriptor an event loop can wait on (Linux inotify).

A directory's watch misses a write to a bind-mounted file (a container's or a network
namespace's resolv.conf): the kernel tells only the watchers of the file itself. Elsewhere,
or if inotify is unavailable, `fileno` is None and the caller relies on its other means.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)

IN_CLOSE_WRITE = 0x008
IN_MOVE_SELF = 0x800
IN_DELETE_SELF = 0x400
WANTED = IN_CLOSE_WRITE | IN_MOVE_SELF | IN_DELETE_SELF
READ_BYTES = 4096


class FileWrites:
    """Watches `paths` themselves; read `fileno` when it is readable, then call `drain`."""

    def __init__(self, paths: Iterable[Path]) -> None:
        self.fileno: int | None = None
        if not sys.platform.startswith("linux"):
            return
        existing = [path for path in paths if path.is_file()]
        if not existing:
            return
        try:
            libc = ctypes.CDLL(None, use_errno=True)  # the process's own symbols hold libc's
            fd = int(libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC))
        except (OSError, AttributeError) as exc:
            log.info("not watching %s for writes: %s", ", ".join(map(str, existing)), exc)
            return
        if fd < 0:
            log.info("not watching files for writes: %s", os.strerror(ctypes.get_errno()))
            return
        for path in existing:
            if libc.inotify_add_watch(fd, os.fsencode(path), WANTED) < 0:
                log.info("not watching %s: %s", path, os.strerror(ctypes.get_errno()))
        self.fileno = fd

    def drain(self) -> None:
        """Read the events waiting: which file it was does not matter to the caller."""
        if self.fileno is None:
            return
        try:
            while os.read(self.fileno, READ_BYTES):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        if self.fileno is not None:
            os.close(self.fileno)
            self.fileno = None
