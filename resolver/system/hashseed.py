"""One hash seed per install, so that a rule snapshot compiled by one process holds in another.

Rule snapshots store Python's `hash()` of each name. The server and every compiler child must
therefore share the hash seed, and a restarted server must too, to map the last snapshot. The
seed is random per install (kept in the data dir), never fixed in the code: a seed anyone knows
would let a client pick names that collide in the server's dicts.
"""

from __future__ import annotations

import logging
import os
import secrets
import sys
from pathlib import Path

from aidns.resolver.datafiles import write_atomic
from aidns.resolver.errors import AidnsError

log = logging.getLogger(__name__)

SEED_NAME = "hashseed"
SEED_VARIABLE = "PYTHONHASHSEED"
LARGEST_SEED = 4294967295  # what CPython accepts


def _valid(text: str) -> bool:
    return text.isdigit() and 1 <= int(text) <= LARGEST_SEED


def install_seed(data_dir: Path) -> str:
    """The seed kept in `data_dir`, made on first use; a fresh one if it can't be kept."""
    path = data_dir / SEED_NAME
    try:
        kept = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        kept = ""
    if _valid(kept):
        return kept
    seed = str(1 + secrets.randbelow(LARGEST_SEED))
    try:
        write_atomic(path, seed + "\n")
    except AidnsError as exc:
        log.warning("%s; rule snapshots will not outlive this run", exc)
    return seed


def exec_under_kept_seed(data_dir: Path) -> None:
    """Start this process again under the seed `data_dir` already keeps, unless it runs under
    it or none is kept yet. Cheap: for a process's first lines, before its heavy imports."""
    try:
        kept = (data_dir / SEED_NAME).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return
    if _valid(kept) and os.environ.get(SEED_VARIABLE) != kept:
        _exec_under(kept)


def run_under_seed(data_dir: Path) -> None:
    """Start this process again under the install's seed, unless it already runs under it."""
    seed = install_seed(data_dir)
    if os.environ.get(SEED_VARIABLE) != seed:
        _exec_under(seed)


def _exec_under(seed: str) -> None:
    os.environ[SEED_VARIABLE] = seed
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
