"""`<data-dir>/status.json`, which `aidns status` and `doctor` read: written when what it shows
changed, at most every 2 s, and left alone while nothing happens."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aidns.resolver.datafiles import write_status

STATUS_EVERY_S = 2.0


class StatusFile:
    """Writes what `compose` returns. `keep` runs on the event loop; `write` and `changed`
    may be called from any thread."""

    def __init__(
        self,
        data_dir: Path,
        compose: Callable[[], dict[str, Any]],
        arm: Callable[[], None],
        every_s: float = STATUS_EVERY_S,
        also: Callable[[], None] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.compose = compose
        self.arm = arm  # asks to be told (through `changed`) of the next query
        self.every_s = every_s
        self.also = also  # run on the writing thread after each write: housekeeping while busy
        self._lock = threading.Lock()
        self._wanted: asyncio.Event | None = None  # the loop's
        self._loop: asyncio.AbstractEventLoop | None = None

    def write(self, unless_shown: dict[str, Any] | None = None) -> dict[str, Any]:
        """Write the status as it is now, unless it shows `unless_shown`; what it shows. One
        writer at a time, each composing as it writes, so none leaves an older status."""
        with self._lock:
            status = self.compose()
            shown = {key: value for key, value in status.items() if key != "updated"}
            if shown != unless_shown:
                write_status(self.data_dir, status)
            return shown

    def _write_and_tidy(self, unless_shown: dict[str, Any] | None) -> dict[str, Any]:
        shown = self.write(unless_shown)
        if self.also is not None and shown != unless_shown:
            self.also()
        return shown

    def changed(self) -> None:
        """From any thread: something the status shows has changed."""
        loop, wanted = self._loop, self._wanted
        if loop is not None and wanted is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # closed meanwhile
                loop.call_soon_threadsafe(wanted.set)

    async def keep(self) -> None:
        """Write when what the status shows changed, at most every `every_s`; after a quiet
        spell only `changed` wakes this."""
        self._loop = asyncio.get_running_loop()
        wanted = self._wanted = asyncio.Event()
        written: dict[str, Any] | None = None
        while True:
            self.arm()
            wanted.clear()
            shown = await asyncio.to_thread(self._write_and_tidy, written)
            if shown == written:
                await wanted.wait()
                continue
            written = shown
            await asyncio.sleep(self.every_s)
