"""A download progress bar on a terminal, as Pi-hole's gravity update shows; none when piped."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

from aidns.resolver.rules.fetch import Progress


@contextlib.contextmanager
def download_progress() -> Iterator[Progress | None]:
    """A `Progress` callback drawing one bar a URL on standard error, when it is a terminal."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        TaskID,
        TextColumn,
        TransferSpeedColumn,
    )
    from rich.progress import Progress as Bars

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
    )
    with Bars(*columns, console=Console(stderr=True), transient=True) as bars:
        tasks: dict[str, TaskID] = {}

        def told(url: str, done: int, total: int | None) -> None:
            task = tasks.get(url)
            if task is None:
                task = tasks[url] = bars.add_task(url.rsplit("/", 1)[-1] or url, total=total)
            bars.update(task, completed=done, total=total)

        yield told
