"""What went wrong while serving, counted by kind and logged at most once per kind a minute.

A flood of junk or a broken upstream must not write a line per packet: the first of a kind
is logged at once, later ones as one line with their count when the interval has passed.
The counts since start are in `status` under `faults`. Thread-safe: the UDP threads and the
event loop both report here.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

REPORT_EVERY_S = 60.0  # a kind is logged at most this often


class Faults:
    """Counts by kind; each kind is logged when first seen, then at most every `every_s`."""

    def __init__(
        self, every_s: float = REPORT_EVERY_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.every_s = every_s
        self.clock = clock
        self._counts: Counter[str] = Counter()
        self._reported: dict[str, tuple[float, int]] = {}  # kind -> (when logged, count then)
        self._lock = threading.Lock()

    def note(self, kind: str, message: str, *args: object, level: int = logging.WARNING) -> None:
        """Count one `kind`; log `message % args` unless this kind was logged lately."""
        now = self.clock()
        with self._lock:
            self._counts[kind] += 1
            count = self._counts[kind]
            last = self._reported.get(kind)
            if last is not None and now - last[0] < self.every_s:
                return
            self._reported[kind] = (now, count)
        if last is None:
            log.log(level, message, *args)
        else:
            since = count - last[1]
            log.log(level, message + " (%d times in the last %.0f s)", *args, since, now - last[0])

    def unexpected(self, where: str, exc: BaseException) -> None:
        """A bug met while `where` (a fixed phrase): one line saying where it was raised."""
        frames = traceback.extract_tb(exc.__traceback__)
        at = f"{os.path.basename(frames[-1].filename)}:{frames[-1].lineno}" if frames else "?"
        detail = str(exc).split("\n", 1)[0][:200]
        self.note(
            f"{type(exc).__name__} while {where}",
            "unexpected %s while %s (at %s): %s; the server keeps answering",
            type(exc).__name__,
            where,
            at,
            detail,
            level=logging.ERROR,
        )

    def loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """An event loop exception handler: what asyncio would print as a traceback."""
        exc = context.get("exception")
        if isinstance(exc, BaseException):
            self.unexpected("running the event loop", exc)
        else:
            message = str(context.get("message", "unknown"))[:200]
            self.note(f"event loop: {message}", "event loop: %s", message, level=logging.ERROR)

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def __getitem__(self, kind: str) -> int:
        with self._lock:
            return self._counts[kind]
