"""Gives the heap back to the system after a big load is freed."""

from __future__ import annotations

import ctypes
import functools
import sys
from collections.abc import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        trim: Callable[[int], int] = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    return trim


def release_memory() -> None:
    """Give the heap a big load freed back to the system: glibc keeps it otherwise, and a
    million-name list would leave about 20 MB of it behind."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
