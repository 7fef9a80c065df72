"""Fetching and copying list files into the lists folder, within limits, with progress."""

from __future__ import annotations

import gzip
import importlib.metadata
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import IO

from aidns.resolver.errors import AidnsError

FETCH_TIMEOUT_S = 30.0
TOTAL_TIMEOUT_FACTOR = 10  # a whole download may take this many idle timeouts
MAX_LIST_BYTES = 256 * 1024 * 1024

Progress = Callable[[str, int, int | None], None]
"""Told of a download as it goes: the URL, the bytes so far, and the size when known."""


class FetchError(AidnsError):
    """A list could not be fetched or copied."""


def temporary_file(directory: Path, name: str) -> tuple[IO[bytes], Path]:
    """A hidden file in the lists dir, which the list loader and the reloader skip."""
    handle, path = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=directory)
    os.fchmod(handle, 0o644)  # like every other list file, not mkstemp's 0600
    return os.fdopen(handle, "wb"), Path(path)


def copy_list(source: Path, directory: Path) -> Path:
    out, temporary = temporary_file(directory, source.name)
    try:
        with out, source.open("rb") as handle:
            shutil.copyfileobj(handle, out)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise FetchError(f"cannot read {source}: {exc.strerror or exc}") from None
    return temporary


def user_agent() -> str:
    try:
        return f"aidns/{importlib.metadata.version('aidns')}"
    except importlib.metadata.PackageNotFoundError:
        return "aidns"


def fetch(
    url: str,
    directory: Path,
    etag: str,
    last_modified: str,
    timeout_s: float,
    progress: Progress | None = None,
) -> tuple[Path, str, str] | None:
    """Download into a temporary file: (file, ETag, Last-Modified), or None when the server
    says the copy we have is current. Gives up when the server is silent for `timeout_s`, or
    after TOTAL_TIMEOUT_FACTOR times that in all."""
    request = urllib.request.Request(
        url, headers={"User-Agent": user_agent(), "Accept-Encoding": "gzip"}
    )
    if etag:
        request.add_header("If-None-Match", etag)
    if last_modified:
        request.add_header("If-Modified-Since", last_modified)
    deadline = time.monotonic() + timeout_s * TOTAL_TIMEOUT_FACTOR
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            read: Callable[[int], bytes] = response.read
            if response.headers.get("Content-Encoding", "").lower() == "gzip":
                read = gzip.GzipFile(fileobj=response).read
            out, temporary = temporary_file(directory, "download")
            try:
                with out:
                    total = response.headers.get("Content-Length")
                    size = (
                        int(total) if total and total.isdigit() and read == response.read else None
                    )
                    _download(read, out, url, deadline, timeout_s, progress, size)
            except BaseException:
                temporary.unlink(missing_ok=True)
                raise
            headers = response.headers
            return temporary, headers.get("ETag", ""), headers.get("Last-Modified", "")
    except urllib.error.HTTPError as exc:
        if exc.code == 304:
            return None
        raise FetchError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise FetchError(f"{url}: {exc.reason}") from None
    except TimeoutError:
        raise FetchError(f"{url}: no answer in {timeout_s:g} s") from None
    except (OSError, EOFError) as exc:  # resets, truncated gzip
        raise FetchError(f"{url}: {exc}") from None


def _download(
    read: Callable[[int], bytes],
    out: IO[bytes],
    url: str,
    deadline: float,
    idle_s: float,
    progress: Progress | None,
    total: int | None,
) -> None:
    size = 0
    while block := read(1 << 16):
        size += len(block)
        if progress is not None:
            progress(url, size, total)
        if size > MAX_LIST_BYTES:
            raise FetchError(f"{url}: larger than {MAX_LIST_BYTES >> 20} MB")
        if time.monotonic() > deadline:
            raise FetchError(f"{url}: not downloaded in {idle_s * TOTAL_TIMEOUT_FACTOR:g} s")
        out.write(block)
