"""Rule snapshot files: written atomically by the keeper, mapped by the server.

A snapshot is the buffer matcher.py compiles, in `<data-dir>/rules.snapshot`. The server maps
it, so a reload or a cold start costs no parse and no copy; an old mapping stays valid after
the file is replaced, until the last query using it is done.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path

from aidns.resolver.errors import AidnsError
from aidns.resolver.rules.matcher import DomainMatcher, fingerprint

SNAPSHOT_NAME = "rules.snapshot"


def write_snapshot(path: Path, data: bytes) -> None:
    """Atomically: a sibling temporary file, flushed, then renamed over `path`."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        with open(temporary, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise AidnsError(f"cannot write {path}: {exc.strerror}") from None


def map_snapshot(path: Path) -> DomainMatcher:
    """The snapshot at `path`, mapped; raises AidnsError if it is missing, damaged or foreign."""
    try:
        with open(path, "rb") as handle:
            mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError) as exc:
        raise AidnsError(f"cannot map {path}: {exc}") from None
    matcher = DomainMatcher(compiled=mapped)
    if matcher.meta.get("fingerprint") != fingerprint():
        raise AidnsError(f"{path} was compiled under another hash seed")
    return matcher
