"""Following the system's nameservers when no upstream is configured: a laptop that joins
another network forwards to that network's nameservers within a second."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path

from aidns.resolver.discovery import default_upstreams, remember_upstreams
from aidns.resolver.endpoints import ListenAddress
from aidns.resolver.system.filewrites import FileWrites
from aidns.resolver.upstream.pool import UpstreamPool

log = logging.getLogger(__name__)

RESOLV_CONF_POLL_S = 30.0  # besides its file events, in case a watch missed a change


class SystemUpstreams:
    """Reads resolv.conf again when it changes, and swaps the pool's upstreams when what it
    names changed. `files` empty means upstreams are configured: nothing is followed. The
    event loop owns `_changed`; other threads reach it through `changed`."""

    def __init__(
        self,
        pool: UpstreamPool,
        data_dir: Path,
        listen: tuple[ListenAddress, ...],
        files: tuple[Path, ...],
        told: Callable[[], None],
    ) -> None:
        self.pool = pool
        self.data_dir = data_dir
        self.listen = listen
        self.files = files  # a reload may change them
        self.told = told  # the upstreams changed
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Event | None = None

    def watched(self) -> set[Path]:
        """The files to watch: as named, and where their links lead."""
        return {*self.files, *(path.resolve() for path in self.files)}

    def changed(self) -> None:
        """From any thread: a followed file may have changed."""
        loop, changed = self._loop, self._changed
        if loop is not None and changed is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(changed.set)

    def written(self, writes: FileWrites) -> None:
        """On the loop: the inotify watch on the files themselves said they were written."""
        writes.drain()
        if self._changed is not None:
            self._changed.set()

    async def follow(self, poll_s: float = RESOLV_CONF_POLL_S) -> None:
        self._loop = asyncio.get_running_loop()
        changed = self._changed = asyncio.Event()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), poll_s if self.files else None)
            changed.clear()
            if not self.files:
                continue
            specs, source, from_system = default_upstreams(self.data_dir, self.files, self.listen)
            if specs == self.pool.specs:
                continue
            await self.pool.replace(specs)
            self.told()
            log.info("upstreams now %s (%s)", ", ".join(map(str, specs)), source)
            if from_system:
                remember_upstreams(self.data_dir, specs)
