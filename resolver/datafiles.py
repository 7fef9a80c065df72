"""Files in the data dir that commands write and the server reads: atomic, locked, checked."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aidns.resolver.errors import AidnsError, ConfigError

LOCK_NAME = ".lock"
PAUSE_NAME = "pause"
STATUS_NAME = "status.json"


@contextlib.contextmanager
def locked(data_dir: Path, timeout_s: float = 5.0) -> Iterator[None]:
    """One command at a time changes the data dir."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with open(data_dir / LOCK_NAME, "a+") as handle:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise AidnsError(
                        f"{data_dir / LOCK_NAME} is held by another aidns command; try again"
                    ) from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def write_atomic(path: Path, text: str) -> None:
    """Write a sibling temporary file, flush it to disk, then rename it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    try:
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as exc:
        raise AidnsError(f"cannot write {path}: {exc.strerror}") from None
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise AidnsError(f"cannot write {path}: {exc.strerror}; it is unchanged") from None


def read_pause(data_dir: Path) -> float | None:
    """Until when blocking is paused (Unix seconds, inf for until resumed), or None."""
    try:
        text = (data_dir / PAUSE_NAME).read_text().strip()
    except OSError:
        return None
    try:
        until = float(text) if text else float("inf")
    except ValueError:
        return float("inf")
    return until if until > time.time() else None


def write_status(data_dir: Path, status: dict[str, Any]) -> None:
    with contextlib.suppress(AidnsError):
        write_atomic(data_dir / STATUS_NAME, json.dumps(status, indent=1))


def read_status(data_dir: Path) -> dict[str, Any] | None:
    try:
        status = json.loads((data_dir / STATUS_NAME).read_text())
    except (OSError, ValueError):
        return None
    return status if isinstance(status, dict) else None


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_limited(path: Path, limit_bytes: int, what: str) -> bytes:
    """The file's bytes; ConfigError naming the file and the limit when it holds more.
    OSError passes through for the caller to word."""
    with path.open("rb") as handle:
        data = handle.read(limit_bytes + 1)
    if len(data) > limit_bytes:
        raise ConfigError(
            f"over {limit_bytes:,} bytes, the most {what} may hold; not read", source=str(path)
        )
    return data
